"""TensorRT logic that does not need TensorRT.

TensorRT cannot be installed on the development machines, so here it is either absent (the
import error path) or replaced by a small fake module that mimics the documented TensorRT 10
Python API calls ``build_engine`` makes; the real thing is checked by deploy/check_tensorrt.py.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest_export import write_toy_bundle
from fake_gpu import FakeCudaRuntime, install_cuda

import edge.backends.tensorrt_build as tb
from edge.backends import BackendError, create_backend
from edge.backends.tensorrt_backend import tensorrt_available
from edge.bundle import EngineEntry, load_bundle


def _layer(name: str, kind: str, fmt_in: str, fmt_out: str | None = None, param: str = "") -> dict:
    layer = {
        "Name": name,
        "LayerType": kind,
        "Inputs": [
            {"Name": f"{name}_in", "Dimensions": [1, 64, 16, 16], "Format/Datatype": fmt_in}
        ],
        "Outputs": [
            {
                "Name": f"{name}_out",
                "Dimensions": [1, 64, 16, 16],
                "Format/Datatype": fmt_out or fmt_in,
            }
        ],
        "TacticValue": "0x0",
    }
    if param:
        layer["ParameterType"] = param
    return layer


def engine_json(conv_fmt: str) -> str:
    """Inspector JSON in the documented format: FP32 I/O reformat, convs, an FP32 head."""
    layers = [
        _layer(
            "Reformatting CopyNode for Input Tensor 0",
            "Reformat",
            "Row major linear FP32 format",
            "Channel major FP16 format where channel % 8 == 0",
        ),
        _layer("/teacher/conv1/Conv", "CaskConvolution", conv_fmt, param="Convolution"),
        _layer("/student/ConvTranspose", "CaskDeconvolutionV2", conv_fmt, param="Deconvolution"),
        _layer("/Cast", "Cast", conv_fmt, "Row major linear FP32 format"),
        _layer("/ReduceSum", "Reduce", "Row major linear FP32 format"),
        _layer("/Resize", "Resize", "Row major linear FP32 format"),
    ]
    return json.dumps({"Layers": layers, "Bindings": ["rgb", "x3d", "map_rgb", "map_3d"]})


FP16 = "Channel major FP16 format where channel % 8 == 0"
FP32 = "Row major linear FP32 format"


# --------------------------------------------------------------------------- pure functions


def test_engine_key_names_gpu_cc_version_precision() -> None:
    key = tb.engine_key("NVIDIA GeForce RTX 4090", "8.9", "10.3.0", "fp16")
    assert key == "nvidia-geforce-rtx-4090-sm89-trt10.3.0-fp16"
    assert tb.engine_key("Orin (nvgpu)", "87", "11.0.0.5", "fp32").endswith(
        "-sm87-trt11.0.0.5-fp32"
    )
    assert tb.engine_key("A", "87", "10.3", "fp16") != tb.engine_key("A", "87", "10.4", "fp16")
    with pytest.raises(ValueError, match="compute capability"):
        tb.engine_key("A", "sm_87", "10.3", "fp16")
    with pytest.raises(ValueError, match="precision"):
        tb.engine_key("A", "87", "10.3", "int8")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("Row major linear FP16 format", "fp16"),
        ("Half", "fp16"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Row major linear FP32", "fp32"),
        ("Float", "fp32"),
        ("Thirty-two wide channel vectorized row major Int8 format.", "int8"),
        ("Row major linear BF16 format", "bf16"),
        ("N/A due to dynamic shapes", "other"),
    ],
)
def test_tensor_precision(fmt: str, expected: str) -> None:
    assert tb.tensor_precision(fmt) == expected


def test_layer_report_fp16_engine_passes() -> None:
    rep = tb.parse_layer_report(engine_json(FP16))
    assert rep.n_layers == 6
    assert dict(rep.conv_by_precision) == {"fp16": 2}
    assert rep.by_precision["fp32"] == 2  # the FP32 head (reduce, resize); reformat/cast skipped
    tb.check_precision(rep, "fp16")


def test_fp32_engine_refused_when_fp16_asked() -> None:
    rep = tb.parse_layer_report(engine_json(FP32))
    assert rep.fp32_convs == ["/teacher/conv1/Conv", "/student/ConvTranspose"]
    with pytest.raises(tb.EngineRefused, match="2 of 2 convolution layers run in FP32"):
        tb.check_precision(rep, "fp16")
    tb.check_precision(rep, "fp32")
    with pytest.raises(tb.EngineRefused, match="FP32 engine"):
        tb.check_precision(tb.parse_layer_report(engine_json(FP16)), "fp32")


def test_opaque_engine_needs_fp16_tensors() -> None:
    fused = {"Layers": [_layer("{ForeignNode[...]}", "Myelin", FP32)]}
    with pytest.raises(tb.EngineRefused, match="no FP16 tensor"):
        tb.check_precision(tb.parse_layer_report(fused), "fp16")
    fused16 = {"Layers": [_layer("{ForeignNode[...]}", "Myelin", FP32, FP16)]}
    tb.check_precision(tb.parse_layer_report(fused16), "fp16")


def test_names_only_report_is_refused() -> None:
    with pytest.raises(tb.EngineRefused, match="DETAILED"):
        tb.parse_layer_report(json.dumps({"Layers": ["conv1 + relu", "conv2"]}))
    with pytest.raises(tb.EngineRefused, match="Layers"):
        tb.parse_layer_report("{}")


def test_cuda_check() -> None:
    assert tb.cuda_check((0, 1234), "x") == 1234
    assert tb.cuda_check((0,), "x") is None
    assert tb.cuda_check((0, 1, 2), "x") == (1, 2)
    with pytest.raises(BackendError, match="CUDA error during cudaMalloc"):
        tb.cuda_check((2, None), "cudaMalloc")


# --------------------------------------------------------------------------- TensorRT absent


def test_missing_tensorrt_gives_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        tb.import_tensorrt()
    bundle = load_bundle(write_toy_bundle(tmp_path / "b"))
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        create_backend("tensorrt", bundle)
    assert tensorrt_available() is False
    args = types.SimpleNamespace(bundle=str(tmp_path / "b"), force=False)
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        tb.run_build_engine(args)


def test_refuse_engine_takes_it_out_of_service(tmp_path: Path) -> None:
    bundle = load_bundle(write_toy_bundle(tmp_path / "b"))
    key = tb.engine_key("GPU", "87", "10.3.0", "fp16")
    plan = bundle.engine_path(key)
    plan.parent.mkdir()
    plan.write_bytes(b"plan")
    bundle.manifest.engines[key] = EngineEntry(
        path=f"engines/{key}.plan",
        sha256="0" * 64,
        bytes=4,
        precision="fp16",
        gpu="GPU",
        compute_capability="87",
        trt_version="10.3.0",
    )
    bundle.save_manifest()
    moved = tb.refuse_engine(bundle, key, "flips 2 verdicts")
    assert moved is not None and moved.is_file() and not plan.exists()
    assert "flips 2 verdicts" in moved.with_name(f"{key}.refused.txt").read_text()
    assert key not in load_bundle(tmp_path / "b").manifest.engines


# --------------------------------------------------------------------------- fake TensorRT


def fake_tensorrt(engine_info: str, calls: dict) -> types.ModuleType:
    """The subset of the TensorRT 10 Python API used by build_engine, recording calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, level: int) -> None:
            self.level = level

    class Network:
        pass

    class Parser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls["parsed"] = Path(path).name
            return True

    class Cache:
        def serialize(self) -> bytes:
            return b"timing-cache"

    class Config:
        def __init__(self) -> None:
            self.profiling_verbosity = None

        def create_timing_cache(self, data: bytes) -> Cache:
            calls["cache_in"] = data
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            return True

        def get_timing_cache(self) -> Cache:
            return Cache()

        def set_memory_pool_limit(self, pool, size) -> None:
            calls["workspace"] = size

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            calls["config"] = Config()
            return calls["config"]

        def build_serialized_network(self, network, config) -> bytes:
            calls["builds"] = calls.get("builds", 0) + 1
            return b"serialized-engine"

    class Inspector:
        def get_engine_information(self, fmt) -> str:
            calls["inspect_format"] = fmt
            return engine_info

    class Engine:
        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            return Engine()

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, Parser, Runtime
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    """The fake cuda-python runtime of tests/fake_gpu.py with one Orin GPU."""
    install_cuda(monkeypatch, FakeCudaRuntime(devices=["NVIDIA Jetson Orin"]))


def test_build_engine_strongly_typed_inspected_and_recorded(monkeypatch, tmp_path, fake_gpu):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(engine_json(FP16), calls))
    bundle = load_bundle(write_toy_bundle(tmp_path / "b"))
    res = tb.build_engine(bundle, precision="fp16")
    assert res.key == "nvidia-jetson-orin-sm87-trt10.3.0-fp16" and not res.reused
    assert calls["parsed"] == "model.fp16.onnx"
    assert calls["network_flags"] == 1 << 5  # STRONGLY_TYPED
    assert calls["config"].profiling_verbosity == "DETAILED"
    assert calls["inspect_format"] == "JSON"
    assert res.path.read_bytes() == b"serialized-engine"
    cache = res.path.parent / "timing-nvidia-jetson-orin-sm87-trt10.3.0.cache"
    assert cache.read_bytes() == b"timing-cache"
    entry = load_bundle(tmp_path / "b").manifest.engines[res.key]
    assert entry.precision == "fp16" and entry.layer_precisions == {"fp16": 2}
    # second build: reused (no new build), and the timing cache is read by a forced rebuild
    assert tb.build_engine(bundle).reused and calls["builds"] == 1
    tb.build_engine(bundle, force=True)
    assert calls["builds"] == 2 and calls["cache_in"] == b"timing-cache"


def test_build_engine_refuses_silent_fp32(monkeypatch, tmp_path, fake_gpu, capsys):
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(engine_json(FP32), calls))
    folder = write_toy_bundle(tmp_path / "b")
    with pytest.raises(tb.EngineRefused, match="run in FP32"):
        tb.build_engine(load_bundle(folder), precision="fp16")
    assert not list((folder / "engines").glob("*.plan"))
    assert load_bundle(folder).manifest.engines == {}
    rc = tb.run_build_engine(types.SimpleNamespace(bundle=str(folder), force=True))
    assert rc == 3 and "engine refused" in capsys.readouterr().out
