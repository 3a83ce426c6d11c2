"""The depth acquisition chain (issue 17): librealsense's filters on the sensor model's data,
the record beside the data, run.json and the bundle, and the station that repeats it.

Real parts only: librealsense's own filters (pyrealsense2 software devices), real training
and export, real `trd-edge run` / `record` processes on software-device recordings.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_export import write_toy_bundle  # noqa: E402
from rs_fixtures import make_recording, rs_or_skip  # noqa: E402

from edge.sources.acquisition import (  # noqa: E402
    Acquisition,
    AcquisitionMismatch,
    parse_filter_spec,
    read_acquisition,
    resolve_station_chain,
    station_options,
)
from edge.sources.options import FilterOptions, RealSenseOptions, SourceOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the record
def test_filter_spec_syntax() -> None:
    f = parse_filter_spec("spatial=0.6:30,temporal,hole_filling=2")
    assert (f.spatial, f.spatial_alpha, f.spatial_delta) == (True, 0.6, 30.0)
    assert (f.temporal, f.temporal_alpha, f.temporal_delta) == (True, 0.4, 20.0)
    assert f.hole_filling == 2
    assert parse_filter_spec("spatial+hole_filling").hole_filling == 1  # librealsense default
    assert not parse_filter_spec("none").any_enabled
    with pytest.raises(ValueError, match="filter 'median'"):
        parse_filter_spec("spatial,median")
    with pytest.raises(ValueError, match="hole_filling"):
        parse_filter_spec("hole_filling=7")


def test_data_without_a_record_maps_to_a_well_defined_chain(tmp_path: Path) -> None:
    none = read_acquisition(tmp_path / "cat")
    assert none.origin == "default" and not none.filtering
    calib = tmp_path / "old" / "calibration"
    calib.mkdir(parents=True)
    (calib / "sensor.json").write_text(json.dumps(
        {"sensor": {"name": "d435", "depth_unit_m": 0.001}, "average_frames": 8}))
    old = read_acquisition(tmp_path / "old")
    assert (old.origin, old.average_frames, old.filters.any_enabled) == ("sensor.json", 8, False)
    assert old.depth_units_m == 0.001
    (calib / "acquisition.json").write_text('{"filters": {"spatial": "maybe"}}')
    with pytest.raises(ValueError, match="not a valid acquisition record"):
        read_acquisition(tmp_path / "old")


# ---------------------------------------------------------------------------- synth --filters
def _background_rms(z: np.ndarray, margin: int = 14) -> float:
    """Plane-fit RMS (m) of the four corner blocks (the part sits in the middle)."""
    n = z.shape[0]
    v, u = np.mgrid[0:n, 0:n]
    corner = ((u < margin) | (u >= n - margin)) & ((v < margin) | (v >= n - margin)) & (z > 0)
    a = np.c_[u[corner], v[corner], np.ones(corner.sum())]
    coef, *_ = np.linalg.lstsq(a, z[corner], rcond=None)
    return float(np.std(z[corner] - a @ coef))


def _filtered_stills(filters: str, category="puck", distance=0.55, n_still=8, size=64):
    from edge.datasets.synthetic import SceneGenerator, _filter_chain, filter_scene

    gen = SceneGenerator(category, size, seed=3, sensor="d435", distance=distance)
    raw = gen.sample_still("good", n_still)
    with _filter_chain(gen, parse_filter_spec(filters)) as chain:
        chain.new_part()
        return raw, [filter_scene(s, chain, gen) for s in raw]


def test_spatial_and_temporal_filters_lower_the_sensor_models_noise() -> None:
    rs_or_skip()
    raw, spatial = _filtered_stills("spatial")
    _, both = _filtered_stills("spatial,temporal")
    before = np.mean([_background_rms(s.xyz[..., 2]) for s in raw])
    after = np.mean([_background_rms(s.xyz[..., 2]) for s in spatial])
    assert after < 0.85 * before, (before, after)
    # the temporal filter needs history: its last frame is quieter than spatial alone
    last = _background_rms(both[-1].xyz[..., 2])
    assert last < 0.8 * _background_rms(spatial[-1].xyz[..., 2])
    # the first frame of a part has no history: spatial only
    np.testing.assert_array_equal(both[0].xyz, spatial[0].xyz)
    # colour and mask are the camera's, untouched
    np.testing.assert_array_equal(both[-1].rgb, raw[-1].rgb)


def test_hole_filling_fills_the_holes_and_changes_nothing_else() -> None:
    rs_or_skip()
    raw, filled = _filtered_stills("hole_filling=1", category="block", distance=0.3, n_still=1)
    z0, z1 = raw[0].xyz[..., 2], filled[0].xyz[..., 2]
    holes = z0 == 0  # IR shadow beside the block and the generator's dropouts
    assert holes.sum() >= 10
    assert (z1 > 0).all()
    np.testing.assert_array_equal(z1[~holes], z0[~holes])
    # mode 1 fills with the farthest neighbour: a shadow hole takes the background's depth
    assert np.all(z1[holes] >= np.median(z0[z0 > 0]) - 0.05)


def test_synth_filters_same_seed_same_data_and_a_record(tmp_path: Path) -> None:
    rs_or_skip()
    import tifffile

    from edge.datasets.synthetic import TEMPORAL_STILL_FRAMES, write_dataset

    kw = dict(categories=("puck",), image_size=32, n_train=2, n_validation=1, n_test_good=1,
              n_test_per_defect=0, seed=4, progress=False, sensor="d435", distance=0.55)
    for name in ("a", "b"):
        write_dataset(tmp_path / name, filters=parse_filter_spec("spatial,temporal"), **kw)
    write_dataset(tmp_path / "raw", **kw)
    xyz = {n: tifffile.imread(tmp_path / n / "puck/train/good/xyz/001.tiff")
           for n in ("a", "b", "raw")}
    np.testing.assert_array_equal(xyz["a"], xyz["b"])
    assert not np.array_equal(xyz["a"], xyz["raw"])
    rec = read_acquisition(tmp_path / "a" / "puck")
    assert rec.origin == "recorded" and rec.source == "sensor-model"
    assert rec.filters.spatial and rec.filters.temporal and rec.average_frames == 1
    assert rec.frames_per_part == TEMPORAL_STILL_FRAMES and rec.depth_units_m == 0.001
    plain = read_acquisition(tmp_path / "raw" / "puck")
    assert plain.origin == "recorded" and not plain.filtering


def test_synth_refuses_decimation_and_the_ideal_sensor(tmp_path: Path) -> None:
    rs_or_skip()
    from edge.datasets.synthetic import write_dataset

    kw = dict(categories=("puck",), image_size=32, n_train=1, n_validation=0, n_test_good=0,
              n_test_per_defect=0, progress=False)
    with pytest.raises(ValueError, match="decimation 2 changes the depth resolution"):
        write_dataset(tmp_path / "d", sensor="d435", filters=FilterOptions(decimation=2), **kw)
    with pytest.raises(ValueError, match="--filters needs a --sensor"):
        write_dataset(tmp_path / "i", filters=FilterOptions(spatial=True), **kw)


# ---------------------------------------------------------------------------- record → train → bundle
def test_record_writes_the_chain_the_source_applied(tmp_path: Path, capsys) -> None:
    rs_or_skip()
    from edge.sources.record import run_record

    rec = make_recording(tmp_path / "rec.db3", n=5, size=32, seed=2)
    out = tmp_path / "data"

    def record(camera: str) -> int:
        for _ in range(3):  # 1 = the playback lost the file's start (rs_software): again
            rc = run_record(Namespace(camera=camera, out=str(out), frames=2, category="st",
                                      split="train", raw=False))
            if rc != 1:
                return rc
        return rc

    assert record(f"file:{rec.path}?spatial=true&hole_filling=2") == 0
    got = read_acquisition(out / "st")
    assert (got.source, got.filters.spatial, got.filters.hole_filling) == ("file", True, 2)
    assert got.depth_units_m == pytest.approx(0.001) and got.average_frames == 1
    # another chain into the same data set is refused before anything is written
    assert record(f"file:{rec.path}") == 2
    assert "one data set holds one depth acquisition chain" in capsys.readouterr().out
    assert len(list((out / "st/train/good/rgb").glob("*.png"))) == 2
    # a folder replay applies nothing, and says so
    assert run_record(Namespace(camera=f"folder:{out}", out=str(tmp_path / "f"), frames=1,
                                category="st", split="train", raw=False)) == 0
    folder = read_acquisition(tmp_path / "f" / "st")
    assert folder.source == "folder" and not folder.filtering


def test_training_records_the_chain_in_run_json_and_the_bundle(tmp_path: Path) -> None:
    rs_or_skip()
    pytest.importorskip("torch")
    from edge.bundle import load_bundle
    from edge.datasets.synthetic import write_dataset
    from export.onnx_export import export_bundle
    from trainer.run import TrainConfig, read_run_info
    from trainer.train import train

    data = tmp_path / "data"
    write_dataset(data, categories=("puck",), image_size=32, n_train=4, n_validation=2,
                  n_test_good=0, n_test_per_defect=0, seed=1, progress=False, sensor="d435",
                  distance=0.55, filters=parse_filter_spec("spatial=0.6:25,hole_filling"))
    cfg = TrainConfig(data_root=str(data), category="puck", backbone="resnet18", image_size=32,
                      epochs=1, batch_size=4, teacher_weights="random", seed=0)
    run = train(cfg, tmp_path / "run", progress=False)
    info = read_run_info(run)
    assert info.acquisition == read_acquisition(data / "puck")
    bundle = load_bundle(export_bundle(run, tmp_path / "bundle", check=False))
    chain = bundle.manifest.acquisition
    assert chain is not None and chain.filters == FilterOptions(
        spatial=True, spatial_alpha=0.6, spatial_delta=25, hole_filling=1)


# ---------------------------------------------------------------------------- the station
def test_station_decision_per_setting() -> None:
    chain = Acquisition(filters=FilterOptions(spatial=True, temporal=True), average_frames=8)
    # nothing set: all adopted
    d = resolve_station_chain(RealSenseOptions(), {}, chain)
    assert d.realsense.filters.spatial and d.realsense.filters.temporal
    assert d.realsense.average_frames == 8 and "adopted" in d.log_lines[0]
    # the same values set explicitly (config or spec) are fine; a parameter of a filter that
    # is on must match, one of a filter that is off does not matter
    same = RealSenseOptions.model_validate({"filters": {"spatial": True}, "average_frames": 8})
    assert resolve_station_chain(same, {"temporal": "true"}, chain).realsense.filters.temporal
    with pytest.raises(AcquisitionMismatch) as err:
        resolve_station_chain(same, {"spatial_alpha": "0.9", "average_frames": "4"}, chain)
    text = str(err.value)
    assert "spatial_alpha: the bundle 0.5, station 0.9" in text
    assert "average_frames: the bundle 8, station 4" in text
    assert "retrain" in text and "acquisition_check" in text
    # warn keeps the station's value and logs it; off adopts nothing
    warn = resolve_station_chain(same, {"average_frames": "4"}, chain, mode="warn")
    assert warn.realsense.average_frames == 8  # the spec override is applied by open_source
    assert warn.log_lines[0].startswith("WARNING")
    assert resolve_station_chain(RealSenseOptions(), {}, chain, mode="off").realsense == \
        RealSenseOptions()
    # an older bundle without the record: nothing checked, nothing adopted
    bare = RealSenseOptions.model_validate({"filters": {"decimation": 2}})
    assert resolve_station_chain(bare, {}, None).realsense is bare


def test_non_realsense_sources_are_not_checked(caplog) -> None:
    chain = Acquisition(filters=FilterOptions(spatial=True))
    opts = SourceOptions()
    with caplog.at_level(logging.INFO, logger="edge.sources.acquisition"):
        assert station_options(opts, "synthetic:puck", chain) is opts
    assert "not checked" in caplog.text and "spatial(0.5, 20)" in caplog.text


def _bundle_with_chain(folder: Path, chain: Acquisition | None) -> Path:
    write_toy_bundle(folder, size=32, fp16=False)
    if chain is not None:
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["acquisition"] = json.loads(chain.model_dump_json())
        path.write_text(json.dumps(manifest))
    return folder


def _run(bundle: Path, camera: str, tmp_path: Path, *extra: str):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-m", "edge.cli", "run", "--bundle", str(bundle), "--camera",
             camera, "--mqtt", "none", "--quiet", "--outbox", str(tmp_path / "outbox.sqlite3"),
             *extra],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
        )
        # 5 = no verdict: playback rarely loses a short recording's framesets at start-up
        # (edge.sources.rs_software); that race is not what these tests check
        if proc.returncode != 5:
            break
    return proc


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    rs_or_skip()
    tmp = tmp_path_factory.mktemp("station")
    rec = make_recording(tmp / "rec.db3", n=8, size=32, seed=6)
    chain = Acquisition(source="file", filters=FilterOptions(spatial=True, hole_filling=1))
    return rec, _bundle_with_chain(tmp / "filtered", chain), _bundle_with_chain(tmp / "old", None)


def test_station_adopts_the_bundles_chain_on_a_recording(station, caplog) -> None:
    from edge.sources import open_source

    rec, bundle, _ = station
    from edge.bundle import load_bundle

    chain = load_bundle(bundle).manifest.acquisition
    with caplog.at_level(logging.INFO, logger="edge.sources.acquisition"):
        options = station_options(SourceOptions(), f"file:{rec.path}", chain)
    assert "adopted spatial=on, hole_filling=1" in caplog.text
    for _ in range(3):  # playback rarely loses a short file's start (rs_software)
        source = open_source(f"file:{rec.path}", options)
        assert source.options.filters.spatial and source.options.filters.hole_filling == 1
        with source:
            frames = list(source)
        if frames:
            break
    assert frames
    for frame in frames:  # the filters ran: no holes left, depth changed
        truth = rec.scenes[frame.frame_number].xyz[..., 2]
        assert (frame.xyz[..., 2] > 0).all() and (truth == 0).any()


def test_run_adopts_refuses_or_warns(station, tmp_path: Path) -> None:
    rec, bundle, old = station
    camera = f"file:{rec.path}"
    ok = _run(bundle, camera, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "depth chain from bundle filtered: spatial(0.5, 20) → hole_filling 1" in ok.stderr
    refused = _run(bundle, camera + "?hole_filling=2&spatial=false", tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = refused.stdout + refused.stderr
    assert "spatial: bundle filtered on, station off" in said
    assert "hole_filling: bundle filtered 1, station 2" in said
    warned = _run(bundle, camera + "?spatial=false&acquisition_check=warn", tmp_path)
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "acquisition_check: warn" in warned.stderr
    # an older bundle has no record: any station settings run, unchecked
    unchecked = _run(old, camera + "?spatial=true", tmp_path)
    assert unchecked.returncode == 0, unchecked.stdout + unchecked.stderr
    assert "depth chain" not in unchecked.stderr


def test_calibrate_and_bench_repeat_the_check(station) -> None:
    from calibration.cli import CalibrationError, calibrate
    from edge.commands.bench import bench_backend

    rec, bundle, _ = station
    with pytest.raises(CalibrationError, match="spatial: bundle filtered on, station off"):
        calibrate(bundle, f"file:{rec.path}?spatial=false", frames=50, backend="onnxruntime",
                  write=False)
    with pytest.raises(AcquisitionMismatch, match="hole_filling: bundle filtered 1, station 0"):
        bench_backend(bundle, "onnxruntime", f"file:{rec.path}?hole_filling=0", frames=1,
                      warmup=0, publish=None)


def test_settings_from_the_config_file_count_as_set(tmp_path: Path) -> None:
    from edge.config import load_config

    path = tmp_path / "station.yaml"
    path.write_text("camera:\n  source: realsense\n  realsense:\n    filters:\n"
                    "      temporal: true\n")
    config = load_config(path)
    chain = Acquisition(filters=FilterOptions(spatial=True), average_frames=4)
    with pytest.raises(AcquisitionMismatch, match="temporal: the bundle off, station on"):
        resolve_station_chain(config.camera.realsense, {}, chain)
    # the defaults a config leaves alone are not settings: adopted
    adopted = resolve_station_chain(load_config(None).camera.realsense, {}, chain)
    assert adopted.adopted == {"spatial": True, "average_frames": 4}


def test_synth_filters_a_frame_exactly_as_the_station_does(tmp_path: Path) -> None:
    """The same Z16 frames: `trd-edge synth --filters` (in memory) and the station reading a
    recording of them with the same filters (rs.pipeline playback) give identical depth —
    when the recording's sensor is a stereo sensor like a D400 (stereo_baseline); without
    it librealsense filters in the depth domain and the result differs."""
    rs_or_skip()
    from edge.datasets.synthetic import SceneGenerator, _filter_chain
    from edge.frames import Intrinsics
    from edge.sources import open_source
    from edge.sources.rs_software import write_recording, xyz_to_depth

    gen = SceneGenerator("puck", 32, seed=1, sensor="d435", distance=0.55)
    scenes = [gen.sample("good") for _ in range(6)]
    filters = FilterOptions(spatial=True, hole_filling=1)
    intr = Intrinsics(fx=gen.f, fy=gen.f, cx=gen.c, cy=gen.c, width=32, height=32,
                      depth_scale=0.001)
    items = [(s.rgb, xyz_to_depth(s.xyz, 0.001), i) for i, s in enumerate(scenes)]
    baseline = gen.sensor.spec.baseline_m * 1000.0 / gen.sensor.scale
    options = SourceOptions(realsense=RealSenseOptions(filters=filters))
    with _filter_chain(gen, filters) as chain:
        for name, stereo in (("stereo", baseline), ("depth-only", None)):
            path = tmp_path / f"{name}.db3"
            write_recording(path, items, intr, stereo_baseline_mm=stereo)
            for _ in range(3):  # playback rarely loses a short file's start (rs_software)
                with open_source(f"file:{path}", options) as source:
                    frames = list(source)
                if len(frames) >= 4:
                    break
            assert len(frames) >= 4
            diffs = []
            for frame in frames:
                chain.new_part()
                want = chain(items[frame.frame_number][1]).astype(int)
                got = np.rint(frame.xyz[..., 2] / 0.001).astype(int)
                diffs.append(np.abs(got - want).max())
            if stereo:
                assert max(diffs) == 0
            else:
                assert max(diffs) > 0


def test_doctor_reports_the_depth_chain(station, tmp_path: Path) -> None:
    from edge.bundle import load_bundle
    from edge.commands.doctor import check_acquisition
    from edge.config import load_config

    rec, bundle, old = station
    differing = load_config(None, overrides={"camera.source": f"file:{rec.path}?spatial=false"})
    failed = check_acquisition(differing, load_bundle(bundle))
    assert failed.status == "fail" and "spatial: bundle filtered on, station off" in failed.detail
    plain = load_config(None, overrides={"camera.source": f"file:{rec.path}"})
    assert check_acquisition(plain, load_bundle(bundle)).status == "ok"
    assert "not checked" in check_acquisition(differing, load_bundle(old)).detail
