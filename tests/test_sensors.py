"""Stereo camera models (edge/datasets/sensors.py) and `trd-edge synth --sensor`."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.geometry import plane_noise
from edge.datasets.sensors import (
    MAX_STATION_FRAMES,
    SENSORS,
    STATION_NOISE_GOAL_M,
    StereoSensor,
    get_sensor,
    station_average_frames,
)
from edge.datasets.synthetic import (
    DEFECT_TYPES,
    SceneGenerator,
    add_synth_arguments,
    run_synth,
    write_dataset,
)

N = 128


def _plane_sensor(name: str, z: float, unit: float | None = None) -> StereoSensor:
    """The sensor on a 128² grid that spans 12 cm at ``z`` (as `SceneGenerator` does)."""
    return StereoSensor(get_sensor(name, depth_unit_m=unit), N * z / 0.12)


def _measure(sensor: StereoSensor, z_true: np.ndarray, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sensor.depth(z_true, sensor.draw(rng, z_true.shape)) for _ in range(frames)]


def _step_scene(z_bg: float = 0.55, height: float = 0.02) -> tuple[np.ndarray, slice, slice]:
    """A fronto-parallel support with a raised block that has vertical walls."""
    z = np.full((N, N), z_bg)
    rows, cols = slice(40, 80), slice(50, 90)
    z[rows, cols] = z_bg - height
    return z, rows, cols


# ------------------------------------------------------------------ the datasheet numbers
def test_formula_gives_the_datasheet_numbers() -> None:
    d435, d405 = SENSORS["d435"], SENSORS["d405"]
    assert d435.focal_px == pytest.approx(424 / math.tan(math.radians(43.5)))  # ≈ 447 px
    # Intel: z²·subpixel/(f·B); D435 at 0.55 m, 848×480 ≈ 1.1 mm
    assert d435.depth_rms(0.55) == pytest.approx(0.55**2 * 0.08 / (d435.focal_px * 0.05))
    assert 1.0e-3 < d435.depth_rms(0.55) < 1.2e-3
    # D405 (18 mm baseline, 1280×720) at 0.2 m: ≈ 0.26 mm; 0.1 mm only nearer, ≈ 0.12 m
    assert 0.24e-3 < d405.depth_rms(0.2) < 0.28e-3 and d405.depth_rms(0.125) < 0.105e-3
    assert d435.depth_unit_m == 0.001 and d405.depth_unit_m == 0.0001
    assert get_sensor("ideal") is None and get_sensor(None) is None
    with pytest.raises(ValueError, match="unknown sensor"):
        get_sensor("kinect")
    with pytest.raises(ValueError, match="positive"):
        get_sensor("d435", depth_unit_m=0)


@pytest.mark.parametrize(("name", "z"), [("d435", 0.55), ("d435", 0.35), ("d405", 0.2)])
def test_flat_plane_rms_matches_the_formula(name: str, z: float) -> None:
    sensor = _plane_sensor(name, z)
    plane = np.full((N, N), z)
    frames = _measure(sensor, plane, 8)
    resid = np.concatenate([(f - z).ravel() for f in frames])
    assert all((f > 0).all() for f in frames)  # a flat plane has no holes
    assert np.sqrt(np.mean(resid**2)) == pytest.approx(sensor.expected_rms(z), rel=0.08)
    assert abs(resid.mean()) < 0.1 * sensor.expected_rms(z)  # noise, not a bias
    # a plane fit (as calibrate measures) gives the same number
    fitted = [plane_noise(np.dstack([0 * f, 0 * f, f]).astype(np.float32) + _rays(f))[0]
              for f in frames]
    assert np.median(fitted) == pytest.approx(sensor.expected_rms(z), rel=0.1)


def _rays(z: np.ndarray) -> np.ndarray:
    """x, y of a pinhole camera for depth ``z`` (so a fitted plane has rays to use)."""
    v, u = np.mgrid[0 : z.shape[0], 0 : z.shape[1]]
    f, c = 500.0, (z.shape[0] - 1) / 2
    return np.dstack([(u - c) / f * z, (v - c) / f * z, 0 * z]).astype(np.float32)


def test_noise_grows_with_distance_squared() -> None:
    rms = {}
    for z in (0.35, 0.7):
        sensor = _plane_sensor("d435", z, unit=1e-7)  # no quantisation
        frames = _measure(sensor, np.full((N, N), z), 6)
        rms[z] = float(np.sqrt(np.mean([np.mean((f - z) ** 2) for f in frames])))
        assert rms[z] == pytest.approx(float(sensor.spec.depth_rms(z)), rel=0.08)
    assert rms[0.7] / rms[0.35] == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize(("name", "unit"), [("d435", 0.001), ("d405", 0.0001), ("d435", 0.0005)])
def test_depth_is_quantised_to_the_depth_unit(name: str, unit: float) -> None:
    gen = SceneGenerator("bracket", 64, seed=3, sensor=get_sensor(name, depth_unit_m=unit),
                         distance=0.3)
    z = gen.sample("geometry").xyz[..., 2].astype(np.float64)
    steps = z[z > 0] / unit
    assert np.allclose(steps, np.round(steps), atol=2e-3)
    assert np.min(np.diff(np.unique(np.round(steps)))) == 1  # consecutive units occur


def test_noise_is_correlated_over_the_matching_window() -> None:
    sensor = _plane_sensor("d435", 0.55, unit=1e-7)
    frames = _measure(sensor, np.full((N, N), 0.55), 6, seed=1)
    acf = np.zeros(20)
    for f in frames:
        r = f - 0.55
        r = r - r.mean()
        acf += [np.mean(r[:, : r.shape[1] - k] * r[:, k:]) for k in range(20)]
    acf /= acf[0]
    expected = sensor.correlation_px  # 1/e lag = 2σ_k ≈ 6.8 px here
    lag = np.interp(-1 / math.e, -acf, np.arange(20.0))  # where it falls to 1/e
    assert acf[1] > 0.9 and lag == pytest.approx(expected, rel=0.15)
    # the Gaussian model: ρ(k) = exp(−k²/4σ²)
    k = np.arange(10)
    assert np.allclose(acf[:10], np.exp(-(k**2) / expected**2), atol=0.08)


# ------------------------------------------------------------------ holes and rims
def test_shadow_holes_only_beside_height_steps() -> None:
    sensor = _plane_sensor("d435", 0.55)
    z, rows, cols = _step_scene()
    out = sensor.depth(z, sensor.draw(np.random.default_rng(0), z.shape))
    holes = out == 0
    # band width = disparity jump on the grid: f_grid·B·(1/z_near − 1/z_far)
    band = sensor.grid_focal_px * 0.05 * (1 / 0.53 - 1 / 0.55)
    assert 1.5 < band < 3.5
    expect = np.zeros_like(holes)
    expect[rows, cols.start - math.floor(band) : cols.start] = True  # whole pixels hidden
    assert np.array_equal(holes, expect)  # exactly the band left of the block, nothing else
    # the same block 2 mm high casts no shadow wider than a pixel: no holes at all
    low, *_ = _step_scene(height=0.002)
    assert (sensor.depth(low, sensor.draw(np.random.default_rng(0), z.shape)) > 0).all()


def test_flying_pixels_only_at_rims() -> None:
    sensor = _plane_sensor("d435", 0.55)
    z, rows, cols = _step_scene()
    rng = np.random.default_rng(2)
    sigma = sensor.expected_rms(0.55)
    between = np.zeros((N, N), bool)
    for _ in range(4):
        out = sensor.depth(z, sensor.draw(rng, z.shape))
        between |= (out > 0.53 + 5 * sigma) & (out < 0.55 - 5 * sigma)
    near_step = cv2.dilate(
        (cv2.morphologyEx(z, cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0).astype(np.uint8),
        np.ones((9, 9), np.uint8),
    ) > 0
    assert between.sum() > 20  # the rims do fly ...
    assert not (between & ~near_step).any()  # ... and nothing else does


def test_exposure_and_white_balance_vary_per_scene() -> None:
    sensor = _plane_sensor("d435", 0.55)
    rng = np.random.default_rng(0)
    grey = np.full((4, 4, 3), 0.5, np.float32)
    gains = np.array([sensor.colour(grey, sensor.draw(rng, (4, 4)))[0, 0] / 0.5
                      for _ in range(400)])
    assert np.std(np.log(gains[:, 1])) == pytest.approx(sensor.spec.exposure_sd, rel=0.15)
    wb = np.log(gains[:, [0, 2]] / gains[:, [1]])
    assert np.std(wb, axis=0) == pytest.approx([sensor.spec.white_balance_sd] * 2, rel=0.15)


# ------------------------------------------------------------------ the generator
# Hashes of SceneGenerator(cat, 64, seed=3).sample_with_twin(d) written before sensors existed
# (commit d82cd11): `--sensor ideal` must keep writing the same data (bundles, tests and
# measurements depend on it). Recompute them with that commit if OpenCV changes its kernels.
GOLDEN = {
    "puck": ["0f41dfb31d092a54", "182622757ac51b24", "90ced34569fe29ee", "5f6c3ddde8d68d1d"],
    "bracket": ["aa29de61eae76095", "2971ce2db3fad4d7", "d9b6de4c4445cc57", "b055c89fb086e7b2"],
}


@pytest.mark.parametrize("category", list(GOLDEN))
@pytest.mark.parametrize("sensor", [None, "ideal"])
def test_ideal_sensor_is_bit_identical_to_the_data_before_sensors(category, sensor) -> None:
    gen = SceneGenerator(category, 64, seed=3, sensor=sensor)
    got = []
    for d in ("good", *DEFECT_TYPES):
        s, t = gen.sample_with_twin(d)
        m = hashlib.sha256()
        for a in (s.rgb, s.xyz, s.mask, t.rgb, t.xyz):
            m.update(np.ascontiguousarray(a).tobytes())
        got.append(m.hexdigest()[:16])
    assert got == GOLDEN[category]


def test_sensor_changes_the_camera_not_the_scene() -> None:
    ideal = SceneGenerator("puck", 64, seed=4, distance=0.55)
    real = SceneGenerator("puck", 64, seed=4, sensor="d435", distance=0.55)
    for d in ("good", *DEFECT_TYPES):
        a, b = ideal.sample(d), real.sample(d)
        assert np.array_equal(a.mask, b.mask)  # same parts, poses and defects
        ratio = b.rgb.astype(float).mean() / a.rgb.astype(float).mean()
        assert ratio != 1.0 and abs(math.log(ratio)) < 0.4  # exposure moved, moderately
        za, zb = a.xyz[..., 2], b.xyz[..., 2]
        ok = (za > 0) & (zb > 0)
        assert np.median(np.abs(za - zb)[ok]) < 2e-3 and np.std((za - zb)[ok]) > 5e-4


def test_defect_and_twin_differ_only_near_the_mask() -> None:
    gen = SceneGenerator("bracket", 64, seed=6, sensor="d435", distance=0.55)
    for d in DEFECT_TYPES:
        s, t = gen.sample_with_twin(d)
        near = cv2.dilate(s.mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert np.array_equal(s.xyz[~near], t.xyz[~near])
        assert np.array_equal(s.rgb[~s.mask], t.rgb[~s.mask])


def test_still_frames_share_the_scene_but_not_the_noise() -> None:
    frames = SceneGenerator("puck", 64, seed=1, sensor="d435", distance=0.55).sample_still(
        "geometry", 3)
    assert all(np.array_equal(f.mask, frames[0].mask) for f in frames)
    assert not np.array_equal(frames[0].xyz, frames[1].xyz)
    rgb = [f.rgb.astype(float).mean() for f in frames]
    assert max(rgb) - min(rgb) < 0.2  # same exposure: only the sensor's pixel noise differs
    ideal = SceneGenerator("puck", 64, seed=1).sample_still("good", 2)
    assert np.array_equal(ideal[0].xyz, ideal[1].xyz)


def test_synth_cli_with_a_sensor(tmp_path: Path, capsys) -> None:
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args([
        "--out", str(tmp_path / "d"), "--categories", "puck,bracket", "--image-size", "32",
        "--n-train", "1", "--n-validation", "0", "--n-test-good", "0",
        "--n-test-per-defect", "1", "--sensor", "d405", "--distance", "puck=0.2",
    ])
    args.progress = False
    assert run_synth(args) == 0
    puck = json.loads((tmp_path / "d/puck/calibration/sensor.json").read_text())
    assert puck["sensor"]["name"] == "d405" and puck["distance_m"] == 0.2
    assert puck["plane_rms_m"] == pytest.approx(SENSORS["d405"].plane_rms(0.2))
    bracket = json.loads((tmp_path / "d/bracket/calibration/sensor.json").read_text())
    assert 0.46 <= bracket["distance_m"] <= 0.54  # its own station distance
    out = capsys.readouterr().out
    assert "puck: d405 at 0.200 m" in out and "outside the d405's ideal" in out  # bracket
    bad = parser.parse_args(["--out", str(tmp_path / "x"), "--depth-unit", "0.0001"])
    assert run_synth(bad) == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--distance", "near"])


def test_synth_average_frames_writes_the_station_mean(tmp_path: Path) -> None:
    from calibration.geometry import measure_xyz
    from edge.datasets.dataset_io import list_samples, load_raw
    from edge.datasets.synthetic import write_dataset

    rms, clouds = {}, {}
    for n in (1, 4):
        root = tmp_path / f"avg{n}"
        write_dataset(root, ("puck",), 64, n_train=4, n_validation=0, n_test_good=0,
                      n_test_per_defect=0, progress=False, sensor="d435", distance=0.55,
                      average_frames=n)
        samples = [load_raw(r) for r in list_samples(str(root), "puck", "train")]
        rms[n] = np.median([measure_xyz(s.xyz).depth_noise_rms_m for s in samples])
        clouds[n] = [s.xyz[..., 2] for s in samples]
    assert rms[1] / rms[4] == pytest.approx(2.0, rel=0.2)
    for a, b in zip(clouds[1], clouds[4], strict=True):  # the same parts, only quieter
        assert np.median(np.abs(a - b)[(a > 0) & (b > 0)]) < 1.5e-3
    sensor = json.loads((tmp_path / "avg4/puck/calibration/sensor.json").read_text())
    assert sensor["average_frames"] == 4


def test_dent_depth_sets_the_geometry_defect_and_keeps_the_scene() -> None:
    for depth in (0.001, 0.005):
        gen = SceneGenerator("puck", 64, seed=8, dent_depth=(depth, depth))
        ref = SceneGenerator("puck", 64, seed=8)
        for _ in range(3):
            (s, twin), (r, _) = gen.sample_with_twin("geometry"), ref.sample_with_twin("geometry")
            assert np.array_equal(s.mask, r.mask)  # same part, same defect place
            dz = np.abs(s.xyz[..., 2] - twin.xyz[..., 2])[s.mask]
            assert dz.max() == pytest.approx(depth, rel=0.05)  # the cap's full height
    with pytest.raises(ValueError, match="dent_depth"):
        SceneGenerator("puck", 64, dent_depth=(0.003, 0.001))
    parser = add_synth_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--out", "x", "--dent-depth", "3"]).dent_depth == (0.003, 0.003)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--dent-depth", "5,1"])


def test_dent_diameter_sets_the_geometry_defect_and_keeps_the_scene() -> None:
    for width in (0.005, 0.020):
        gen = SceneGenerator("puck", 64, seed=8, distance=0.55, dent_diameter=(width, width))
        ref = SceneGenerator("puck", 64, seed=8, distance=0.55)
        for _ in range(3):
            (s, twin), (_, rtwin) = gen.sample_with_twin("geometry"), ref.sample_with_twin("geometry")
            assert np.array_equal(twin.xyz, rtwin.xyz)  # the same part, pose and noise
            # the dent's area is that of a circle of the diameter (px span z/f m on the top)
            z = float(np.median(twin.xyz[..., 2][s.mask]))
            got = 2 * np.sqrt(s.mask.sum() / np.pi) * z / gen.f
            assert got == pytest.approx(width, rel=0.12)  # 64 px: 2.5-10 px across
        # the random stream stays aligned: the next good part is the same with either size
        assert np.array_equal(gen.sample("good").xyz, ref.sample("good").xyz)
    with pytest.raises(ValueError, match="dent_diameter"):
        SceneGenerator("puck", 64, dent_diameter=(0.02, 0.01))
    parser = add_synth_arguments(argparse.ArgumentParser())
    assert parser.parse_args(["--out", "x"]).dent_diameter is None
    assert parser.parse_args(["--out", "x", "--dent-diameter", "5,20"]).dent_diameter == (
        0.005, 0.02)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--dent-diameter", "20,5"])


def test_a_data_set_of_one_defect_type_has_the_same_images(tmp_path: Path) -> None:
    kw = dict(categories=("puck",), image_size=64, n_train=0, n_validation=0, n_test_good=0,
              seed=2, progress=False, sensor="d435", distance=0.55)
    write_dataset(tmp_path / "all", n_test_per_defect=3, **kw)
    write_dataset(tmp_path / "geo", n_test_per_defect={"geometry": 3}, **kw)
    assert sorted(p.name for p in (tmp_path / "geo/puck/test").iterdir()) == ["geometry"]
    for f in sorted((tmp_path / "all/puck/test/geometry").rglob("*.*")):
        rel = f.relative_to(tmp_path / "all")
        assert f.read_bytes() == (tmp_path / "geo" / rel).read_bytes()
    with pytest.raises(ValueError, match="unknown defect types"):
        write_dataset(tmp_path / "bad", n_test_per_defect={"dent": 1}, **kw)


def test_station_average_frames_follows_the_noise() -> None:
    d435, d405 = SENSORS["d435"], SENSORS["d405"]
    assert station_average_frames(d435, 0.55) == 32  # 1.12 mm → 0.20 mm
    assert station_average_frames(d405, 0.2) == 2  # 0.27 mm
    assert station_average_frames(d405, 0.125) == 1  # already 0.11 mm
    assert station_average_frames(d435, 0.35) == 8
    assert station_average_frames(d435, 1.5) == MAX_STATION_FRAMES  # capped, however noisy
    for spec, z in ((d435, 0.55), (d405, 0.2), (d435, 0.35)):
        n = station_average_frames(spec, z)
        assert spec.plane_rms(z) / n**0.5 <= STATION_NOISE_GOAL_M  # the goal is met
        if n > 1:  # and half as many frames would not meet it
            assert spec.plane_rms(z) / (n / 2) ** 0.5 > STATION_NOISE_GOAL_M


def test_synth_writes_the_station_default_averaging(tmp_path: Path, capsys) -> None:
    """Without --average-frames a camera's data is what its default station records."""
    parser = add_synth_arguments(argparse.ArgumentParser())
    common = ["--categories", "puck,bracket", "--image-size", "32", "--n-train", "1",
              "--n-validation", "0", "--n-test-good", "0", "--n-test-per-defect", "0"]
    args = parser.parse_args(["--out", str(tmp_path / "a"), *common, "--sensor", "d435",
                              "--distance", "puck=0.55,bracket=0.35"])
    args.progress = False
    assert run_synth(args) == 0
    frames = {c: json.loads((tmp_path / f"a/{c}/calibration/sensor.json").read_text())
              ["average_frames"] for c in ("puck", "bracket")}
    assert frames == {"puck": 32, "bracket": 8}  # per category, from its own distance
    acq = json.loads((tmp_path / "a/puck/calibration/acquisition.json").read_text())
    assert acq["average_frames"] == 32  # the bundle will record it, the station repeat it
    assert "mean of 32 still frames (0.20 mm, the station default)" in capsys.readouterr().out
    args = parser.parse_args(["--out", str(tmp_path / "b"), *common, "--sensor", "d435",
                              "--distance", "0.55", "--average-frames", "1"])
    args.progress = False
    assert run_synth(args) == 0  # a flag still says what the station does
    assert json.loads((tmp_path / "b/puck/calibration/sensor.json").read_text())[
        "average_frames"] == 1
