"""Shared test fixtures: one tiny synthetic dataset per session (generated, never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec 3D-AD-layout tree from the synthetic generator (64 px, one category)."""
    from edge.datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(
        root, categories=("puck",), image_size=64, n_train=8, n_validation=4,
        n_test_good=4, n_test_per_defect=2, seed=0, progress=False,
    )
    return root
