"""Quarter-turn augmentation: RGB and 3D stay consistent, and the dataset applies it reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from edge.datasets.dataset_io import list_samples, load_raw
from edge.datasets.synthetic import SceneGenerator
from edge.processing.preprocess import PreprocessConfig, preprocess
from trainer.augment import quarter_turns, rotate_raw
from trainer.data import RGBDDataset


def _interior(mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """Pixels at least `margin` px inside a boolean mask (resize blending stays out)."""
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_turned_part_has_turned_normals(k):
    """Normals of the turned cloud = turned normals whose x/y directions turned with the part.

    One counter-clockwise quarter turn maps the encoded normal (c0, c1, c2) to (c1, 1 − c0, c2):
    a plain image rotation (c0, c1 unchanged) would fail this on every sloped pixel.
    """
    scene = SceneGenerator("bracket", image_size=96, seed=3).sample()
    cfg = PreprocessConfig(image_size=96, modality="normal")
    ref = preprocess(scene.rgb, scene.xyz, cfg)
    rgb_t, xyz_t = rotate_raw(scene.rgb, scene.xyz, k)
    got = preprocess(rgb_t, xyz_t, cfg)

    expect = np.rot90(ref.x3d_vis, k, axes=(1, 2))
    for _ in range(k):
        expect = np.stack([expect[1], 1.0 - expect[0], expect[2]])
    inside = _interior(got.foreground) & _interior(np.rot90(ref.foreground, k))
    assert inside.sum() > 500
    np.testing.assert_allclose(got.x3d_vis[:, inside], expect[:, inside], atol=1e-5)
    np.testing.assert_allclose(got.rgb, np.rot90(ref.rgb, k, axes=(1, 2)), atol=1e-6)
    # the sloped pixels really do change their x/y encoding (else the check above is vacuous)
    plain = np.rot90(ref.x3d_vis, k, axes=(1, 2))
    assert np.abs(plain[:2, inside] - expect[:2, inside]).max() > 0.05


def test_non_square_frames_turn_by_half_turns_only():
    rng = np.random.default_rng(0)
    ks = {quarter_turns(rng, (48, 64, 3)) for _ in range(50)}
    assert ks == {0, 2}
    assert {quarter_turns(rng, (64, 64, 3)) for _ in range(50)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="non-square"):
        rotate_raw(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64, 3), np.float32), 1)


def test_dataset_turns_samples_reproducibly(tiny_dataset):
    records = list_samples(tiny_dataset, "puck", "test")
    cfg = PreprocessConfig(image_size=64, modality="normal")
    plain = RGBDDataset(records, cfg)
    draws = []
    for _ in range(2):
        ds = RGBDDataset(records, cfg, augment="rot90", seed=7)
        draws.append([ds[i] for i in range(len(records))])
    turned = 0
    for i, (a, b) in enumerate(zip(*draws, strict=True)):
        assert np.array_equal(a["x3d"].numpy(), b["x3d"].numpy())  # same seed, same turns
        ref = plain[i]
        k = next(k for k in range(4) if np.allclose(a["rgb"].numpy(),
                                                     np.rot90(ref["rgb"].numpy(), k, axes=(1, 2))))
        turned += k != 0
        # the mask turns with the part
        assert np.array_equal(a["mask"].numpy(), np.rot90(ref["mask"].numpy(), k, axes=(1, 2)))
    assert turned >= len(records) // 2


def test_eyecandies_refuses_rot90(tmp_path):
    from edge.datasets.dataset_io import SampleRecord

    rec = SampleRecord(
        category="CandyCane", split="train", defect_type="good", label=0,
        rgb_path=tmp_path / "a.png", geom_path=tmp_path / "b.png", gt_path=None, name="000",
        kind="eyecandies",
    )
    with pytest.raises(ValueError, match="--augment none"):
        RGBDDataset([rec], PreprocessConfig(image_size=64), augment="rot90")


def test_continuous_turn_turns_the_normals_with_the_part():
    """``rotate``: after a 30° turn the normals are those of the turned part, whose x/y
    directions turned with it (computed from the turned heights), not the old normals moved.
    The puck's groove has slopes in every direction."""
    import math

    from edge.processing.pose import Pose

    scene = SceneGenerator("puck", image_size=128, seed=1).sample()
    cfg = PreprocessConfig(image_size=128, pipeline="working", sobel_ksize=3)
    ref = preprocess(scene.rgb, scene.xyz, cfg)
    got = preprocess(scene.rgb, scene.xyz, cfg, turn_deg=30.0)
    assert got.pose is not None and got.pose.angle_deg == 30.0
    turn = Pose.identity((128, 128)).turned(30.0)
    moved = np.stack([turn.warp(np.ascontiguousarray(c)) for c in ref.x3d_vis])
    a = math.radians(30.0)
    # OpenCV's counter-clockwise turn in y-down pixels: (x, y) → (x cos + y sin, −x sin + y cos)
    vx, vy = moved[0] - 0.5, moved[1] - 0.5
    turned = np.stack([math.cos(a) * vx + math.sin(a) * vy, -math.sin(a) * vx + math.cos(a) * vy])
    inside = _interior(got.foreground, 4) & (np.hypot(vx, vy) > 0.1)  # sloped pixels
    assert inside.sum() > 50
    err_turned = np.median(np.abs(got.x3d_vis[:2, inside] - 0.5 - turned[:, inside]))
    err_moved = np.median(np.abs(got.x3d_vis[:2, inside] - 0.5 - np.stack([vx, vy])[:, inside]))
    assert err_turned < 0.5 * err_moved, (err_turned, err_moved)


def test_dataset_rotate_is_reproducible_and_moves_the_mask(tmp_path):
    from edge.datasets.synthetic import write_dataset

    write_dataset(tmp_path, ("block",), 64, n_train=0, n_validation=0, n_test_good=0,
                  n_test_per_defect=1, seed=3, progress=False)  # fmt: skip
    records = [r for r in list_samples(tmp_path, "block", "test") if r.label]
    cfg = PreprocessConfig(image_size=64, pipeline="working", align="auto")
    plain = RGBDDataset(records, cfg)[0]
    a = [RGBDDataset(records, cfg, augment="rotate", seed=5)[0] for _ in range(2)]
    b = RGBDDataset(records, cfg, augment="rotate", seed=6)[0]
    assert np.array_equal(a[0]["x3d"].numpy(), a[1]["x3d"].numpy())
    assert not np.array_equal(a[0]["x3d"].numpy(), b["x3d"].numpy())
    assert not np.array_equal(a[0]["mask"].numpy(), plain["mask"].numpy())  # the mask turned
    assert abs(a[0]["mask"].sum() - plain["mask"].sum()) < 0.2 * plain["mask"].sum()


def test_dataset_outline_smooths_about_half_the_parts_and_the_station_none(tmp_path):
    from edge.datasets.synthetic import write_dataset
    from trainer.augment import OUTLINE_SIGMA

    write_dataset(tmp_path, ("bracket",), 96, n_train=12, n_validation=0, n_test_good=0,
                  n_test_per_defect=0, seed=3, progress=False)  # fmt: skip
    records = list_samples(tmp_path, "bracket", "train")
    cfg = PreprocessConfig(image_size=64, pipeline="working", align="auto", heights="plane")
    ds = RGBDDataset(records, cfg, augment="outline", seed=1)
    smoothed = 0
    for i, rec in enumerate(records):
        got = ds[i]["x3d"].numpy()
        raw = load_raw(rec)
        as_station = preprocess(raw.rgb, raw.xyz, cfg).x3d
        as_smoothed = preprocess(raw.rgb, raw.xyz, cfg.model_copy(
            update={"outline_smoothing": OUTLINE_SIGMA})).x3d
        assert np.array_equal(got, as_station) or np.array_equal(got, as_smoothed)
        smoothed += np.array_equal(got, as_smoothed)
    assert 2 <= smoothed <= 10  # about half of 12
    assert cfg.outline_smoothing == 0.0  # the run's (and the station's) config is unchanged


def test_outline_is_the_default_where_parts_are_turned(tmp_path, capsys) -> None:
    """`resolve_augment`: outline for the working pipeline with a pose, none for fixtured parts,
    the reference pipeline and preprocessed Eyecandies; a resumed run keeps its own (an old
    run.json without the key: none); outline with the reference pipeline is refused by name."""
    from conftest_export import write_run_recorded_before

    from trainer.run import TrainConfig
    from trainer.train import _check_resume, resolve_augment

    assert TrainConfig(data_root="d", category="bracket").augment == "none"  # old runs
    base = TrainConfig(data_root="d", category="bracket", preprocess="working", align="auto",
                       augment=None)
    assert resolve_augment(base, "mvtec3d").augment == "outline"
    assert "augmentation: outline" in capsys.readouterr().out
    for update, kind in (({"align": "none"}, "mvtec3d"), ({"preprocess": "reference"}, "mvtec3d"),
                         ({}, "eyecandies")):
        assert resolve_augment(base.model_copy(update=update), kind).augment == "none"
    assert resolve_augment(base.model_copy(update={"augment": "rot90"}), "mvtec3d").augment == "rot90"
    write_run_recorded_before(tmp_path, base.model_copy(update={"augment": "none"}), "augment")
    resumed = resolve_augment(base, "mvtec3d", tmp_path)
    assert resumed.augment == "none"
    _check_resume(tmp_path, resumed)  # the same configuration: no RunError
    with pytest.raises(ValueError, match="--augment outline applies to the working pipeline"):
        resolve_augment(base.model_copy(update={"augment": "outline", "preprocess": "reference"}),
                        "mvtec3d")
    # `train` refuses it before reading any data (here there is none: no dataset error first)
    from trainer.train import train

    both = base.model_copy(update={"augment": "outline", "preprocess": "reference",
                                   "heights": "plane", "data_root": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match="--heights plane and --augment outline apply to the "
                       "working pipeline only"):
        train(both, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
