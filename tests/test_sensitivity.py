"""What the station can see (calibration/sensitivity.py): the smallest detectable dent at the
measured depth noise (AUROC, or found at the station's false-alarm target for a dent diameter),
in `trd-edge calibrate`'s report, tested on software-device recordings made through the stereo
camera model (edge/datasets/sensors.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import toy_bundle
from rs_fixtures import rs_or_skip

from calibration.cli import add_calibrate_args, calibrate
from calibration.sensitivity import (
    CURVES,
    MEASURED,
    MEASURED_DIAMETERS_MM,
    MEASURED_FPRS,
    TARGET_DETECTION,
    DetectionCurve,
    pooled,
    sensitivity_for,
    smallest_detectable_dent,
    smallest_detected_dent,
)
from edge.datasets.synthetic import SceneGenerator
from edge.frames import Intrinsics


def _depth(noise_mm: float) -> float:
    d, _ = smallest_detectable_dent(noise_mm / 1e3)
    return np.inf if d is None else d


def test_a_curve_crosses_the_target_where_it_stays_above_it() -> None:
    c = DetectionCurve("t", 1.0, ((1, 0.6), (2, 0.96), (3, 0.90), (4, 0.97), (5, 0.99)))
    # 2 mm reaches 0.95 but 3 mm falls below again: the crossing is the last one, 3 → 4 mm
    assert c.smallest_depth_mm(0.95) == pytest.approx(3 + 0.05 / 0.07)
    assert c.smallest_depth_mm(0.995) is None
    assert c.smallest_depth_mm(0.5) == 1


def test_curves_of_the_same_noise_are_averaged_before_the_lookup() -> None:
    a = DetectionCurve("a", 0.30, ((1, 0.5), (2, 0.90), (3, 1.0)))
    b = DetectionCurve("b", 0.32, ((1, 0.7), (2, 1.00), (3, 1.0)))
    c = DetectionCurve("c", 0.60, ((1, 0.5), (2, 0.60), (3, 0.97)))
    p = pooled((c, b, a))
    assert [x.station for x in p] == ["a + b", "c"]
    assert p[0].noise_rms_mm == pytest.approx(0.31)
    assert p[0].by_depth_mm[1] == (2, pytest.approx(0.95))
    # one curve just short of the target does not make every noisier level blind
    d, _ = smallest_detectable_dent(0.31e-3, curves=(a, b, c))
    assert d == pytest.approx(2.0)


def test_a_noisier_curve_never_claims_a_shallower_dent() -> None:
    quiet = DetectionCurve("q", 0.20, ((1, 0.5), (2, 0.80), (3, 0.96)))
    noisy = DetectionCurve("n", 0.40, ((1, 0.5), (2, 0.96), (3, 1.00)))  # a lucky seed
    assert noisy.smallest_depth_mm() < quiet.smallest_depth_mm()
    for noise in (0.28e-3, 0.40e-3, 0.8e-3):  # the quieter curve's depth holds from there on
        d, _ = smallest_detectable_dent(noise, curves=(noisy, quiet))
        assert d == pytest.approx(quiet.smallest_depth_mm())


def test_the_lookup_reproduces_the_measured_curves_and_is_monotone() -> None:
    for c in pooled(CURVES):
        own = c.smallest_depth_mm()
        got = _depth(c.noise_rms_mm)
        # at a measured noise the curve's own crossing, unless a quieter curve needed more
        assert got >= (np.inf if own is None else own) - 1e-9
    noises = np.geomspace(0.05, 3.0, 60)
    depths = [_depth(n) for n in noises]
    assert all(b >= a for a, b in zip(depths, depths[1:], strict=False))
    assert depths[0] < np.inf and depths[-1] == np.inf  # quiet: something; very noisy: nothing


def test_the_default_stations_read_the_products_curves() -> None:
    """The default stations (`--preprocess working`, D435 ×32 at 0.20 mm, D405 ×2 smoothed at
    0.19 mm) read their own curves, every pooled level is one preprocessing, and no station
    (seed) is counted twice in a level."""
    families = [pooled(CURVES)] + [
        pooled(tuple(m.curve(f) for m in MEASURED if m.diameter_mm == w))
        for f in (None, *MEASURED_FPRS) for w in (None, *MEASURED_DIAMETERS_MM)]
    for levels in families:
        for c in levels:
            parts = c.station.split(" + ")
            assert len(set(parts)) == len(parts), c.station
            recipes = {"working" if "working preprocessing" in p else "reference" for p in parts}
            assert len(recipes) == 1, c.station
            assert all(("working preprocessing" in p) != ("reference preprocessing" in p)
                       for p in parts), c.station
    for noise in (0.19e-3, 0.20e-3):
        for _, basis in (smallest_detectable_dent(noise), smallest_detected_dent(noise, 0.001)[:2],
                         smallest_detected_dent(noise, 0.01, 15.0)[:2]):
            assert "32 frames averaged, working preprocessing, seed 2" in basis
            assert "2 frames averaged, smoothing 3 px, working preprocessing" in basis
            assert "reference" not in basis
    basis = smallest_detected_dent(0.28e-3, 0.001)[1]
    assert "16 frames averaged, working preprocessing, seed 2" in basis
    assert "reference" not in basis


def test_the_warning_names_the_fix_only_when_the_defect_is_hidden() -> None:
    quiet = min(CURVES, key=lambda c: c.noise_rms_mm)
    limit = _depth(quiet.noise_rms_mm)
    seen = sensitivity_for(quiet.noise_rms_mm / 1e3, expected_dent_m=(limit + 0.5) / 1e3)
    hidden = sensitivity_for(quiet.noise_rms_mm / 1e3, expected_dent_m=(limit - 0.5) / 1e3)
    assert seen.warning() is None
    w = hidden.warning()
    # at the quietest measured noise the camera is not the limit: the advice is the model's
    assert w is not None and "the model, not the camera" in w and "average_frames" not in w
    # a noisy station: the advice names averaging, and the factor is the smallest that works
    deep = max(d for c in CURVES for d, _ in c.by_depth_mm)
    noisy = sensitivity_for(1.0e-3, expected_dent_m=deep / 1e3)
    w = noisy.warning()
    assert w is not None and "average_frames" in w and "closer" in w
    n = noisy.frames_factor
    assert n is not None and n >= 2 and f"{n}× the frames" in w
    assert _depth(1.0 / n**0.5) <= deep < _depth(1.0 / (n / 2) ** 0.5)
    with pytest.raises(ValueError, match="positive"):
        sensitivity_for(0.0)


def _inf(d: float | None) -> float:
    return np.inf if d is None else d


def test_detection_at_a_false_alarm_target_follows_the_measured_rates() -> None:
    widths = (None, *MEASURED_DIAMETERS_MM)
    for fpr in MEASURED_FPRS:
        for w in widths:
            for c in pooled(tuple(m.curve(fpr) for m in MEASURED if m.diameter_mm == w)):
                got, _, used = smallest_detected_dent(c.noise_rms_mm / 1e3, fpr, w)
                assert used == fpr
                # at a measured noise its own crossing, unless a quieter curve needed more
                assert _inf(got) >= _inf(c.smallest_depth_mm(TARGET_DETECTION)) - 1e-9
    for w in widths:
        for noise in np.geomspace(0.05, 3.0, 25):
            by_fpr = [_inf(smallest_detected_dent(noise / 1e3, f, w)[0])
                      for f in sorted(MEASURED_FPRS, reverse=True)]
            # a stricter false-alarm target (a higher threshold) never finds a shallower dent
            assert all(b >= a - 1e-9 for a, b in zip(by_fpr, by_fpr[1:], strict=False))
        depths = [_inf(smallest_detected_dent(n / 1e3, 0.01, w)[0])
                  for n in np.geomspace(0.05, 3.0, 40)]
        assert all(b >= a for a, b in zip(depths, depths[1:], strict=False))  # monotone in noise
        assert depths[-1] == np.inf  # one D435 frame at 0.55 m finds no dent at any size
    # a target between the measured ones reads the next lower one; below them all the lowest,
    # and the basis says that it is optimistic there
    low = min(MEASURED_FPRS)
    _, basis, used = smallest_detected_dent(0.3e-3, 0.02)
    assert used == max(f for f in MEASURED_FPRS if f <= 0.02) and "optimistic" not in basis
    _, basis, used = smallest_detected_dent(0.3e-3, low / 10)
    assert used == low and "optimistic" in basis


def test_a_diameter_between_the_measured_ones_reads_the_worse_neighbour() -> None:
    lo, hi = MEASURED_DIAMETERS_MM[0], MEASURED_DIAMETERS_MM[1]
    for noise in (0.28e-3, 0.4e-3):
        a, _, _ = smallest_detected_dent(noise, 0.01, lo)
        b, _, _ = smallest_detected_dent(noise, 0.01, hi)
        mid, basis, _ = smallest_detected_dent(noise, 0.01, (lo + hi) / 2)
        assert _inf(mid) == max(_inf(a), _inf(b)) and "the worse" in basis
    wide = MEASURED_DIAMETERS_MM[-1]
    d, basis, _ = smallest_detected_dent(0.28e-3, 0.01, wide + 10)
    assert d == smallest_detected_dent(0.28e-3, 0.01, wide)[0] and "outside the measured" in basis


def test_the_false_alarm_target_and_diameter_reach_the_report_and_warning() -> None:
    quiet = min(m.noise_rms_mm for m in MEASURED) / 1e3
    s = sensitivity_for(quiet, 0.001, target_fpr=0.001, expected_diameter_m=0.005)
    depth, _, used = smallest_detected_dent(quiet, 0.001, 5.0)
    assert s.smallest_dent_mm == (None if depth is None else pytest.approx(depth))
    assert (s.target_fpr, s.measured_fpr, s.detection_rate) == (0.001, used, TARGET_DETECTION)
    assert s.expected_dent_diameter_mm == pytest.approx(5.0)
    text = " ".join(s.lines())
    assert "of dents found at FPR 0.001" in text and "5 mm across" in text
    w = s.warning()  # 1 mm, 5 mm across: no curve finds it
    assert w is not None and "1 mm deep, 5 mm across" in w and "FPR 0.001" in w
    # between measured noises, a dent no measured station finds: not the camera's fault
    narrow = sensitivity_for(0.35e-3, 0.003, target_fpr=0.001, expected_diameter_m=0.005)
    assert smallest_detected_dent(quiet, 0.001, 5.0)[0] is None
    w = narrow.warning()
    assert w is not None and "the model, not the camera" in w and "average_frames" not in w
    # a single D435 frame and 3 mm dents 15 mm across: averaging helps, by the factor that works
    wide = sensitivity_for(1.1e-3, 0.003, target_fpr=0.001, expected_diameter_m=0.015)
    w, n = wide.warning(), wide.frames_factor
    assert w is not None and "average_frames" in w and n is not None and f"{n}× the frames" in w
    assert _inf(smallest_detected_dent(1.1e-3 / n**0.5, 0.001, 15.0)[0]) <= 3.0
    assert _inf(smallest_detected_dent(1.1e-3 / (n / 2) ** 0.5, 0.001, 15.0)[0]) > 3.0
    # without a false-alarm target (a best-F1 threshold) and diameter: the AUROC lookup
    old = sensitivity_for(quiet, 0.001)
    assert old.target_fpr is None and "AUROC >= 0.95" in old.lines()[0]
    assert old.smallest_dent_mm == smallest_detectable_dent(quiet)[0]
    with pytest.raises(ValueError, match="diameter"):
        sensitivity_for(quiet, 0.001, expected_diameter_m=0.0)
    parser = argparse.ArgumentParser()
    add_calibrate_args(parser)
    args = parser.parse_args(["--bundle", "B", "--camera", "file:x.db3", "--frames", "20",
                              "--expected-dent-mm", "2", "--expected-dent-diameter-mm", "8"])
    assert args.expected_dent_diameter_mm == 8.0


def _record(path: Path, sensor: str, distance: float, average: int = 1, n: int = 32) -> None:
    """A software-device recording of ``n`` good parts through the camera model, each part
    still for ``average`` frames (the station averages them: ``?average_frames=N``). More
    parts than calibrate uses: a playback may lose its first framesets (realsense.py)."""
    from edge.sources.rs_software import write_recording, xyz_to_depth

    gen = SceneGenerator("puck", 64, seed=3, sensor=sensor, distance=distance)
    unit = gen.sensor.spec.depth_unit_m
    fx, fy, cx, cy = gen.intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=64, height=64, depth_scale=unit)
    items = []
    for _ in range(n):
        for s in gen.sample_still("good", average):
            items.append((s.rgb, xyz_to_depth(s.xyz, unit), len(items)))
    write_recording(path, items, intr, depth_units=unit, fps=30)


WIDTH = {"d435x8": 0.015}  # dent diameters (m) configured per station; others: 10–15 mm


def test_calibrate_reports_the_smallest_dent_the_station_sees(tmp_path: Path) -> None:
    rs_or_skip()
    results = {}
    for name, sensor, distance, average in (
        ("d435", "d435", 0.55, 1), ("d435x8", "d435", 0.55, 8), ("d405", "d405", 0.2, 1),
    ):
        _record(tmp_path / f"{name}.db3", sensor, distance, average)
        bundle = toy_bundle(tmp_path / f"toy-{name}")
        spec = f"file:{tmp_path / name}.db3" + (f"?average_frames={average}" if average > 1 else "")
        res = calibrate(bundle, spec, 20, target_fpr=0.05, compare_training=False,
                        expected_dent_m=0.003, expected_diameter_m=WIDTH.get(name))
        noise = res.record.station.depth_noise_rms_m
        saved = json.loads((bundle / "calibration" / "station.json").read_text())
        report = (bundle / "calibration" / "report.txt").read_text()
        sens = saved["sensitivity"]
        # the record holds the lookup at the noise calibrate measured, at its false-alarm
        # target and the configured diameter; the report says it
        assert sens["noise_rms_mm"] == pytest.approx(noise * 1e3)
        width = WIDTH.get(name)
        expected, _, _ = smallest_detected_dent(
            noise, 0.05, None if width is None else width * 1e3)
        assert sens["smallest_dent_mm"] == (None if expected is None else pytest.approx(expected))
        assert sens["target_fpr"] == 0.05
        assert "smallest dent seen" in report and f"{noise * 1e3:.2f} mm RMS" in report
        assert "of dents found at FPR 0.05" in report
        results[name] = (noise, sens["smallest_dent_mm"], report)
    # one D435 frame at 0.55 m: 3 mm dents are hidden, and the report says what to do
    noise, depth, report = results["d435"]
    assert depth is None or depth > 3.0
    assert "below what this station's depth noise" in report and "average_frames" in report
    # averaging 8 frames and the D405 at 0.2 m are quieter and see smaller dents
    for quiet in ("d435x8", "d405"):
        assert results[quiet][0] < noise / 2
        assert (results[quiet][1] or np.inf) < (depth or np.inf)
