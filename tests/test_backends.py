"""onnxruntime backend and the backend factory, on a tiny torch-free ONNX bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest_export import write_toy_bundle

from edge.backends import Backend, BackendError, create_backend
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from edge.bundle import load_bundle

S = 32


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(write_toy_bundle(tmp_path_factory.mktemp("b") / "bundle", size=S))


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((1, 3, S, S)).astype(np.float32) for _ in range(2))


def test_onnxruntime_fp32_computes_the_graph(bundle) -> None:
    be = create_backend("onnxruntime", bundle, intra_op_threads=1)
    assert isinstance(be, Backend) and be.precision == "fp32"
    rgb, x3d = _frame(0)
    m_rgb, m_3d = be.infer(rgb, x3d)
    assert m_rgb.shape == (S, S) and m_rgb.dtype == np.float32
    np.testing.assert_allclose(m_rgb, (rgb[0] ** 2).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_3d, np.abs(x3d[0]).mean(0), rtol=1e-5, atol=1e-6)
    t = be.last_timing
    assert t.total_ms > 0 and t.compute_ms > 0 and t.total_ms >= t.compute_ms
    d = be.describe()
    assert d["providers"] == ["CPUExecutionProvider"] and d["model_file"] == "model.onnx"
    assert d["intra_op_threads"] == 1


def test_onnxruntime_fp16_close_to_fp32(bundle) -> None:
    fp32 = OnnxRuntimeBackend(bundle, precision="fp32")
    fp16 = OnnxRuntimeBackend(bundle, precision="fp16")
    assert fp16.describe()["model_file"] == "model.fp16.onnx"
    rgb, x3d = _frame(1)
    a, b = fp32.infer(rgb[0], x3d[0]), fp16.infer(rgb[0], x3d[0])  # (3,S,S) accepted too
    # half precision: ~3 significant digits
    np.testing.assert_allclose(b[0], a[0], rtol=5e-3, atol=5e-3)


def test_wrong_input_shape_and_dtype(bundle) -> None:
    be = OnnxRuntimeBackend(bundle, warmup=0)
    rgb, x3d = _frame(2)
    with pytest.raises(BackendError, match=r"\(1, 3, 64, 64\).*image_size 32"):
        be.infer(np.zeros((1, 3, 64, 64), np.float32), x3d)
    with pytest.raises(BackendError, match="float32"):
        be.infer(rgb.astype(np.float64), x3d)


def test_auto_falls_back_to_onnxruntime_cpu(bundle) -> None:
    be = create_backend("auto", bundle)
    assert be.name == "onnxruntime"
    assert be.describe()["providers"][-1] == "CPUExecutionProvider"


def test_unknown_backend_and_missing_gpu_provider(bundle) -> None:
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("openvino", bundle)
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        choose_providers("cuda", ["CPUExecutionProvider"])
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert (
        choose_providers(
            "auto", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        )[0]
        == "TensorrtExecutionProvider"
    )
    assert choose_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_fp16_requested_without_fp16_file(tmp_path: Path) -> None:
    b = load_bundle(write_toy_bundle(tmp_path / "b", size=S, fp16=False))
    with pytest.raises(ValueError, match="--fp16"):
        OnnxRuntimeBackend(b, precision="fp16")
    # auto quietly uses the FP32 graph when there is no FP16 one
    assert create_backend("auto", b, precision="fp16").precision == "fp32"
