"""Helpers for the calibration and bench tests (imported explicitly, not a pytest conftest).

`toy_bundle` is the torch-free tiny ONNX bundle of ``conftest_export`` (fast: statistics
tests need hundreds of frames). `resnet18_bundle` is a real TRD graph (resnet18, 64 px, random
weights, no calibration yet), exported once per test session and shared by both test files.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from conftest_export import write_toy_bundle

SIZE = 64


def toy_bundle(folder: Path, size: int = 32) -> Path:
    """A fresh copy of the toy bundle (threshold 3.0, method "test") in ``folder``."""
    return write_toy_bundle(Path(folder), size=size)


@functools.cache
def resnet18_bundle() -> Path:
    """A bare bundle of a random-weight resnet18 TRD at 64² (no statistics, no threshold)."""
    import torch

    from export.onnx_export import export_model_bundle
    from trainer.model import TRD

    root = Path(tempfile.mkdtemp(prefix="trd-r18-bundle-"))
    atexit.register(shutil.rmtree, root, True)
    torch.manual_seed(0)
    return export_model_bundle(TRD("resnet18").eval(), root / "bundle", SIZE, "resnet18")


def copy_bundle(src: Path, dst: Path) -> Path:
    """Copy a bundle folder so a test may calibrate it without touching the shared one."""
    shutil.copytree(src, dst)
    return dst
