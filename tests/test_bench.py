"""`trd-edge bench`: JSON layout, FLOP counting, comparison mode, torch-free imports."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest_calibration import resnet18_bundle, toy_bundle

from edge.commands.bench import count_onnx_macs, latency_summary, parse_backend_spec, run_bench
from edge.inspector import STAGES

SUMMARY_KEYS = {"p50_ms", "p90_ms", "p99_ms", "max_ms"}


def _args(bundle: Path, out: Path, **kw) -> types.SimpleNamespace:
    base = dict(
        bundle=str(bundle),
        backend=None,
        camera="synthetic?size=64",
        frames=4,
        warmup=1,
        json_out=str(out),
        compare=None,
        peak_tflops=None,
        publish="outbox",
    )
    base.update(kw)
    return types.SimpleNamespace(**base)


def _check_summary(s: dict) -> None:
    assert set(s) == SUMMARY_KEYS
    assert 0 <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_json_has_every_stage_for_every_backend(tmp_path: Path, capsys) -> None:
    b = toy_bundle(tmp_path / "toy")
    out = tmp_path / "bench.json"
    rc = run_bench(_args(b, out, backend=["onnxruntime", "onnxruntime-fp16"], publish="auto"))
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc["backends"]) == {"onnxruntime-fp32", "onnxruntime-fp16"}
    for label, run in doc["backends"].items():
        assert set(run["stages"]) == set(STAGES)
        for s in (*run["stages"].values(), run["end_to_end"], run["model_only"]):
            _check_summary(s)
        assert run["frames"] == 4 and run["fps"] > 0 and run["model_fps"] > 0
        assert run["end_to_end"]["p50_ms"] >= run["model_only"]["p50_ms"]
        assert run["precision"] == label.split("-")[1]
        assert run["backend"]["onnxruntime"]  # backend version recorded
        assert run["stages"]["publish"]["max_ms"] > 0
    m = doc["machine"]
    assert m["cpu_model"] and m["cpu_cores"] >= 1 and "gpus" in m and m["onnxruntime"]
    from edge.comms.local_broker import find_mosquitto

    assert ("mosquitto" in doc["publish"]) == (find_mosquitto() is not None)
    [cmp] = doc["comparison"]
    assert cmp["baseline"] == "onnxruntime-fp32" and cmp["model_only_p50_ratio"] > 0
    printed = capsys.readouterr().out
    assert "ratio onnxruntime-fp16 / onnxruntime-fp32" in printed and "publish" in printed


def test_flops_match_the_models_known_macs(tmp_path: Path) -> None:
    from trainer.complexity import count_macs

    bundle = resnet18_bundle()
    macs = count_onnx_macs(bundle / "model.onnx")
    assert macs["uncounted_nodes"] == 0
    assert macs["macs"] == count_macs("resnet18", 64)["total"]
    out = tmp_path / "b.json"
    assert run_bench(_args(bundle, out, frames=2, peak_tflops=2.0)) == 0
    run = json.loads(out.read_text())["backends"]["onnxruntime-fp32"]
    assert run["flops_per_frame"] == 2 * macs["macs"]
    achieved = run["flops_per_frame"] / (run["model_only"]["p50_ms"] / 1e3) / 1e12
    assert run["achieved_tflops"] == pytest.approx(achieved)
    assert run["fraction_of_peak"] == pytest.approx(achieved / 2.0)
    assert any("no score statistics" in n for n in run["notes"])  # bare bundle, said so


def test_compare_two_bundles(tmp_path: Path) -> None:
    a = toy_bundle(tmp_path / "a", size=32)
    b = toy_bundle(tmp_path / "b", size=64)
    out = tmp_path / "c.json"
    assert run_bench(_args(a, out, compare=str(b), frames=3, backend=["onnxruntime"])) == 0
    doc = json.loads(out.read_text())
    assert set(doc["backends"]) == {"a/onnxruntime-fp32", "b/onnxruntime-fp32"}
    assert doc["comparison"][0]["other"] == "b/onnxruntime-fp32"
    assert "outbox alone" in doc["publish"]


def test_unavailable_backend_is_reported_not_fatal(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    out = tmp_path / "t.json"
    rc = run_bench(_args(b, out, backend=["tensorrt", "onnxruntime"], frames=2))
    doc = json.loads(out.read_text())
    assert rc == 0 and list(doc["backends"]) == ["onnxruntime-fp32"]
    assert "toy:tensorrt" in doc["failed"]


def test_backend_specs_and_summaries() -> None:
    assert parse_backend_spec("onnxruntime-fp16") == ("onnxruntime", {"precision": "fp16"})
    assert parse_backend_spec("onnxruntime:cuda") == ("onnxruntime", {"device": "cuda"})
    assert parse_backend_spec("auto") == ("auto", {})
    with pytest.raises(ValueError, match="unknown backend"):
        parse_backend_spec("torch")
    s = latency_summary(list(range(1, 101)))
    assert s["p50_ms"] == pytest.approx(50.5) and s["max_ms"] == 100


def test_bench_and_calibration_import_no_torch() -> None:
    code = (
        "import sys, edge.commands.bench, calibration.cli, calibration.report; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_overhead_is_every_stage_but_inference(tmp_path: Path, capsys) -> None:
    """Issue 18: the work around the model, per frame, and its ratio to the model."""
    from edge.commands.bench import BenchResult

    b = toy_bundle(tmp_path / "toy")
    out = tmp_path / "o.json"
    assert run_bench(_args(b, out, backend=["onnxruntime"])) == 0
    run = json.loads(out.read_text())["backends"]["onnxruntime-fp32"]
    _check_summary(run["overhead"])
    assert run["overhead_per_inference"] > 0
    assert "overhead / inference" in capsys.readouterr().out
    # the definition, on known numbers: 1+2+3 ms around a 10 ms model, twice
    stages = {s: [0.0, 0.0] for s in STAGES}
    stages.update(capture=[1.0, 1.0], preprocess=[2.0, 2.0], postprocess=[3.0, 3.0],
                  inference=[10.0, 10.0])
    r = BenchResult(label="x", bundle="b", model_id="m", variant="v", backend={},
                    precision="fp32", stages_ms=stages, end_to_end_ms=[16.0, 16.0],
                    model_only_ms=[10.0, 10.0])
    assert r.overhead_ms == [6.0, 6.0] and r.overhead_ratio == pytest.approx(0.6)


def test_allocator_thresholds_can_be_set() -> None:
    """glibc (Linux, Jetson) takes the thresholds; elsewhere nothing changes and it says so."""
    import ctypes.util

    from edge.allocator import keep_temporaries_on_heap

    expected = bool(ctypes.util.find_library("c")) and sys.platform.startswith("linux")
    assert keep_temporaries_on_heap() is expected
