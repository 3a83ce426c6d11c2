"""Scoring on the part only (``scoring.region: part``): the score rule, the station, calibrate,
the manifest, eval and training's default (docs/any-shape.md, "Scoring on the part").

Station and calibrate tests run the toy ONNX bundle (``conftest_export.write_toy_bundle``: a
real onnxruntime session whose RGB map is the squared normalised colour, so a bright patch
raises it where it lies) on the synthetic camera's frames; its part lies in the middle of the
frame, the corner is background.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest_calibration import toy_bundle

from calibration.cli import calibrate
from edge.backends import create_backend
from edge.bundle import Manifest, load_bundle
from edge.comms.sinks import make_verdict
from edge.comms.verdict import ModelRef
from edge.frames import Frame
from edge.inspector import Inspector
from edge.processing.scoring import ScoreStats, foreground_region, image_scores, score_maps
from edge.sources import open_source

CAMERA = "synthetic?size=64&defect_rate=0&seed=1"
STATS = ScoreStats(rgb_mean=0.0, rgb_std=1.0, x3d_mean=0.0, x3d_std=1.0, n_maps=1)


def _region_bundle(folder: Path, region: str | None) -> Path:
    """The toy bundle with ``scoring.region`` set (None: the key left out, an old manifest)."""
    b = toy_bundle(folder)
    path = b / "manifest.json"
    m = json.loads(path.read_text())
    m["scoring"].pop("region", None)
    if region is not None:
        m["scoring"]["region"] = region
    path.write_text(json.dumps(m, indent=2))
    return b


def _inspector(bundle_dir: Path) -> Inspector:
    bundle = load_bundle(bundle_dir)
    return Inspector(bundle, create_backend("onnxruntime", bundle))


def _frames(n: int, spec: str = CAMERA) -> list[Frame]:
    with open_source(f"{spec}&max_frames={n}") as src:
        return list(src)


def _painted(frame: Frame, rows: slice, cols: slice) -> Frame:
    rgb = frame.rgb.copy()
    rgb[rows, cols] = 255  # white: far from the ImageNet mean, the toy RGB map peaks there
    return dataclasses.replace(frame, rgb=rgb)


# --------------------------------------------------------------------------- the score rule


def test_score_maps_region_ignores_the_outside_and_keeps_an_empty_region_whole() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 32)).astype(np.float32)
    b = rng.random((3, 32, 32)).astype(np.float32)
    a[:, 2, 2] = 50.0  # a hot spot outside the region of maps 0 and 1
    region = np.zeros((3, 32, 32), bool)
    region[0, 8:24, 8:24] = True
    region[1, 8:24, 8:24] = True
    a[1, 16, 16] = 40.0  # and one inside map 1's region
    whole = score_maps(a, b, STATS)
    part = score_maps(a, b, STATS, region=region)
    s_whole, s_part = image_scores(whole.fused), image_scores(part.fused)
    assert s_whole[0] > 20 and s_part[0] < 5  # the outside spot no longer sets the score
    assert s_part[0] == pytest.approx(whole.fused[0][region[0]].max())
    assert s_part[1] > 15  # a spot on the part still does
    # outside: the region's own minimum (heatmaps and defect regions see the part only)
    assert np.all(part.fused[0][~region[0]] == part.fused[0][region[0]].min())
    assert np.all(part.rgb[0][~region[0]] == part.rgb[0][region[0]].min())
    # map 2 has no part: scored whole, and flagged
    assert np.array_equal(part.fused[2], whole.fused[2])
    assert part.on_frame.tolist() == [False, False, True] and whole.on_frame is None
    with pytest.raises(ValueError, match="does not match the maps"):
        score_maps(a, b, STATS, region=region[:, :16])


def test_a_hole_through_the_part_is_scored_as_the_part() -> None:
    """A hole punched through a part is background to the plane fit, yet it is the defect:
    the part region is the foreground with its enclosed holes filled; a bay open to the frame's
    edge stays out."""
    fg = np.zeros((32, 32), bool)
    fg[6:26, 6:26] = True
    fg[12:16, 12:16] = False  # a hole through the part
    fg[0:4, 20:32] = True
    fg[0, 24:28] = False  # a notch at the frame's edge: open, not enclosed
    a = np.zeros((1, 32, 32), np.float32)
    a[0, 13, 13] = 30.0  # the hole's rim and floor light up
    a[0, 0, 25] = 50.0  # the open notch: background
    region = foreground_region("part", fg)
    assert region[12:16, 12:16].all() and not region[0, 24:28].any()
    assert foreground_region("frame", fg) is None
    part = score_maps(a, np.zeros_like(a), STATS, region=region)
    assert image_scores(part.fused)[0] == pytest.approx(score_maps(a, a * 0, STATS).fused[0, 13, 13])
    with pytest.raises(ValueError, match="foreground"):
        foreground_region("part", None)


# --------------------------------------------------------------------------- the station


def test_station_part_region_ignores_a_stain_on_the_background(tmp_path: Path) -> None:
    part = _inspector(_region_bundle(tmp_path / "part", "part"))
    frame_ins = _inspector(_region_bundle(tmp_path / "frame", "frame"))
    raised_frame = 0
    for f in _frames(4):
        sample, _ = part.prepare(f)
        fg = sample.foreground  # 32² model pixels over the 64² frame
        assert fg.any() and not fg[:6, :6].any()  # precondition: the corner is background
        corner = _painted(f, slice(0, 10), slice(0, 10))
        on_part = _painted(f, slice(30, 36), slice(30, 36))  # the middle: on the part
        assert part.inspect(corner).image_score == pytest.approx(part.inspect(f).image_score)
        assert part.inspect(on_part).image_score > part.inspect(f).image_score + 1.0
        raised_frame += frame_ins.inspect(corner).image_score > frame_ins.inspect(f).image_score + 1.0
    assert raised_frame == 4  # the whole-frame score is set by the stain on the background


def test_old_manifest_scores_the_frame(tmp_path: Path) -> None:
    old = _inspector(_region_bundle(tmp_path / "old", None))
    assert old.region == "frame"
    new = _inspector(_region_bundle(tmp_path / "frame", "frame"))
    for f in _frames(3):
        corner = _painted(f, slice(0, 10), slice(0, 10))
        a, b = old.inspect(corner), new.inspect(corner)
        assert a.image_score == b.image_score and np.array_equal(a.fused, b.fused)


def test_no_part_falls_back_to_the_frame_and_the_verdict_says_so(tmp_path: Path) -> None:
    part = _inspector(_region_bundle(tmp_path / "part", "part"))
    f = _frames(1)[0]
    # the support plane only: the synthetic frame's cloud with the part pressed flat onto it
    xyz = f.xyz.copy()
    v, u = np.mgrid[0:64, 0:64]
    xyz[..., 2] = 0.5 + 0.0005 * u  # a tilted plane, no point above it
    xyz[..., 0] = (u - 32) * 0.001
    xyz[..., 1] = (v - 32) * 0.001
    empty = dataclasses.replace(f, xyz=xyz.astype(np.float32))
    ins = part.inspect(empty)
    assert ins.no_part
    frame_ins = _inspector(_region_bundle(tmp_path / "frame", "frame"))
    assert ins.image_score == pytest.approx(frame_ins.inspect(empty).image_score, abs=1e-6)
    verdict = make_verdict(ins, "st", 0, ModelRef(id="toy", sha256="0" * 64, variant="toy"))
    assert verdict.extra["scored_on"].startswith("frame")
    assert not part.inspect(f).no_part


# --------------------------------------------------------------------------- calibrate


@pytest.mark.parametrize("region", ["part", "frame"])
def test_calibrate_fits_on_the_scores_the_station_computes(tmp_path: Path, region: str) -> None:
    b = _region_bundle(tmp_path / region, region)
    res = calibrate(b, CAMERA, 30, target_fpr=0.1)
    station = _inspector(b)
    assert station.region == region and station.threshold == pytest.approx(res.threshold)
    report = (b / "calibration" / "report.txt").read_text()  # the report says where it scored
    assert f"scored on   the {'part' if region == 'part' else 'whole frame'}" in report
    frames = _frames(30)
    ours = np.array([station.inspect(f).image_score for f in frames])
    np.testing.assert_allclose(res.scores, ours, rtol=1e-5, atol=1e-5)
    # the two rules differ on these frames, so the equality above is not a coincidence
    other = _inspector(_region_bundle(tmp_path / "other", "frame" if region == "part" else "part"))
    other.stats = station.stats
    theirs = np.array([other.inspect(f).image_score for f in frames])
    assert np.abs(theirs - ours).max() > 1e-3


# --------------------------------------------------------------------------- the manifest


def test_manifest_round_trip_and_old_manifest(tmp_path: Path) -> None:
    b = _region_bundle(tmp_path / "part", "part")
    m = load_bundle(b).manifest
    assert m.scoring.region == "part"
    again = Manifest.model_validate_json(m.model_dump_json())
    assert again.scoring.region == "part"
    assert load_bundle(_region_bundle(tmp_path / "old", None)).manifest.scoring.region == "frame"
    raw = json.loads((b / "manifest.json").read_text())
    raw["scoring"]["region"] = "roi"
    with pytest.raises(ValueError, match="region"):
        Manifest.model_validate(raw)


def test_calibrate_keeps_the_region(tmp_path: Path) -> None:
    b = _region_bundle(tmp_path / "part", "part")
    calibrate(b, CAMERA, 20, target_fpr=0.1)
    assert load_bundle(b).manifest.scoring.region == "part"


# --------------------------------------------------------------------------- training's side


def test_default_region_per_pipeline_and_dataset(tmp_path: Path) -> None:
    from conftest_export import write_run_recorded_before

    from trainer.run import TrainConfig
    from trainer.train import resolve_score_region

    base = TrainConfig(data_root="d", category="puck", score_region=None)
    assert TrainConfig(data_root="d", category="puck").score_region == "frame"  # old runs
    work = base.model_copy(update={"preprocess": "working"})
    assert resolve_score_region(work, "mvtec3d").score_region == "part"
    ref = base.model_copy(update={"preprocess": "reference"})
    assert resolve_score_region(ref, "mvtec3d").score_region == "frame"
    assert resolve_score_region(work, "eyecandies").score_region == "frame"
    explicit = work.model_copy(update={"score_region": "frame"})
    assert resolve_score_region(explicit, "mvtec3d").score_region == "frame"
    # a resumed run keeps what it recorded (an old run.json without the key: frame)
    write_run_recorded_before(tmp_path, work.model_copy(update={"score_region": "frame"}),
                              "score_region")
    assert resolve_score_region(work, "mvtec3d", tmp_path).score_region == "frame"


def test_eval_and_export_follow_the_run(tmp_path: Path, tiny_dataset: Path) -> None:
    """`evaluate` scores over the run's score_region (threshold included) and `export` records
    it; a run.json without it is scored on the whole frame."""
    from conftest_export import make_run

    from export.onnx_export import export_bundle
    from trainer.evaluate import evaluate
    from trainer.run import CALIBRATION_FILE

    run = make_run(tmp_path / "run", tiny_dataset)
    raw = json.loads((run / "run.json").read_text())
    del raw["config"]["score_region"]
    (run / "run.json").write_text(json.dumps(raw))
    frame = evaluate(run, tiny_dataset, "puck", progress=False)
    frame_val = json.loads((run / CALIBRATION_FILE).read_text())["validation_image_scores"]
    raw["config"]["score_region"] = "part"
    (run / "run.json").write_text(json.dumps(raw))
    part = evaluate(run, tiny_dataset, "puck", progress=False)
    part_val = json.loads((run / CALIBRATION_FILE).read_text())["validation_image_scores"]
    assert frame["score_region"] == "frame" and part["score_region"] == "part"
    # part scores are maxima over a subset of the same smoothed map: never above the frame's
    assert all(p <= f + 1e-9 for p, f in zip(part_val, frame_val, strict=True))
    assert any(p < f - 1e-6 for p, f in zip(part_val, frame_val, strict=True))
    assert part["threshold"] < frame["threshold"]
    bundle = export_bundle(run, tmp_path / "bundle", check=False)
    m = load_bundle(bundle).manifest
    assert m.scoring.region == "part" and m.scoring.threshold == pytest.approx(part["threshold"])


def test_a_part_cut_by_the_roi_is_flagged_in_the_verdict(tmp_path: Path) -> None:
    """An ROI chosen from the training parts (trainer/choices.py) is tight: a part that lands
    across its edge is seen only in part. The verdict says so; a part inside it, or one the
    camera's own frame cuts (no crop), does not."""
    from conftest_export import write_toy_bundle

    ref = ModelRef(id="toy", sha256="0" * 64, variant="toy")
    flags = {}
    for name, roi in [("whole", None), ("left-half", (0.0, 0.0, 0.5, 1.0))]:
        b = write_toy_bundle(tmp_path / name, size=32, pipeline="working", roi=roi)
        ins = _inspector(b)
        results = [ins.inspect(f) for f in _frames(3)]
        assert not any(r.no_part for r in results)  # the plane fit still finds the part
        flags[name] = [r.part_at_edge for r in results]
        verdicts = [make_verdict(r, "st", i, ref) for i, r in enumerate(results)]
        assert all(((v.extra or {}).get("part_at_edge") is not None) == r.part_at_edge
                   for v, r in zip(verdicts, results, strict=True))
    assert flags == {"whole": [False] * 3, "left-half": [True] * 3}
    # without a crop, a part the camera itself cuts is not flagged: a part that fills the view
    # (MVTec 3D-AD-like) would be, on every frame
    whole = _inspector(tmp_path / "whole")
    for f in _frames(2):
        half = dataclasses.replace(f, rgb=f.rgb[:, :32].copy(), xyz=f.xyz[:, :32].copy())
        sample, _ = whole.prepare(half)
        assert sample.at_edge  # the sample says where the part lies ...
        assert not whole.inspect(half).part_at_edge  # ... the verdict only flags a crop
