"""Synthetic RGB-D generator (edge/datasets/synthetic.py)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

from edge.datasets.dataset_io import list_samples, load_raw
from edge.datasets.synthetic import (
    CATEGORIES,
    DEFECT_TYPES,
    SceneGenerator,
    add_synth_arguments,
    run_synth,
    write_dataset,
)
from edge.processing.geometry import foreground_mask
from edge.processing.preprocess import PreprocessConfig, preprocess, resize_mask

ALL = ("good",) + DEFECT_TYPES


def _equal(a, b) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("category", CATEGORIES)
def test_deterministic_per_seed(category):
    a = [SceneGenerator(category, 64, seed=5).sample(d) for d in ALL]
    b = [SceneGenerator(category, 64, seed=5).sample(d) for d in ALL]
    c = SceneGenerator(category, 64, seed=6).sample("good")
    for x, y in zip(a, b, strict=True):
        assert _equal(x.rgb, y.rgb) and _equal(x.xyz, y.xyz) and _equal(x.mask, y.mask)
    assert not np.array_equal(a[0].rgb, c.rgb) and not np.array_equal(a[0].xyz, c.xyz)


def test_good_samples_vary():
    gen = SceneGenerator("bracket", 64, seed=0)
    s1, s2 = gen.sample(), gen.sample()
    assert not np.array_equal(s1.rgb, s2.rgb)
    fg1, fg2 = foreground_mask(s1.xyz), foreground_mask(s2.xyz)
    assert np.count_nonzero(fg1 ^ fg2) > 0.05 * fg1.sum()  # different pose/position/size


def test_sample_matches_sample_with_twin():
    scene = SceneGenerator("puck", 64, seed=9).sample("both")
    twin_scene, _ = SceneGenerator("puck", 64, seed=9).sample_with_twin("both")
    assert _equal(scene.rgb, twin_scene.rgb) and _equal(scene.xyz, twin_scene.xyz)


@pytest.mark.parametrize("category", CATEGORIES)
def test_fixtured_parts_lie_at_one_pose_and_keep_every_other_draw(category):
    free, fixed = SceneGenerator(category, 96, seed=4), SceneGenerator(category, 96, seed=4,
                                                                         fixture_angle=0)
    centres = []
    for d in ALL:
        a, b = free.sample(d), fixed.sample(d)
        assert b.angle == 0.0 and a.angle != 0.0
        fa, fb = foreground_mask(a.xyz), foreground_mask(b.xyz)
        assert abs(int(fa.sum()) - int(fb.sum())) < 0.08 * fa.sum()  # the same part, turned
        assert a.mask.any() == b.mask.any() == (d != "good")
        ys, xs = np.nonzero(fb)
        centres.append((xs.mean(), ys.mean()))
    # centred: the tilt's perspective moves a part's centroid by a pixel or two, no more
    assert np.abs(np.asarray(centres) - (96 - 1) / 2).max() < 3
    turned = SceneGenerator(category, 96, seed=4, fixture_angle=30).sample("good")
    assert turned.angle == pytest.approx(np.radians(30))


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("size", [32, 64, 128])
def test_scene_format(category, size):
    s = SceneGenerator(category, size, seed=1).sample("good")
    assert s.rgb.shape == (size, size, 3) and s.rgb.dtype == np.uint8
    assert s.xyz.shape == (size, size, 3) and s.xyz.dtype == np.float32
    assert s.mask.shape == (size, size) and s.mask.dtype == bool and not s.mask.any()
    z = s.xyz[..., 2]
    assert np.count_nonzero(z == 0) > 0  # some dropouts
    assert np.all(s.xyz[z == 0] == 0)  # missing points are (0,0,0)
    assert 0.4 < z[z > 0].min() and z.max() < 0.6
    fx, fy, cx, cy = s.intrinsics
    v, u = np.nonzero(z > 0)
    np.testing.assert_allclose(s.xyz[v, u, 0], (u - cx) * z[v, u] / fx, atol=1e-6)
    np.testing.assert_allclose(s.xyz[v, u, 1], (v - cy) * z[v, u] / fy, atol=1e-6)


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_defects_are_modality_pure_and_masked(category, seed):
    gen = SceneGenerator(category, 96, seed=seed)
    for defect in DEFECT_TYPES:
        scene, good = gen.sample_with_twin(defect)
        assert scene.defect == defect and good.defect == "good" and not good.mask.any()
        mask = scene.mask
        obj = foreground_mask(good.xyz)
        # On the object and several % of its area.
        assert mask.any() and obj[mask].all()
        assert 0.02 < mask.sum() / obj.sum() < 0.25
        rgb_diff = np.any(scene.rgb != good.rgb, axis=2)
        xyz_diff = np.any(scene.xyz != good.xyz, axis=2)
        # Nothing changes outside the mask.
        assert not rgb_diff[~mask].any() and not xyz_diff[~mask].any()
        valid = mask & (good.xyz[..., 2] > 0)
        dz = np.abs(scene.xyz[..., 2] - good.xyz[..., 2])[valid]
        if defect == "color":
            assert _equal(scene.xyz, good.xyz)
            assert rgb_diff[mask].mean() > 0.9
        elif defect == "geometry":
            assert _equal(scene.rgb, good.rgb)
            assert (dz > 0).all() and dz.mean() > 0.001  # a few mm, everywhere in the mask
        else:
            assert rgb_diff[mask].mean() > 0.9 and dz.mean() > 0.002


@pytest.mark.parametrize("category", CATEGORIES)
def test_geometry_defect_visible_in_preprocessed_normals(category):
    """At 64 px the bump/dent must still change the model's 3D input, and the gt survive."""
    cfg = PreprocessConfig(image_size=64, modality="normal")
    gen = SceneGenerator(category, 128, seed=3)
    for _ in range(3):
        scene, good = gen.sample_with_twin("geometry")
        mask64 = resize_mask(scene.mask.astype(np.uint8) * 255, 64) > 0
        assert mask64.sum() >= 4
        a = preprocess(scene.rgb, scene.xyz, cfg).x3d_vis
        b = preprocess(good.rgb, good.xyz, cfg).x3d_vis
        change = np.abs(a - b).max(axis=0)
        assert change[mask64].max() > 0.1
        np.testing.assert_array_equal(
            preprocess(scene.rgb, scene.xyz, cfg).rgb, preprocess(good.rgb, good.xyz, cfg).rgb
        )


def test_rejects_unknown_names():
    with pytest.raises(ValueError, match="category"):
        SceneGenerator("teapot")
    with pytest.raises(ValueError, match="defect"):
        SceneGenerator().sample("scratch")
    with pytest.raises(ValueError, match="category"):
        write_dataset("/nonexistent", categories=("teapot",), progress=False)


def test_write_dataset_loads_back(tmp_path):
    write_dataset(
        tmp_path,
        image_size=48,
        n_train=4,
        n_validation=2,
        n_test_good=2,
        n_test_per_defect=2,
        seed=11,
        progress=False,
    )
    for category in CATEGORIES:
        assert len(list_samples(tmp_path, category, "train")) == 4
        assert len(list_samples(tmp_path, category, "validation")) == 2
        test = list_samples(tmp_path, category, "test")
        assert len(test) == 2 + 2 * len(DEFECT_TYPES)
        for rec in test:
            raw = load_raw(rec)
            assert raw.xyz.shape == (48, 48, 3) and raw.rgb.shape == (48, 48, 3)
            assert (raw.gt is not None and raw.gt.any()) == bool(rec.label)
        assert (tmp_path / category / "calibration" / "camera_parameters.json").is_file()
    gt = load_raw(list_samples(tmp_path, "puck", "test")[0]).gt  # "both" sorts first
    assert set(np.unique(gt)) == {0, 255}
    # Each folder has its own seed: another train count leaves the first train scene unchanged.
    again = tmp_path / "again"
    write_dataset(again, ("puck",), 48, n_train=1, n_validation=0, n_test_good=0,
                  n_test_per_defect=0, seed=11, progress=False)  # fmt: skip
    first = load_raw(list_samples(tmp_path, "puck", "train")[0])
    np.testing.assert_array_equal(load_raw(list_samples(again, "puck", "train")[0]).xyz, first.xyz)
    assert not (again / "puck" / "validation").exists()


def test_generation_is_fast():
    gen = SceneGenerator("bracket", 128, seed=0)
    t0 = time.perf_counter()
    for i in range(40):
        gen.sample(ALL[i % 4])
    per_scene = (time.perf_counter() - t0) / 40
    assert per_scene < 0.1, f"{per_scene * 1000:.0f} ms per 128² scene"


def test_run_synth_cli_handler(tmp_path):
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--out", str(tmp_path / "s"), "--categories", "bracket", "--image-size", "32",
         "--n-train", "2", "--n-validation", "1", "--n-test-good", "1",
         "--n-test-per-defect", "1", "--seed", "4"]
    )  # fmt: skip
    args.progress = False
    assert run_synth(args) == 0
    assert len(list_samples(tmp_path / "s", "bracket", "train")) == 2
    assert not (tmp_path / "s" / "puck").exists()
    args.categories = "bracket,teapot"
    assert run_synth(args) == 2
    # The lead's CLI declares --categories with nargs="+" and default None (= all).
    args.out, args.categories = tmp_path / "all", None
    assert run_synth(args) == 0
    assert all((tmp_path / "all" / c).is_dir() for c in CATEGORIES)
    args.out, args.categories = tmp_path / "list", ["puck"]
    assert run_synth(args) == 0 and not (tmp_path / "list" / "bracket").exists()
