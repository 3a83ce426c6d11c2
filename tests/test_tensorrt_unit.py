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
from edge.bundle import MODEL_FP32, EngineEntry, load_bundle


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
    assert tb.engine_key("A", "87", "10.3", "int8").endswith("-int8")  # explicit quantisation
    with pytest.raises(ValueError, match="precision"):
        tb.engine_key("A", "87", "10.3", "int4")


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


# --------------------------------------------------------------------------- Myelin layers
#
# With a strongly typed network TensorRT may fuse the whole body into one Myelin layer. Its
# inspector record (ProfilingVerbosity.DETAILED, TensorRT 10) names the fused ONNX nodes in
# "Metadata" ("[ONNX Layer: <node>]" joined by \x1f, cut in the middle when long) and shows only
# the boundary tensors: here the FP32 engine I/O, whatever runs inside.


def conv_onnx(path: Path, half: bool) -> Path:
    """rgb (FP32) -> [Cast FP16] -> Conv -> Relu -> [Cast FP32] -> feat, as the export does."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dt = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    w = numpy_helper.from_array(
        np.ones((4, 3, 3, 3), np.float16 if half else np.float32), "/teacher/conv1/weight"
    )
    x = "rgb_h" if half else "rgb"
    nodes = [
        helper.make_node("Conv", [x, w.name], ["c"], name="/teacher/conv1/Conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="/teacher/relu/Relu"),
    ]
    if half:
        nodes.insert(0, helper.make_node("Cast", ["rgb"], ["rgb_h"], name="/cast_in", to=dt))
        nodes.append(helper.make_node("Cast", ["r"], ["feat"], name="/cast_out", to=1))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["feat"], name="/cast_out"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


MYELIN_NODES = ["/cast_in", "/teacher/conv1/Conv", "/teacher/relu/Relu", "/cast_out"]


def myelin_engine_json(metadata: str) -> dict:
    """One fused Myelin layer as TensorRT 10's engine inspector writes it."""
    return {
        "Layers": [
            {
                "Name": "{ForeignNode[/cast_in.../cast_out]}",
                "LayerType": "Myelin",
                "Inputs": [{"Name": "rgb", "Location": "Device", "Dimensions": [1, 3, 8, 8],
                            "Format/Datatype": "Row major linear FP32"}],
                "Outputs": [{"Name": "feat", "Location": "Device", "Dimensions": [1, 4, 8, 8],
                             "Format/Datatype": "Row major linear FP32"}],
                "TacticValue": "0x0000000000000000",
                "StreamId": 0,
                "Metadata": metadata,
            }
        ],
        "Bindings": ["rgb", "feat"],
    }  # fmt: skip


FULL_METADATA = "\x1f".join(f"[ONNX Layer: {n}]" for n in MYELIN_NODES)


def test_onnx_node_precisions(tmp_path: Path) -> None:
    half = tb.onnx_node_precisions(conv_onnx(tmp_path / "h.onnx", half=True))
    assert half["/teacher/conv1/Conv"] == ("Conv", "fp16")
    assert half["/cast_in"] == ("Cast", "fp32") and half["/teacher/relu/Relu"] == ("Relu", "fp16")
    full = tb.onnx_node_precisions(conv_onnx(tmp_path / "f.onnx", half=False))
    assert full["/teacher/conv1/Conv"] == ("Conv", "fp32")
    names, complete = tb.metadata_onnx_layers(FULL_METADATA)
    assert names == MYELIN_NODES and complete
    # onnx-tensorrt may add " | ..." properties after the node name
    assert tb.metadata_onnx_layers("[ONNX Layer: /a/Conv | Local Function: f]") == (
        ["/a/Conv"],
        True,
    )


def test_myelin_engine_of_an_fp16_onnx_is_accepted(tmp_path: Path) -> None:
    info = myelin_engine_json(FULL_METADATA)
    # the inspector alone sees only FP32 I/O: without the ONNX the check cannot accept it
    with pytest.raises(tb.EngineRefused, match="Myelin layers"):
        tb.check_precision(tb.parse_layer_report(info), "fp16")
    nodes = tb.onnx_node_precisions(conv_onnx(tmp_path / "h.onnx", half=True))
    report = tb.parse_layer_report(info, nodes)
    assert dict(report.conv_by_precision) == {"fp16": 1} and report.fp32_convs == []
    assert report.decided_from_onnx and report.as_dict()["opaque_layers"] == [
        "{ForeignNode[/cast_in.../cast_out]}"
    ]
    tb.check_precision(report, "fp16")
    with pytest.raises(tb.EngineRefused, match="FP32 engine"):
        tb.check_precision(report, "fp32")


def test_myelin_engine_of_an_fp32_onnx_is_refused(tmp_path: Path) -> None:
    nodes = tb.onnx_node_precisions(conv_onnx(tmp_path / "f.onnx", half=False))
    metadata = FULL_METADATA.replace("[ONNX Layer: /cast_in]\x1f", "")
    report = tb.parse_layer_report(myelin_engine_json(metadata), nodes)
    with pytest.raises(tb.EngineRefused, match=r"1 of 1 .*'/teacher/conv1/Conv \(inside"):
        tb.check_precision(report, "fp16")
    tb.check_precision(report, "fp32")


def test_myelin_metadata_cut_short_falls_back_to_the_whole_onnx(tmp_path: Path) -> None:
    cut = "[ONNX Layer: /cast_in]\x1f[ONNX La...yer: /cast_out]"  # cut in the middle
    assert tb.metadata_onnx_layers(cut)[1] is False
    half = tb.onnx_node_precisions(conv_onnx(tmp_path / "h.onnx", half=True))
    tb.check_precision(tb.parse_layer_report(myelin_engine_json(cut), half), "fp16")
    full = tb.onnx_node_precisions(conv_onnx(tmp_path / "f.onnx", half=False))
    with pytest.raises(tb.EngineRefused, match="run in FP32"):
        tb.check_precision(tb.parse_layer_report(myelin_engine_json(cut), full), "fp16")
    # no Metadata at all: the same rule
    no_meta = myelin_engine_json("")
    with pytest.raises(tb.EngineRefused, match="run in FP32"):
        tb.check_precision(tb.parse_layer_report(no_meta, full), "fp16")


def test_myelin_kernels_computing_a_conv_count_as_convolutions(tmp_path: Path) -> None:
    """TensorRT 10 may list Myelin's kernels ("gemm", "kgen", short "Half"/"Float" formats)."""
    nodes = tb.onnx_node_precisions(conv_onnx(tmp_path / "h.onnx", half=True))
    kernel = {
        "Name": "/teacher/conv1/Conv_myl0_1",
        "LayerType": "gemm",
        "Inputs": [{"Name": "a", "Dimensions": [1, 3, 8, 8], "Format/Datatype": "Float"}],
        "Outputs": [{"Name": "b", "Dimensions": [1, 4, 8, 8], "Format/Datatype": "Float"}],
        "TacticName": "sm87_xmma_gemm_f32f32",
        "StreamId": 0,
        "Metadata": "[ONNX Layer: /teacher/conv1/Conv]",
    }
    report = tb.parse_layer_report({"Layers": [kernel]}, nodes)
    assert report.fp32_convs == ["/teacher/conv1/Conv_myl0_1"]
    with pytest.raises(tb.EngineRefused, match="run in FP32"):
        tb.check_precision(report, "fp16")


def test_build_keeps_an_fp16_engine_fused_into_one_myelin_layer(monkeypatch, tmp_path, fake_gpu):
    calls: dict = {}
    opaque = myelin_engine_json("[ONNX Layer: /not/in/this/onnx]")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(json.dumps(opaque), calls))
    bundle = load_bundle(write_toy_bundle(tmp_path / "b"))  # its FP16 graph: Mul in half
    res = tb.build_engine(bundle, precision="fp16")
    assert res.report.decided_from_onnx and res.report.opaque_fp16_nodes >= 1
    assert res.path.is_file()
    layers = json.loads(res.path.with_suffix(".layers.json").read_text())
    assert layers["report"]["opaque_layers"] == ["{ForeignNode[/cast_in.../cast_out]}"]
    # the bundle's FP32 graph has no FP16 node: as an "FP16" engine it would be refused
    fp32_nodes = tb.onnx_node_precisions(bundle.file_path(MODEL_FP32))
    with pytest.raises(tb.EngineRefused, match="no FP16 tensor"):
        tb.check_precision(tb.parse_layer_report(opaque, fp32_nodes), "fp16")
