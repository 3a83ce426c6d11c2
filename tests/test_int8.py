"""INT8 export (issue 16): QDQ graphs from onnxruntime's static quantisation, calibrated on good
frames, run by real onnxruntime sessions; verify and bench; the TensorRT INT8 build against
the fake TensorRT of ``tests/fake_gpu.py`` (the real one: deploy/TENSORRT_CHECK.md step 7).

One random-weight resnet18 TRD at 64 px (``conftest_export.make_run``) is exported once with
``--int8`` calibrated on the tiny synthetic data set's training split (8 good frames).
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest_export import make_run, prepared_split
from fake_gpu import FakeCudaRuntime, TrtKnobs, install_cuda, install_tensorrt, int8_engine_info
from onnx import TensorProto, numpy_helper

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import MODEL_INT8, MODEL_INT8_TRT, BundleError, load_bundle, model_inputs
from edge.commands.bench import run_bench
from edge.processing.scoring import ScoreStats, image_scores, score_maps
from export.int8 import (
    Int8Error,
    calibration_set,
    graph_parts,
    int8_graph_report,
)
from export.onnx_export import ExportError, run_export
from export.verify import compare, folder_frames, verify


def _export_args(run_dir: Path, out: Path, **kw) -> types.SimpleNamespace:
    base = dict(run=str(run_dir), out=str(out), fp16=False, int8=True,
                calibration_frames=None, frames=8, calibration_method="minmax")
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.fixture(scope="module")
def run_dir(tiny_dataset: Path, module_tmp: Path) -> Path:
    return make_run(module_tmp / "run", tiny_dataset)


@pytest.fixture(scope="module")
def exported(run_dir: Path, tiny_dataset: Path, module_tmp: Path) -> Path:
    out = module_tmp / "bundle"
    args = _export_args(run_dir, out, calibration_frames=str(tiny_dataset))
    assert run_export(args) == 0
    return out


def _nodes(path: Path) -> list:
    return list(onnx.load(str(path)).graph.node)


def _inits(path: Path) -> dict:
    return {i.name: i for i in onnx.load(str(path)).graph.initializer}


# --------------------------------------------------------------------------- the graphs


def test_int8_graph_is_qdq_with_per_channel_int8_weights(exported: Path) -> None:
    path = exported / "model.int8.onnx"
    nodes, inits = _nodes(path), _inits(path)
    ops = {n.op_type for n in nodes}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    producer = {o: n for n in nodes for o in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert convs
    for conv in convs:  # every convolution reads INT8 weights with one scale per output channel
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weight = inits[dq.input[0]]
        assert weight.data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (weight.dims[0],)
        # reduce_range: 7-bit weights (x86 without VNNI saturates 8-bit u8 x s8 pairs)
        assert np.abs(numpy_helper.to_array(weight)).max() <= 64
    rep = int8_graph_report(path)
    assert rep.problems(symmetric=False) == []
    assert rep.io == {"rgb": "UINT8", "x3d": "FLOAT", "map_rgb": "FLOAT", "map_3d": "FLOAT"}


def test_normalisation_and_head_stay_fp32(exported: Path) -> None:
    bundle = load_bundle(exported)
    excluded = bundle.manifest.quantization.excluded_nodes
    for path in (exported / "model.int8.onnx", exported / "model.int8.trt.onnx"):
        model = onnx.load(str(path))
        parts = graph_parts(model)
        nodes = list(model.graph.node)
        producer = {o: n for n in nodes for o in n.output}
        # the head's tensors are never quantised, the normalisation reads no dequantised
        # tensor (only its result, the first convolution's input, is quantised) ...
        quantised_from = {
            parts.get(producer[n.input[0]].name)
            for n in nodes
            if n.op_type == "QuantizeLinear" and n.input[0] in producer
        }
        assert "body" in quantised_from and "head" not in quantised_from
        for n in nodes:
            if parts[n.name] == "input" and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                assert all(
                    producer[i].op_type != "DequantizeLinear" for i in n.input if i in producer
                ), n.name
        # ... and the head still has its FP32 cosine ops, which the manifest lists as excluded
        head_ops = {n.op_type for n in nodes if parts[n.name] == "head"}
        assert {"ReduceSum", "Sqrt", "Div", "Resize"} <= head_ops
        qdq = ("QuantizeLinear", "DequantizeLinear")  # a body convolution's output pair
        head_names = {n.name for n in nodes if parts[n.name] == "head" and n.op_type not in qdq}
        assert head_names <= set(excluded["score head"])
        assert {n.op_type for n in nodes if n.name in excluded["input normalisation"]} >= {
            "Cast", "Sub", "Div"
        }


def test_tensorrt_graph_is_symmetric_int8(exported: Path) -> None:
    path = exported / "model.int8.trt.onnx"
    nodes, inits = _nodes(path), _inits(path)
    rep = int8_graph_report(path)
    assert rep.problems(symmetric=True) == []
    assert rep.nonzero_zero_points == 0 and rep.float_weights == 0
    for n in nodes:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zp = inits.get(n.input[2])
            if zp is not None:  # TensorRT takes INT8 Q/DQ only (UINT8: DLA; INT32: read as INT8)
                assert zp.data_type == TensorProto.INT8, n.name
    # transposed convolutions are INT8 here (TensorRT has INT8 deconvolution kernels)
    producer = {o: n for n in nodes for o in n.output}
    deconvs = [n for n in nodes if n.op_type == "ConvTranspose"]
    assert deconvs and all(producer[d.input[1]].op_type == "DequantizeLinear" for d in deconvs)


def test_manifest_records_the_calibration(exported: Path, tiny_dataset: Path) -> None:
    bundle = load_bundle(exported)  # hashes of both INT8 files verified
    m = bundle.manifest
    assert m.files[MODEL_INT8].path == "model.int8.onnx"
    assert m.files[MODEL_INT8_TRT].path == "model.int8.trt.onnx"
    q = m.quantization
    assert q.calibration_source == f"folder:{tiny_dataset / 'puck' / 'train'}"
    assert q.calibration_frames == 8 and q.calibration_method == "minmax"
    assert q.tool.startswith("onnxruntime.quantization.quantize_static")
    assert set(q.graphs) == {MODEL_INT8, MODEL_INT8_TRT}
    assert q.graphs[MODEL_INT8].activations.startswith("uint8")
    assert q.graphs[MODEL_INT8_TRT].activations.startswith("int8, symmetric")
    assert "per output channel" in q.graphs[MODEL_INT8].weights
    assert q.excluded_nodes["input normalisation"] and q.excluded_nodes["score head"]
    cpu = q.graphs[MODEL_INT8]
    assert cpu.int8_convolutions > 0 and cpu.fp32_convolutions > 0  # ConvTranspose stays FP32
    raw = json.loads((exported / "manifest.json").read_text())
    assert raw["quantization"]["calibration_frames"] == 8


# --------------------------------------------------------------------------- running it


def test_onnxruntime_int8_maps_follow_fp32(exported: Path, tiny_dataset: Path) -> None:
    bundle = load_bundle(exported)
    samples, _ = prepared_split(tiny_dataset, "test")
    fp32 = OnnxRuntimeBackend(bundle, precision="fp32")
    int8 = OnnxRuntimeBackend(bundle, precision="int8")
    assert int8.model_path.name == "model.int8.onnx"
    a = np.stack([np.stack(fp32.infer(*model_inputs(bundle.manifest.io, s))) for s in samples])
    b = np.stack([np.stack(int8.infer(*model_inputs(bundle.manifest.io, s))) for s in samples])
    assert np.all(np.isfinite(b)) and b.shape == a.shape
    diff = np.abs(a - b)
    assert diff.max() > 0  # really a different (quantised) computation
    assert diff.max() < 0.25  # maps are sums of three 1 - cos levels, range [0, 6]
    for m in range(2):  # the per-pixel structure survives quantisation
        r = np.corrcoef(a[:, m].ravel(), b[:, m].ravel())[0, 1]
        assert r > 0.9, f"modality {m}: correlation {r:.3f}"


def test_verify_reports_int8_against_fp32(exported: Path, tiny_dataset: Path) -> None:
    bundle = load_bundle(exported)
    frames = folder_frames(bundle, tiny_dataset, 10)
    rep = verify(bundle, backends=["onnxruntime-int8"], frames=frames)
    [pair] = [p for p in rep.pairs if p.b == "onnxruntime-int8"]
    assert pair.a == "onnxruntime-fp32" and pair.n_frames == len(frames)
    assert pair.flipped == pair.a_only + pair.b_only
    assert pair.missed_defects is not None and pair.good_flips is not None
    assert 0 < pair.max_abs_map <= pair.tol_map


def test_compare_counts_flips_by_direction() -> None:
    rng = np.random.default_rng(0)
    maps_a = rng.random((6, 2, 8, 8)).astype(np.float32)
    maps_b = maps_a.copy()
    labels = [0, 0, 0, 1, 1, 1]
    stats = ScoreStats(rgb_mean=0.5, rgb_std=0.3, x3d_mean=0.5, x3d_std=0.3, n_maps=6)
    plain = image_scores(score_maps(maps_a[:, 0], maps_a[:, 1], stats).fused).max()
    maps_a[3:] += 3.0  # a flags the three defective frames
    maps_b[4:] += 3.0  # b passes defective frame 3 ...
    maps_b[0] += 3.0  # ... and flags good frame 0
    raised = image_scores(score_maps(maps_a[3:, 0], maps_a[3:, 1], stats).fused).min()
    assert raised > plain
    threshold = float(plain + raised) / 2
    res = compare("onnxruntime-fp32", "onnxruntime-int8", maps_a, maps_b, stats, threshold, labels)
    assert (res.a_only, res.b_only, res.flipped) == (1, 1, 2)
    assert res.missed_defects == 1 and res.good_flips == 1
    assert not res.agree


def test_bench_compares_fp32_and_int8_in_one_run(exported: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = types.SimpleNamespace(
        bundle=str(exported), backend=["onnxruntime-fp32", "onnxruntime-int8"],
        camera="synthetic?size=64", frames=2, warmup=1, json_out=str(out), compare=None,
        peak_tflops=None, publish="outbox",
    )
    assert run_bench(args) == 0
    doc = json.loads(out.read_text())
    assert set(doc["backends"]) == {"onnxruntime-fp32", "onnxruntime-int8"}
    assert doc["backends"]["onnxruntime-int8"]["backend"]["model_file"] == "model.int8.onnx"
    [cmp] = doc["comparison"]
    assert cmp["baseline"] == "onnxruntime-fp32" and cmp["model_only_p50_ratio"] > 0
    assert "ratio onnxruntime-int8 / onnxruntime-fp32" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad input


def test_bad_calibration_sources_are_named(exported: Path, run_dir: Path, tmp_path: Path,
                                           tiny_dataset: Path) -> None:
    bundle = load_bundle(exported)
    with pytest.raises(Int8Error, match=r"no-such-folder.*cannot read good frames.*training set"):
        calibration_set(bundle, str(tmp_path / "no-such-folder"), 4)
    defective_only = tiny_dataset / "puck" / "test" / "color"
    with pytest.raises(Int8Error, match=r"no good frame.*2 defective skipped"):
        calibration_set(bundle, str(defective_only), 4)
    with pytest.raises(ExportError, match="--int8 needs --calibration-frames"):
        run_export(_export_args(run_dir, tmp_path / "b1"))
    with pytest.raises(ExportError, match="no good frame"):
        run_export(_export_args(run_dir, tmp_path / "b2", calibration_frames=str(defective_only)))
    with pytest.raises(ExportError, match="--calibration-frames is for --int8"):
        run_export(_export_args(run_dir, tmp_path / "b3", int8=False,
                                calibration_frames=str(tiny_dataset)))


def test_missing_int8_graph_says_how_to_make_it(tmp_path: Path, exported: Path) -> None:
    copy = shutil.copytree(exported, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    del m["files"][MODEL_INT8]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"no 'model_int8' file.*export --int8 --calibration"):
        OnnxRuntimeBackend(load_bundle(copy), precision="int8")


# --------------------------------------------------------------------------- TensorRT (fake)


@pytest.fixture
def trt_bundle(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rt = FakeCudaRuntime()
    install_cuda(monkeypatch, rt)
    knobs = TrtKnobs()
    bundle = load_bundle(shutil.copytree(exported, tmp_path / "b"))
    install_tensorrt(monkeypatch, rt, knobs, bundle.image_size)
    return bundle, knobs


def test_tensorrt_int8_builds_strongly_typed_from_the_qdq_graph(trt_bundle) -> None:
    import edge.backends.tensorrt_build as tb

    bundle, knobs = trt_bundle
    knobs.engine_info = int8_engine_info()
    res = tb.build_engine(bundle, precision="int8")
    assert Path(knobs.parsed[-1]).name == "model.int8.trt.onnx"
    # 1 << STRONGLY_TYPED (the fake's TensorRT 10 value): the Q/DQ pairs set the precisions
    assert knobs.network_flags == [2]
    assert res.key.endswith("-int8") and res.report.conv_by_precision == {"int8": 1}
    entry = load_bundle(bundle.path).manifest.engines[res.key]
    assert entry.precision == "int8" and entry.layer_precisions == {"int8": 1}


def test_tensorrt_backend_runs_the_int8_engine(trt_bundle) -> None:
    from edge.backends.tensorrt_backend import TensorRTBackend

    bundle, knobs = trt_bundle
    knobs.engine_info = int8_engine_info()
    knobs.io = {t.name: (tuple(t.shape), np.dtype(t.dtype))
                for t in [*bundle.manifest.io.inputs, *bundle.manifest.io.outputs]}
    be = TensorRTBackend(bundle, precision="int8", build=True, warmup=1)
    assert be.describe()["precision"] == "int8" and be.key.endswith("-int8")
    assert Path(knobs.parsed[-1]).name == "model.int8.trt.onnx"
    rgb, x3d = (np.zeros(t.shape, np.dtype(t.dtype)) for t in bundle.manifest.io.inputs)
    m_rgb, m_3d = be.infer(rgb, x3d)
    assert m_rgb.shape == (bundle.image_size, bundle.image_size)
    be.close()


def test_tensorrt_int8_engine_with_fp16_convolutions_is_refused(trt_bundle) -> None:
    import edge.backends.tensorrt_build as tb

    bundle, knobs = trt_bundle  # the default fake engine runs its convolution in FP16
    with pytest.raises(tb.EngineRefused, match="INT8 engine but no convolution runs in INT8"):
        tb.build_engine(bundle, precision="int8")
    assert not list((bundle.path / "engines").glob("*.plan"))


def test_onnx_precisions_of_a_qdq_graph_are_int8(exported: Path) -> None:
    from edge.backends.tensorrt_build import onnx_node_precisions

    nodes = onnx_node_precisions(exported / "model.int8.trt.onnx")
    convs = {p for op, p in nodes.values() if op in ("Conv", "ConvTranspose")}
    assert convs == {"int8"}
    head = {p for op, p in nodes.values() if op in ("ReduceSum", "Sqrt")}
    assert head == {"fp32"}


# --------------------------------------------------------------------------- the station


def test_station_runs_int8_when_asked(exported: Path, tiny_dataset: Path, tmp_path: Path,
                                      capsys) -> None:
    from edge.cli import main

    def run(bundle: Path) -> int:
        return main(["run", "--bundle", str(bundle), "--camera",
                     f"folder:{tiny_dataset / 'puck' / 'test'}", "--mqtt", "none", "--station",
                     "st1", "--outbox", str(tmp_path / "o.sqlite3"), "--backend", "onnxruntime",
                     "--precision", "int8", "--max-frames", "2", "--quiet"])

    assert run(exported) == 0
    assert "2 verdicts" in capsys.readouterr().out
    # the precision reaches the backend: a bundle without the INT8 graph is refused, with the fix
    copy = shutil.copytree(exported, tmp_path / "b")
    m = json.loads((copy / "manifest.json").read_text())
    del m["files"][MODEL_INT8]
    (copy / "manifest.json").write_text(json.dumps(m))
    assert run(copy) == 2
    assert "export --int8 --calibration-frames" in capsys.readouterr().err


def test_calibration_frames_from_a_recording(exported: Path, tmp_path: Path) -> None:
    from rs_fixtures import make_recording

    rec = make_recording(tmp_path / "good.db3", n=5, size=64, defects=("good",))
    bundle = load_bundle(exported)
    calib = calibration_set(bundle, f"file:{rec.path}", 4)
    assert calib.source == f"file:{rec.path}" and len(calib.feeds) == 4
    rgb_spec, x3d_spec = bundle.manifest.io.inputs
    for feed in calib.feeds:  # exactly what the station feeds the graph
        assert feed["rgb"].shape == tuple(rgb_spec.shape) and feed["rgb"].dtype == np.uint8
        assert feed["x3d"].shape == tuple(x3d_spec.shape) and feed["x3d"].dtype == np.float32
