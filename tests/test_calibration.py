"""Station calibration: threshold statistics, the calibrate flow, the manifest, geometry.

Most flow tests use the toy ONNX bundle (a real function of the frames, ~0.2 ms per frame) so
that hundreds of frames stay fast; one test runs the real resnet18 TRD graph.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import copy_bundle, resnet18_bundle, toy_bundle

from calibration.cli import calibrate
from calibration.geometry import (
    GeometryAccumulator,
    compare_geometry,
    measure_xyz,
    training_geometry,
)
from calibration.threshold import (
    MIN_FRAMES,
    CalibrationError,
    best_f1_threshold,
    binom_sf,
    fit_threshold,
    fpr_upper_bound,
    frames_needed,
    prob_fpr_below,
)
from edge.backends import create_backend
from edge.bundle import load_bundle
from edge.inspector import Inspector
from edge.processing.geometry import depth_to_xyz
from edge.sources import open_source

GOOD_CAMERA = "synthetic?size=64&defect_rate=0&seed=1"


# --------------------------------------------------------------------------- statistics


def test_reliability_matches_closed_forms() -> None:
    n, p = 200, 0.01
    # r = 1 (the maximum): P(FPR <= p) = 1 - (1-p)^n; Beta(1, n) quantile: 1 - (1-c)^(1/n)
    assert prob_fpr_below(1, n, p) == pytest.approx(1 - (1 - p) ** n, rel=1e-9)
    assert fpr_upper_bound(1, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6)
    # binomial tail against a direct sum with exact integers
    direct = sum(math.comb(30, k) * 0.2**k * 0.8 ** (30 - k) for k in range(7, 31))
    assert binom_sf(7, 30, 0.2) == pytest.approx(direct, rel=1e-9)
    assert frames_needed(0.001, 0.95) == math.ceil(math.log(0.05) / math.log(0.999))
    assert frames_needed(0.05, 0.95) == math.ceil(math.log(0.05) / math.log(0.95))


def test_quantile_threshold_is_the_order_statistic() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    fit = fit_threshold(s, 0.05)
    r = round(0.05 * 301)
    assert fit.rank == r and fit.threshold == np.sort(s)[::-1][r - 1]
    assert int((s > fit.threshold).sum()) == r - 1
    assert fit.expected_fpr == pytest.approx(r / 301)
    assert fit.threshold > np.quantile(s, 0.9)  # well above the bulk of good scores

    cons = fit_threshold(s, 0.05, method="conservative", confidence=0.95)
    assert cons.prob_fpr_below_target >= 0.95
    assert prob_fpr_below(cons.rank + 1, 300, 0.05) < 0.95  # the largest rank that qualifies
    assert cons.threshold >= fit.threshold


def test_too_few_frames_for_the_target_extrapolates_and_says_so() -> None:
    s = np.random.default_rng(1).gumbel(size=100)
    fit = fit_threshold(s, 0.001)  # 0.001 * 101 < 1: no order statistic reaches it
    assert fit.method == "gumbel-extrapolated" and fit.rank is None
    assert fit.threshold >= s.max() and fit.empirical_fpr == 0.0
    assert "extrapolated" in fit.statement and str(frames_needed(0.001)) in fit.statement
    # the Gumbel fit recovers the true 0.999 quantile of a standard Gumbel roughly
    assert fit.threshold == pytest.approx(-math.log(-math.log(0.999)), rel=0.35)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(CalibrationError, match=f"at least {MIN_FRAMES}"):
        fit_threshold(np.arange(5.0), 0.05)
    with pytest.raises(CalibrationError, match="NaN"):
        fit_threshold(np.r_[np.arange(30.0), np.nan], 0.05)
    with pytest.raises(CalibrationError, match="target false-alarm"):
        fit_threshold(np.arange(30.0), 0.0)
    with pytest.raises(CalibrationError, match="needs both"):
        best_f1_threshold(np.arange(10.0), np.zeros(10))


def test_thresholds_separate_defects_that_score_higher() -> None:
    rng = np.random.default_rng(2)
    good, bad = rng.normal(0, 1, 300), rng.normal(5, 1, 60)
    fit = fit_threshold(good, 0.05)
    assert (bad > fit.threshold).mean() >= 0.9
    scores = np.r_[good, bad]
    labels = np.r_[np.zeros(300), np.ones(60)].astype(int)
    f1 = best_f1_threshold(scores, labels)

    # brute force over every possible cut: none beats the chosen threshold
    def f1_at(t: float) -> float:
        pred = scores > t
        tp = int((pred & (labels == 1)).sum())
        fp = int((pred & (labels == 0)).sum())
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + (60 - tp))

    assert f1.f1 == pytest.approx(f1_at(f1.threshold))
    assert all(f1_at(t) <= f1.f1 + 1e-12 for t in scores)
    assert f1.f1 > 0.9


# --------------------------------------------------------------------------- calibrate flow


def test_threshold_meets_target_on_fresh_good_frames(tmp_path: Path) -> None:
    """Calibrate on 200 good frames for FPR 0.05, then count false alarms on 200 fresh ones.

    The threshold's true FPR ~ Beta(10, 191) (sd ≈ 0.0154) and the fresh count is binomial
    (sd ≈ 0.0154 at 200 frames): together sd ≈ 0.022, so |observed − 0.05| ≤ 0.065 (3 sd).
    """
    b = toy_bundle(tmp_path / "toy")
    res = calibrate(b, GOOD_CAMERA, 200, target_fpr=0.05)
    assert res.fit.rank == 10
    assert res.threshold == pytest.approx(np.sort(res.scores)[::-1][9])
    bundle = load_bundle(b)
    inspector = Inspector(bundle, create_backend("onnxruntime", bundle))
    assert inspector.threshold == pytest.approx(res.threshold)
    alarms = []
    with open_source("synthetic?size=64&defect_rate=0&seed=7&max_frames=200") as src:
        for frame in src:
            alarms.append(inspector.inspect(frame).is_defect)
    assert len(alarms) == 200
    assert abs(np.mean(alarms) - 0.05) <= 0.065


def test_manifest_keeps_previous_calibration(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    before = load_bundle(b).manifest.scoring
    first = calibrate(b, GOOD_CAMERA, 40, target_fpr=0.05)
    second = calibrate(b, "synthetic?size=64&defect_rate=0&seed=2", 30, target_fpr=0.1)
    m = load_bundle(b).manifest  # hashes still verify: only the manifest changed
    hist = m.scoring.history
    assert [h.threshold for h in hist] == [before.threshold, first.threshold]
    assert hist[0].threshold_method == "test"
    assert hist[1].stats.rgb_mean == pytest.approx(first.stats.rgb_mean)
    assert m.scoring.threshold == pytest.approx(second.threshold)
    assert m.scoring.stats.n_maps == 30 and "n=30" in m.scoring.threshold_method
    station = json.loads((b / "calibration" / "station.json").read_text())
    assert station["calibration"]["threshold"] == pytest.approx(second.threshold)
    assert len(list((b / "calibration" / "history").glob("station-*.json"))) == 1
    assert (b / "calibration" / "report.txt").is_file()
    assert (b / "calibration" / "scores_histogram.png").stat().st_size > 1000
    # the report tells how the previous calibration would have done on these frames
    assert second.summary.previous_threshold == pytest.approx(first.threshold)
    assert second.summary.previous_fpr_on_frames is not None


def test_dry_run_leaves_the_bundle_alone(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    text = (b / "manifest.json").read_text()
    res = calibrate(b, GOOD_CAMERA, 20, target_fpr=0.05, write=False, report_dir=tmp_path / "rep")
    assert (b / "manifest.json").read_text() == text and not (b / "calibration").exists()
    assert (tmp_path / "rep" / "report.txt").is_file() and res.threshold > 0


def test_broken_source_and_too_few_frames_are_clear_errors(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    with pytest.raises(CalibrationError, match=f"at least {MIN_FRAMES}"):
        calibrate(b, GOOD_CAMERA, 5)
    with pytest.raises(CalibrationError, match="cannot open --camera.*does not exist"):
        calibrate(b, f"file:{tmp_path}/missing.db3", 30)
    with pytest.raises(CalibrationError, match="cannot open --camera.*unknown camera spec"):
        calibrate(b, "webcam:0", 30)
    with pytest.raises(CalibrationError, match="ended after 10 usable frames.*--frames asks"):
        calibrate(b, "synthetic?size=64&defect_rate=0&max_frames=10", 30)
    assert load_bundle(b).manifest.scoring.history == []  # nothing written on failure


def test_defective_frames_from_the_source_are_skipped(tmp_path: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    res = calibrate(b, "synthetic?size=64&defect_rate=0.5&seed=3", 24, target_fpr=0.05)
    assert res.summary.skipped_defective > 0 and res.scores.size == 24


def test_f1_mode_on_a_labelled_folder(tmp_path: Path, tiny_dataset: Path) -> None:
    b = toy_bundle(tmp_path / "toy")
    res = calibrate(b, GOOD_CAMERA, 20, f1_dir=str(tiny_dataset / "puck" / "test"))
    assert res.method.startswith("station-f1(good=4,defect=6)")
    s, y = res.summary.labelled_scores, res.summary.labelled_labels
    assert s.size == 10 and set(y.tolist()) == {0, 1}
    pred = s > res.threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    assert res.fit.f1 == pytest.approx(2 * tp / (2 * tp + fp + (6 - tp)))
    assert load_bundle(b).manifest.scoring.threshold == pytest.approx(res.threshold)


def test_real_trd_graph_gets_its_first_calibration(tmp_path: Path) -> None:
    b = copy_bundle(resnet18_bundle(), tmp_path / "r18")
    assert load_bundle(b).score_stats() is None  # a bare export: no statistics yet
    res = calibrate(b, GOOD_CAMERA, 20, target_fpr=0.05, backend="onnxruntime")
    bundle = load_bundle(b)
    assert bundle.manifest.scoring.history == []  # nothing to keep yet
    assert res.threshold == pytest.approx(res.scores.max())  # 0.05 * 21 rounds to rank 1
    ins = Inspector(bundle, create_backend("onnxruntime", bundle)).inspect(
        next(iter(open_source("synthetic?size=64&defect_rate=0&seed=9")))
    )
    assert np.isfinite(ins.image_score) and ins.threshold == pytest.approx(res.threshold)


# --------------------------------------------------------------------------- geometry


def _tilted_plane(distance: float, tilt_deg: float, size: int = 64) -> np.ndarray:
    """An organised cloud of the plane n·X = distance, n = (0, sin t, cos t)."""
    f = size * 1.2
    c = (size - 1) / 2
    t = math.radians(tilt_deg)
    u, v = np.meshgrid(np.arange(size), np.arange(size))
    ray = np.stack([(u - c) / f, (v - c) / f, np.ones_like(u, float)], -1)
    z = distance / (ray @ np.array([0.0, math.sin(t), math.cos(t)]))
    return depth_to_xyz(z.astype(np.float32), f, f, c, c)


def test_plane_distance_and_tilt_are_measured() -> None:
    xyz = _tilted_plane(0.4, 12.0)
    xyz[20:30, 20:40] = 0  # a hole patch
    g = measure_xyz(xyz)
    assert g.plane_distance_m == pytest.approx(0.4, rel=1e-3)
    assert g.tilt_deg == pytest.approx(12.0, abs=0.05)
    assert g.holes_ratio == pytest.approx(200 / 64**2)
    assert g.foreground_ratio < 0.01 and g.background_noise_m < 1e-4
    assert g.plane_normal[2] < 0  # oriented towards the camera


def test_station_geometry_compared_with_training(tiny_dataset: Path) -> None:
    acc = GeometryAccumulator()
    with open_source("synthetic?size=64&defect_rate=0&seed=4&max_frames=8") as src:
        for frame in src:
            acc.add(frame)
    station = acc.result()
    assert station is not None and station.n_frames == 8
    assert acc.intrinsics is not None
    assert station.plane_distance_m == pytest.approx(0.5, rel=0.1)  # generator: ~0.5 m away
    training, note = training_geometry(str(tiny_dataset), "puck", {})
    assert training is not None and "training samples" in note
    assert compare_geometry(station, training) == []  # same generator, same geometry
    moved = station.model_copy(
        update={
            "plane_distance_m": station.plane_distance_m * 1.5,
            "tilt_deg": station.tilt_deg + 12.0,
            "holes_ratio": station.holes_ratio + 0.2,
        }
    )
    warnings = " | ".join(compare_geometry(moved, training))
    assert "distance" in warnings and "tilt" in warnings and "missing 3D points" in warnings
    none, why = training_geometry("/nonexistent/data", "puck", {})
    assert none is None and "not reachable" in why
