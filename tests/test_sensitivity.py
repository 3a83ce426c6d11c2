"""What the station can see (calibration/sensitivity.py): the smallest detectable dent at the
measured depth noise, in `trd-edge calibrate`'s report, tested on software-device recordings
made through the stereo camera model (edge/datasets/sensors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import toy_bundle
from rs_fixtures import rs_or_skip

from calibration.cli import calibrate
from calibration.sensitivity import (
    CURVES,
    DetectionCurve,
    pooled,
    sensitivity_for,
    smallest_detectable_dent,
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
    assert p[0].auroc_by_depth_mm[1] == (2, pytest.approx(0.95))
    # one curve just short of the target does not make every noisier level blind
    d, _ = smallest_detectable_dent(0.31e-3, curves=(a, b, c))
    assert d == pytest.approx(2.0)


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
    deep = max(d for c in CURVES for d, _ in c.auroc_by_depth_mm)
    noisy = sensitivity_for(1.0e-3, expected_dent_m=deep / 1e3)
    w = noisy.warning()
    assert w is not None and "average_frames" in w and "closer" in w
    n = noisy.frames_factor
    assert n is not None and n >= 2 and f"{n}× the frames" in w
    assert _depth(1.0 / n**0.5) <= deep < _depth(1.0 / (n / 2) ** 0.5)
    with pytest.raises(ValueError, match="positive"):
        sensitivity_for(0.0)


def _record(path: Path, sensor: str, distance: float, average: int = 1, n: int = 24) -> None:
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


def test_calibrate_reports_the_smallest_dent_the_station_sees(tmp_path: Path) -> None:
    rs_or_skip()
    results = {}
    for name, sensor, distance, average in (
        ("d435", "d435", 0.55, 1), ("d435x8", "d435", 0.55, 8), ("d405", "d405", 0.2, 1),
    ):
        _record(tmp_path / f"{name}.db3", sensor, distance, average)
        bundle = toy_bundle(tmp_path / f"toy-{name}")
        spec = f"file:{tmp_path / name}.db3" + (f"?average_frames={average}" if average > 1 else "")
        res = calibrate(bundle, spec, 20, target_fpr=0.05,
                        compare_training=False, expected_dent_m=0.002)
        noise = res.record.station.depth_noise_rms_m
        saved = json.loads((bundle / "calibration" / "station.json").read_text())
        report = (bundle / "calibration" / "report.txt").read_text()
        sens = saved["sensitivity"]
        # the record holds the lookup at the noise calibrate measured, the report says it
        assert sens["noise_rms_mm"] == pytest.approx(noise * 1e3)
        expected, _ = smallest_detectable_dent(noise)
        assert sens["smallest_dent_mm"] == (None if expected is None else pytest.approx(expected))
        assert "smallest dent seen" in report and f"{noise * 1e3:.2f} mm RMS" in report
        results[name] = (noise, sens["smallest_dent_mm"], report)
    # one D435 frame at 0.55 m: 2 mm dents are hidden, and the report says what to do
    noise, depth, report = results["d435"]
    assert depth is None or depth > 2.0
    assert "below what this station's depth noise" in report
    # averaging 8 frames and the D405 at 0.2 m are quieter and see smaller dents
    for quiet in ("d435x8", "d405"):
        assert results[quiet][0] < noise / 2
        assert (results[quiet][1] or np.inf) < (depth or np.inf)
