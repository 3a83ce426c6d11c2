"""The training CLI end to end on a tiny synthetic data set: synth → train → resume → eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main

METRIC_KEYS = {
    "image_auroc", "pixel_auroc", "aupro@0.3", "aupro@0.1", "aupro@0.05", "aupro@0.01",
    "image_ap", "pixel_ap", "image_f1_max", "pixel_f1_max",
}


def _train_args(data: Path, out: Path, epochs: int, **over: str) -> list[str]:
    args = {
        "--data-root": str(data), "--category": "puck", "--out": str(out),
        "--backbone": "resnet18", "--image-size": "64", "--epochs": str(epochs),
        "--batch-size": "4", "--teacher-weights": "offline", "--align": "principal-axis",
        "--seed": "0",
    }
    args.update(over)
    return ["train", *[x for kv in args.items() for x in kv]]


@pytest.mark.slow
def test_synth_train_resume_eval(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--categories", "puck", "--image-size", "64",
                 "--n-train", "8", "--n-validation", "4", "--n-test-good", "4",
                 "--n-test-per-defect", "2"]) == 0

    assert main(_train_args(data, run, epochs=1)) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["epochs_done"] == 1 and info["config"]["category"] == "puck"
    assert info["preprocess"]["image_size"] == 64 and "git_revision" in info
    # offline teacher: what was left open (the aperture) was chosen from the data and recorded
    choices = info["auto_choices"]
    assert choices["align"] == {**choices["align"], "value": "principal-axis", "source": "flag"}
    assert choices["sobel_ksize"]["source"] == "data"
    assert choices["sobel_ksize"]["value"] == info["preprocess"]["sobel_ksize"]
    first_loss = info["history"][0]["loss_rgb"]

    # same --out, more epochs: resumes at epoch 2 instead of starting over
    assert main(_train_args(data, run, epochs=2)) == 0
    info = json.loads((run / "run.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert info["history"][0]["loss_rgb"] == first_loss
    calib = json.loads((run / "calibration.json").read_text())
    assert calib["threshold"] >= max(calib["validation_image_scores"])

    out_json, report = tmp_path / "eval.json", tmp_path / "report"
    assert main(["eval", "--run", str(run), "--data-root", str(data), "--category", "puck",
                 "--json", str(out_json), "--report", str(report)]) == 0
    res = json.loads(out_json.read_text())
    for branch in ("fused", "rgb", "3d"):
        assert set(res[branch]) == METRIC_KEYS
        assert all(v is None or 0.0 <= v <= 1.0 for v in res[branch].values())
    assert set(res["per_defect_type"]) == {"color", "geometry", "both"}
    assert all(0.0 <= v["image_auroc"] <= 1.0 for v in res["per_defect_type"].values())
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert {"roc.png", "pro.png", "scores.png"} <= set(pngs) and "samples_00.png" in pngs


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(tmp_path: Path, tiny_dataset: Path,
                                                  capsys) -> None:
    run = tmp_path / "run"
    assert main(_train_args(tiny_dataset, run, epochs=1)) == 0
    assert main(_train_args(tiny_dataset, run, epochs=2, **{"--modality": "depth"})) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "modality" in err


def test_bad_inputs_give_one_clear_line(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    assert main(_train_args(tiny_dataset, tmp_path / "r", 1, **{"--image-size": "72"})) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "nowhere", tmp_path / "r", 1)) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "missing"), "--data-root", str(tiny_dataset),
                 "--category", "puck"]) == 2
    assert "trd-edge train" in capsys.readouterr().err
