"""TensorRTBackend at run time, the ``auto`` fallback and the doctor's GPU checks.

The GPU stack is the fake runtime of ``tests/fake_gpu.py`` (fake ``cuda.bindings.runtime`` and
``tensorrt`` with the real call signatures, error tuples and stream semantics); see its
docstring for what it mirrors and why. The real stack is checked on hardware with
``deploy/TENSORRT_CHECK.md``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest_export import write_toy_bundle
from fake_gpu import (
    FakeCudaRuntime,
    TrtKnobs,
    cudaError_t,
    install_cuda,
    install_tensorrt,
)

import edge.backends.tensorrt_build as tb
from edge.backends import BackendError, create_backend
from edge.backends.tensorrt_backend import TensorRTBackend
from edge.bundle import default_io, load_bundle
from edge.commands import doctor

SIZE = 16
NOTHING_LEFT = {"device": 0, "pinned": 0, "streams": 0, "events": 0}


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> FakeCudaRuntime:
    runtime = FakeCudaRuntime()
    install_cuda(monkeypatch, runtime)
    return runtime


@pytest.fixture
def knobs() -> TrtKnobs:
    return TrtKnobs()


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rt: FakeCudaRuntime, knobs: TrtKnobs):
    install_tensorrt(monkeypatch, rt, knobs, SIZE)
    return load_bundle(write_toy_bundle(tmp_path / "b", size=SIZE))


def frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    x3d = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    return rgb, x3d


def expected(rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (rgb**2).mean(axis=1)[0], np.abs(x3d).mean(axis=1)[0]


def auto_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("edge.backends")]


# --------------------------------------------------------------------------- run time


def test_frames_flow_through_device_buffers_and_everything_is_released(bundle, rt, knobs):
    be = TensorRTBackend(bundle, build=True, warmup=1)
    for seed in (1, 2):  # pinned buffers are reused: each frame must give its own maps
        rgb, x3d = frames(seed)
        m_rgb, m_3d = be.infer(rgb, x3d)
        e_rgb, e_3d = expected(rgb, x3d)
        np.testing.assert_allclose(m_rgb, e_rgb, rtol=1e-6)
        np.testing.assert_allclose(m_3d, e_3d, rtol=1e-6)
    # events around the copies and the launch: 2 copies of 0.05 each side, 1.0 compute
    t = be.last_timing
    assert (t.h2d_ms, t.compute_ms, t.d2h_ms) == pytest.approx((0.1, 1.0, 0.1))
    assert be.describe()["device_memory_bytes"] == 1 << 20
    assert rt.live() == {"device": 4, "pinned": 4, "streams": 1, "events": 4}
    be.close()
    be.close()  # idempotent
    assert rt.live() == NOTHING_LEFT


def test_schema_1_1_contract_uint8_rgb(bundle, knobs, rt):
    """Since bundle schema 1.1 the graph takes uint8 (1,S,S,3) RGB and normalises inside."""
    bundle.manifest.io = default_io(SIZE)
    bundle.save_manifest()
    raw = {n: (tuple(t.shape), np.dtype(t.dtype)) for t in
           [*bundle.manifest.io.inputs, *bundle.manifest.io.outputs] for n in [t.name]}  # fmt: skip
    assert raw["rgb"] == ((1, SIZE, SIZE, 3), np.uint8)
    knobs.io = raw
    be = TensorRTBackend(bundle, build=True, warmup=1)
    assert be.buffers["rgb"].host.dtype == np.uint8 and be.buffers["rgb"].nbytes == 3 * SIZE**2
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    x3d = rng.random((1, 3, SIZE, SIZE), dtype=np.float32)
    m_rgb, m_3d = be.infer(rgb, x3d)
    chw = rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.testing.assert_allclose(m_rgb, (chw**2).mean(axis=1)[0], rtol=1e-6)
    np.testing.assert_allclose(m_3d, x3d.mean(axis=1)[0], rtol=1e-6)
    be.close()
    # an engine built for the other contract (float32 RGB) is refused, with the fix
    knobs.io = raw | {"rgb": ((1, 3, SIZE, SIZE), np.float32)}
    with pytest.raises(BackendError, match=r"'rgb' is float32.*contract says uint8.*--force"):
        TensorRTBackend(bundle, warmup=0)
    assert rt.live() == NOTHING_LEFT


def test_dynamic_shapes_are_fixed_to_the_bundle_frame(bundle, knobs):
    knobs.dynamic = True
    be = TensorRTBackend(bundle, build=True, warmup=0)
    assert be.buffers["rgb"].shape == (1, 3, SIZE, SIZE)
    assert be.buffers["map_3d"].shape == (1, 1, SIZE, SIZE)
    rgb, x3d = frames()
    np.testing.assert_allclose(be.infer(rgb, x3d)[1], expected(rgb, x3d)[1], rtol=1e-6)
    be.close()


@pytest.mark.parametrize("with_utils", [True, False], ids=["cuda-python>=12.9.1", "12.6"])
def test_stream_handle_without_deprecated_int(monkeypatch, bundle, rt, with_utils):
    """``int(stream)`` is deprecated since cuda-bindings 12.9.1/13.0: use the native handle."""
    install_cuda(monkeypatch, rt, with_utils=with_utils)
    be = TensorRTBackend(bundle, build=True, warmup=1)
    rgb, x3d = frames()
    np.testing.assert_allclose(be.infer(rgb, x3d)[0], expected(rgb, x3d)[0], rtol=1e-6)
    # with get_cuda_native_handle available, no handle is ever converted with int()
    assert (rt.int_calls == 0) is with_utils
    be.close()


def test_execution_context_none_is_a_clear_error_and_frees_everything(bundle, rt, knobs):
    knobs.context_none = True
    with pytest.raises(BackendError, match="execution context"):
        TensorRTBackend(bundle, build=True)
    assert rt.live() == NOTHING_LEFT


def test_cuda_malloc_failure_names_the_error_and_frees_everything(bundle, rt):
    rt.fail["cudaMalloc"] = cudaError_t.cudaErrorMemoryAllocation
    rt.fail_after["cudaMalloc"] = 2  # the third device buffer (map_rgb) fails
    with pytest.raises(BackendError, match=r"cudaMalloc.*cudaErrorMemoryAllocation \(2\)"):
        TensorRTBackend(bundle, build=True)
    assert rt.live() == NOTHING_LEFT


def test_execute_async_v3_false_raises(bundle, rt, knobs):
    be = TensorRTBackend(bundle, build=True, warmup=0)
    knobs.execute_returns = False
    with pytest.raises(BackendError, match="execute_async_v3"):
        be.infer(*frames())
    assert all(not queue for queue in rt.streams.values())  # no copy left in flight
    knobs.execute_returns = True  # the next frame works again
    rgb, x3d = frames(3)
    np.testing.assert_allclose(be.infer(rgb, x3d)[0], expected(rgb, x3d)[0], rtol=1e-6)
    be.close()
    assert rt.live() == NOTHING_LEFT


def test_build_on_device_n_sets_device_n(bundle, rt, knobs):
    rt.devices = ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A2000"]
    res = tb.build_engine(bundle, device=1)
    assert knobs.build_devices == [1], "TensorRT built on the current device, not device 1"
    assert res.key.startswith("nvidia-rtx-a2000-")
    assert rt.current == 0  # the caller's current device is restored
    be = TensorRTBackend(bundle, device=1, warmup=1)  # runs device-1 memory on device 1
    assert knobs.executed_on == [1]
    be.close()


def test_tensorrt_8_is_refused_before_building(bundle, knobs, monkeypatch, rt):
    knobs.version = "8.6.2"
    install_tensorrt(monkeypatch, rt, knobs, SIZE)
    with pytest.raises(BackendError, match=r"TensorRT 8\.6\.2.*TensorRT >= 10.*JetPack 6\.1"):
        tb.build_engine(bundle)
    assert knobs.network_flags == []  # never a network with flags 0 (implicit batch on 8.x)


# --------------------------------------------------------------------------- auto fallback


def test_auto_uses_tensorrt_when_it_works(bundle, caplog):
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        be = create_backend("auto", bundle)
    assert be.name == "tensorrt" and auto_lines(caplog) == []
    be.close()


@pytest.mark.parametrize(
    ("setup", "reason", "fix"),
    [
        (
            {"bindings_version": "13.0.1", "driver_cuda": 12060},
            "cuda-python 13.0.1 needs an NVIDIA driver >= 580",
            "pip install 'cuda-python>=12.6,<13'",
        ),
        ({"driver_cuda": 0}, "no NVIDIA driver", "--runtime nvidia"),
        ({"devices": []}, "no CUDA device", "--gpus all"),
    ],
    ids=["cuda-python-13-on-jetpack-6", "no-driver", "no-device"],
)
def test_auto_fallback_logs_one_line_with_reason_and_fix(bundle, rt, caplog, setup, reason, fix):
    for key, value in setup.items():
        setattr(rt, key, value)
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        be = create_backend("auto", bundle)
    assert be.name == "onnxruntime"
    lines = auto_lines(caplog)
    assert len(lines) == 1, lines
    assert reason in lines[0] and fix in lines[0] and "\n" not in lines[0]


def test_auto_fallback_without_tensorrt_or_with_tensorrt_8(bundle, caplog, monkeypatch, rt):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        assert create_backend("auto", bundle).name == "onnxruntime"
    install_tensorrt(monkeypatch, rt, TrtKnobs(version="8.6.2"), SIZE)
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        assert create_backend("auto", bundle).name == "onnxruntime"
    lines = auto_lines(caplog)
    assert len(lines) == 2, lines
    assert "TensorRT is not installed" in lines[0] and "python3-libnvinfer" in lines[0]
    assert "TensorRT 8.6.2" in lines[1] and "JetPack 6.1" in lines[1]


def test_auto_fallback_when_the_engine_build_fails(bundle, caplog, knobs):
    knobs.context_none = True
    with caplog.at_level(logging.INFO, logger="edge.backends"):
        assert create_backend("auto", bundle).name == "onnxruntime"
    lines = auto_lines(caplog)
    assert len(lines) == 1 and "execution context" in lines[0]


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_the_driver_mismatch_auto_falls_back_on(bundle, rt):
    rt.bindings_version, rt.driver_cuda = "13.0.1", 12060
    checks = {c.name: c for c in doctor.check_gpu(doctor.gpu_state(), "auto")}
    cuda = checks["cuda-python"]
    assert cuda.status == "warn" and "cuda-python 13.0.1" in cuda.detail
    assert "580" in cuda.detail and "CUDA 12.6" in cuda.detail
    assert "pip install 'cuda-python>=12.6,<13'" in cuda.fix
    backend = checks["gpu backend"]
    assert backend.status == "warn" and "onnxruntime" in backend.detail
    assert "cudaErrorInsufficientDriver" in backend.detail
    # with --backend tensorrt the same finding is a failure
    strict = {c.name: c for c in doctor.check_gpu(doctor.gpu_state(), "tensorrt")}
    assert strict["cuda-python"].status == strict["gpu backend"].status == "fail"


def test_doctor_healthy_gpu_stack(bundle):
    checks = {c.name: c for c in doctor.check_gpu(doctor.gpu_state(), "auto")}
    assert checks["gpu"].status == "ok" and "NVIDIA Jetson AGX Orin (sm87)" in checks["gpu"].detail
    assert (
        checks["cuda-python"].status == "ok"
        and "driver supports CUDA 12.6" in checks["cuda-python"].detail
    )
    assert checks["gpu backend"].status == "ok" and "TensorRT" in checks["gpu backend"].detail
