"""Export a (random-weight, resnet18, 64 px) run into a bundle and check the graphs agree.

Tolerances: ONNX FP32 vs torch FP32 on CPU 1e-4 on the raw maps (only kernel summation order
differs); FP16 body vs FP32 2e-2 on the raw maps (range [0, 6]) and no flipped verdict.
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

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import file_entry, load_bundle, model_inputs
from edge.processing.scoring import image_scores, score_maps
from export.fp16 import check_fp16_graph, fp16_graph_report
from export.onnx_export import ExportError, export_bundle, run_export
from export.torch_backend import TorchBackend
from export.verify import run_verify

FP32_MAP_TOL = 1e-4
FP16_MAP_TOL = 2e-2


@pytest.fixture(scope="module")
def exported(tiny_dataset: Path, module_tmp: Path):
    base = module_tmp
    run_dir = make_run(base / "run", tiny_dataset)
    out = base / "bundle"
    assert run_export(types.SimpleNamespace(run=str(run_dir), out=str(out), fp16=True)) == 0
    return run_dir, out


@pytest.fixture(scope="module")
def test_split(tiny_dataset: Path):
    return prepared_split(tiny_dataset, "test")


def test_manifest_describes_the_run(exported) -> None:
    run_dir, out = exported
    b = load_bundle(out)
    m = b.manifest
    assert m.model.backbone == "resnet18" and m.model.image_size == 64
    assert m.model.modality == "depth" and m.model.variant == "trd-resnet18-64-depth"
    assert m.preprocess["image_size"] == 64
    assert set(m.files) == {"model", "model_fp16"}
    assert m.files["model"].bytes == (out / "model.onnx").stat().st_size
    calib = json.loads((run_dir / "calibration.json").read_text())
    assert m.scoring.threshold == pytest.approx(calib["threshold"])
    assert m.scoring.stats.rgb_std == pytest.approx(calib["stats"]["rgb_std"])
    assert m.scoring.smoothing.rule == "4*S/256" and m.scoring.smoothing.sigma == 1.0  # 64 px
    assert m.provenance.category == "puck" and m.provenance.epochs == 1
    assert m.provenance.git_revision == "test" and Path(m.provenance.run_dir) == run_dir.resolve()
    g = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert [i.name for i in g.graph.input] == ["rgb", "x3d"]
    assert [o.name for o in g.graph.output] == ["map_rgb", "map_3d"]
    assert [d.dim_value for d in g.graph.output[0].type.tensor_type.shape.dim] == [1, 1, 64, 64]


def test_onnx_fp32_matches_torch(exported, test_split) -> None:
    run_dir, out = exported
    samples, _ = test_split
    ort = OnnxRuntimeBackend(load_bundle(out), precision="fp32")
    ref = TorchBackend(run_dir=run_dir, precision="fp32")
    worst = 0.0
    for s in samples:
        # the bundle's graph takes uint8 RGB / the [0,1] 3D image and normalises inside
        ours, theirs = ort.infer(*model_inputs(ort.io, s)), ref.infer(s.rgb, s.x3d)
        for a, b in zip(ours, theirs, strict=True):
            worst = max(worst, float(np.abs(a - b).max()))
            assert a.std() > 0  # a real map, not a constant
    assert worst <= FP32_MAP_TOL


def test_fp16_graph_is_fp16_with_fp32_head(exported) -> None:
    _, out = exported
    rep = check_fp16_graph(out / "model.fp16.onnx")
    assert rep.fp16_weight_fraction > 0.99
    assert set(rep.body_inputs) == {"FLOAT16"} and sum(rep.body_inputs.values()) > 20
    assert set(rep.head_inputs) == {"FLOAT"} and rep.head_inputs["FLOAT"] >= 6 * 3
    # schema 1.1: raw uint8 RGB and the [0,1] 3D image in, FP32 maps out
    assert rep.io == {"rgb": "UINT8", "x3d": "FLOAT", "map_rgb": "FLOAT", "map_3d": "FLOAT"}
    # the FP32 graph is recognised as not-FP16
    assert fp16_graph_report(out / "model.onnx").fp32_body_nodes
    with pytest.raises(ValueError, match="not a valid FP16 export"):
        check_fp16_graph(out / "model.onnx")


def test_fp16_agrees_with_fp32_without_flips(exported, test_split) -> None:
    _, out = exported
    bundle = load_bundle(out)
    samples, labels = test_split
    assert labels.sum() > 0 and (labels == 0).sum() > 0
    maps = {}
    for precision in ("fp32", "fp16"):
        be = OnnxRuntimeBackend(bundle, precision=precision)
        maps[precision] = np.stack(
            [np.stack(be.infer(*model_inputs(be.io, s))) for s in samples]
        )
    diff = np.abs(maps["fp32"] - maps["fp16"])
    assert 0 < diff.max() <= FP16_MAP_TOL  # it did run in half precision, and closely
    stats, thr = bundle.score_stats(), bundle.manifest.scoring.threshold
    s32, s16 = (image_scores(score_maps(m[:, 0], m[:, 1], stats).fused) for m in maps.values())
    assert np.array_equal(s32 > thr, s16 > thr)


def test_verify_cli_agrees_and_writes_json(exported, tmp_path: Path, capsys) -> None:
    _, out = exported
    js = tmp_path / "verify.json"
    args = types.SimpleNamespace(
        bundle=str(out), backend=None, frames=None, n_frames=4, run=None, json_out=str(js)
    )
    assert run_verify(args) == 0
    assert "all backends agree" in capsys.readouterr().out
    pairs = json.loads(js.read_text())
    names = {(p["a"], p["b"]) for p in pairs}
    # torch found through the manifest's provenance.run_dir
    assert ("onnxruntime-fp32", "onnxruntime-fp16") in names
    assert ("onnxruntime-fp32", "torch-fp32") in names
    for p in pairs:
        assert {"a", "b", "max_abs_map", "mean_abs_map", "max_abs_score", "flipped"} <= set(p)
        assert p["flipped"] == 0 and p["agree"]


def test_verify_fails_on_a_diverging_graph(exported, tmp_path: Path, tiny_dataset: Path) -> None:
    _, out = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    # Corrupt the FP16 body (scale the largest weight) and re-hash: the bundle loads fine, but
    # its FP16 graph no longer computes the model.
    path = bad / "model.fp16.onnx"
    g = onnx.load(str(path))
    init = max(g.graph.initializer, key=lambda t: len(t.raw_data))
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array((w * -3).astype(w.dtype), init.name))
    onnx.save(g, str(path))
    b = load_bundle(bad, verify_hashes=False)
    b.manifest.files["model_fp16"] = file_entry(bad, "model.fp16.onnx")
    b.save_manifest()
    js = tmp_path / "bad.json"
    args = types.SimpleNamespace(
        bundle=str(bad),
        backend=["onnxruntime"],
        frames=str(tiny_dataset),
        n_frames=4,
        run=None,
        json_out=str(js),
    )
    assert run_verify(args) == 1
    (pair,) = json.loads(js.read_text())
    assert pair["b"] == "onnxruntime-fp16" and not pair["agree"]
    assert pair["max_abs_map"] > FP16_MAP_TOL


def test_export_refuses_a_foreign_folder(exported, tmp_path: Path) -> None:
    run_dir, _ = exported
    (tmp_path / "notes.txt").write_text("not a bundle")
    with pytest.raises(ExportError, match="not a model bundle"):
        export_bundle(run_dir, tmp_path)


@pytest.mark.slow
def test_train_export_verify_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    train_mod = pytest.importorskip("trainer.train")
    from trainer.run import TrainConfig

    cfg = TrainConfig(
        data_root=str(tiny_dataset),
        category="puck",
        backbone="resnet18",
        image_size=64,
        epochs=1,
        batch_size=4,
        teacher_weights="offline",  # the product's offline path, as the demo trains it
        align="principal-axis",
        seed=0,
    )
    run_dir = train_mod.train(cfg, tmp_path / "run", progress=False)
    out = export_bundle(run_dir, tmp_path / "bundle", fp16=True)
    args = types.SimpleNamespace(
        bundle=str(out), backend=None, frames=None, n_frames=4, run=None, json_out=None
    )
    assert run_verify(args) == 0
