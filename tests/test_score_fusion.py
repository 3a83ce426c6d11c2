"""Fusing the branches by the maximum of each in units of its good image scores
(``ScoreStats.fusion == "max"``): the score rule, training's default, eval, export, the station
and its calibration (docs/any-shape.md, "fusion by the larger branch")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import toy_bundle

from calibration.cli import calibrate
from edge.backends import create_backend
from edge.bundle import load_bundle
from edge.inspector import Inspector
from edge.processing.scoring import (
    ScoreStats,
    branch_image_scores,
    image_scores,
    score_maps,
)
from edge.sources import open_source

PIXEL = ScoreStats(rgb_mean=0.0, rgb_std=1.0, x3d_mean=0.0, x3d_std=1.0, n_maps=1)
S = 32


def _blob(amplitude: float, y: int, x: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.normal(0, 0.05, (S, S))
    yy, xx = np.mgrid[:S, :S]
    return m + amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)


def test_a_defect_one_branch_sees_is_not_buried_by_the_others_noise() -> None:
    """Good parts whose colour branch is noisy (as the printed block's) and a bump that only
    the 3D branch sees: summed, a good part with a loud colour map outscores the bump; in units
    of each branch's good scores it does not."""
    goods_rgb = [_blob(a, 10, 10, i) for i, a in enumerate((2.0, 4.0, 6.0, 3.0, 5.0, 8.0))]
    goods_3d = [_blob(a, 20, 20, 10 + i) for i, a in enumerate((0.4, 0.5, 0.6, 0.45, 0.55, 0.5))]
    rgb, x3d = branch_image_scores(np.stack(goods_rgb), np.stack(goods_3d), PIXEL)
    fused_max = PIXEL.with_branch_scores(rgb, x3d)
    assert fused_max.fusion == "max" and fused_max.x3d_image_std < fused_max.rgb_image_std
    loud_good = (_blob(8.0, 10, 10, 50), _blob(0.5, 20, 20, 51))
    bump = (_blob(3.0, 10, 10, 52), _blob(2.0, 20, 20, 53))  # colour as a quiet good part
    for stats, bump_wins in ((PIXEL, False), (fused_max, True)):
        scores = image_scores(score_maps(np.stack([loud_good[0], bump[0]]),
                                         np.stack([loud_good[1], bump[1]]), stats).fused)
        assert (scores[1] > scores[0]) == bump_wins, (stats.fusion, scores)
    # the fused map is the larger of the two branch maps, each in its good-score units
    m = score_maps(bump[0], bump[1], fused_max)
    np.testing.assert_allclose(m.fused, np.maximum(m.rgb, m.x3d), rtol=1e-6)
    assert m.x3d.max() > 5 > m.rgb.max()  # the 3D branch decided: what the verdict shows


def test_max_needs_each_branchs_good_scores() -> None:
    with pytest.raises(ValueError, match="image-score mean and std"):
        ScoreStats(rgb_mean=0, rgb_std=1, x3d_mean=0, x3d_std=1, n_maps=1, fusion="max")
    with pytest.raises(ValueError, match="all equal"):
        PIXEL.with_branch_scores(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="at least 2 good parts"):
        PIXEL.with_branch_scores(np.array([1.0]), np.array([2.0]))
    assert PIXEL.fusion == "sum"  # every bundle and run before the choice


# --------------------------------------------------------------------------- training's side


def test_default_fusion_per_pipeline_and_resume(tmp_path: Path, capsys) -> None:
    from conftest_export import write_run_recorded_before

    from trainer.run import TrainConfig
    from trainer.train import resolve_score_fusion

    base = TrainConfig(data_root="d", category="puck", score_fusion=None)
    assert TrainConfig(data_root="d", category="puck").score_fusion == "sum"  # old runs
    work = base.model_copy(update={"preprocess": "working"})
    assert resolve_score_fusion(work).score_fusion == "max"
    assert "score fusion: max" in capsys.readouterr().out
    ref = base.model_copy(update={"preprocess": "reference"})
    assert resolve_score_fusion(ref).score_fusion == "sum"
    # a resumed run keeps what it recorded (an old run.json without the key: sum)
    write_run_recorded_before(tmp_path, work.model_copy(update={"score_fusion": "sum"}),
                              "score_fusion")
    assert resolve_score_fusion(work, tmp_path).score_fusion == "sum"


def test_eval_export_and_station_follow_the_run(tmp_path: Path, tiny_dataset: Path) -> None:
    """`evaluate` calibrates the run's fusion on the validation parts, `export` records it in
    the bundle's statistics, and the station's score is the larger branch score."""
    from conftest_export import make_run

    from export.onnx_export import export_bundle
    from trainer.evaluate import evaluate
    from trainer.run import CALIBRATION_FILE

    run = make_run(tmp_path / "run", tiny_dataset)
    raw = json.loads((run / "run.json").read_text())
    raw["config"]["score_fusion"] = "max"
    (run / "run.json").write_text(json.dumps(raw))
    res = evaluate(run, tiny_dataset, "puck", progress=False)
    cal = json.loads((run / CALIBRATION_FILE).read_text())
    assert cal["stats"]["fusion"] == "max"
    # in units of the validation parts' own scores: their mean is 0 per branch, so the fused
    # (larger) validation scores straddle it
    assert min(cal["validation_image_scores"]) < 1.5 and res["threshold"] > 0
    bundle = export_bundle(run, tmp_path / "bundle", check=False)
    b = load_bundle(bundle)
    assert b.manifest.scoring.stats.fusion == "max"
    station = Inspector(b, create_backend("onnxruntime", b))
    with open_source("synthetic:puck?size=64&defect_rate=0.5&seed=2&max_frames=4") as src:
        for frame in src:
            ins = station.inspect(frame)
            assert ins.image_score == pytest.approx(max(ins.rgb_score, ins.x3d_score), abs=1e-5)


def test_station_calibration_keeps_max_and_refits_it(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    path = b / "manifest.json"
    m = json.loads(path.read_text())
    m["scoring"]["stats"].update(fusion="max", rgb_image_mean=100.0, rgb_image_std=50.0,
                                 x3d_image_mean=100.0, x3d_image_std=50.0)
    path.write_text(json.dumps(m, indent=2))
    camera = "synthetic?size=32&defect_rate=0&seed=1"
    res = calibrate(b, camera, 20, target_fpr=0.1)
    stats = load_bundle(b).manifest.scoring.stats
    assert stats.fusion == "max" and stats.source.startswith("station")
    assert stats.rgb_image_mean != 100.0 and stats.rgb_image_std > 0
    # the station's good frames, scored as the live loop does, now centre on 0 per branch
    station = Inspector(load_bundle(b), create_backend("onnxruntime", load_bundle(b)))
    with open_source(f"{camera}&max_frames=20") as src:
        rgb = [station.inspect(f).rgb_score for f in src]
    assert abs(float(np.mean(rgb))) < 0.5
    assert res.threshold > 0
