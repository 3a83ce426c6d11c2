"""`trd-edge calibrate` measures the station's depth noise (calibration/geometry.py), tested on
software-device recordings made through the stereo camera model (edge/datasets/sensors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import toy_bundle
from rs_fixtures import rs_or_skip

from calibration.cli import calibrate
from calibration.geometry import compare_geometry, measure_xyz
from edge.datasets.synthetic import SceneGenerator
from edge.frames import Intrinsics


def _record(path: Path, sensor: str, distance: float, n: int = 24) -> SceneGenerator:
    from edge.sources.rs_software import write_recording, xyz_to_depth

    gen = SceneGenerator("puck", 64, seed=7, sensor=sensor, distance=distance)
    unit = gen.sensor.spec.depth_unit_m
    fx, fy, cx, cy = gen.intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=64, height=64, depth_scale=unit)
    items = []
    for i in range(n):
        s = gen.sample("good")
        items.append((s.rgb, xyz_to_depth(s.xyz, unit), i))
    write_recording(path, items, intr, depth_units=unit, fps=30)
    return gen


@pytest.mark.parametrize(("sensor", "distance"), [("d435", 0.55), ("d405", 0.2)])
def test_calibrate_records_the_depth_noise_the_camera_has(
    tmp_path: Path, sensor: str, distance: float
) -> None:
    rs_or_skip()
    gen = _record(tmp_path / "station.db3", sensor, distance)
    bundle = toy_bundle(tmp_path / "toy")
    res = calibrate(bundle, f"file:{tmp_path / 'station.db3'}", 20, target_fpr=0.05,
                    compare_training=False)
    station = res.record.station
    assert station is not None and station.depth_noise_rms_m is not None
    model = gen.sensor.expected_rms(distance)  # D435 1.12 mm, D405 0.27 mm (incl. units)
    assert station.depth_noise_rms_m == pytest.approx(model, rel=0.25)
    assert 0.0 <= station.holes_ratio < 0.05
    saved = json.loads((bundle / "calibration" / "station.json").read_text())
    assert saved["station"]["depth_noise_rms_m"] == pytest.approx(station.depth_noise_rms_m)
    report = (bundle / "calibration" / "report.txt").read_text()
    assert f"{station.depth_noise_rms_m * 1e3:.3f} mm" in report


def test_noisier_station_than_training_is_a_warning() -> None:
    quiet = SceneGenerator("puck", 64, seed=1, sensor="d405", distance=0.2)
    noisy = SceneGenerator("puck", 64, seed=1, sensor="d435", distance=0.55)
    q = [measure_xyz(quiet.sample().xyz) for _ in range(3)]
    n = [measure_xyz(noisy.sample().xyz) for _ in range(3)]
    assert all(g.depth_noise_rms_m is not None for g in q + n)
    assert np.median([g.depth_noise_rms_m for g in n]) > 3 * np.median(
        [g.depth_noise_rms_m for g in q])
    from calibration.geometry import GeometryAccumulator

    def scene(frames):
        acc = GeometryAccumulator()
        acc.frames = frames
        return acc.result()

    training, station = scene(q), scene(n)
    assert any("depth noise" in w for w in compare_geometry(station, training))
    assert not any("depth noise" in w for w in compare_geometry(training, training))
