"""Shared test fixtures: one tiny synthetic dataset per session (generated, never committed).

Disk: a trained resnet18 TRD leaves a 545 MB checkpoint and a 190 MB ONNX graph, so the suite
wrote 5-8 GB under pytest's basetemp when every directory was kept; a CI machine with less free
disk failed dozens of tests at fixture setup. Passing tests' ``tmp_path`` is removed at once
(``tmp_path_retention_policy = "failed"`` in pyproject.toml) and module fixtures that hold a
trained run use ``module_tmp``, which removes its directory when the module is done.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory for one test module's shared artefacts, removed when the module is done."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)
