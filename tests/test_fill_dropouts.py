"""Depth dropouts inside the part (issue 13): the working pipeline fills them from the part's
valid heights, so a patch without depth return is no spike in the 3D image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.datasets.synthetic import SceneGenerator
from edge.processing.geometry import fill_dropouts, fit_background_plane, foreground_mask
from edge.processing.preprocess import PreprocessConfig, preprocess
from trainer.run import TrainConfig
from trainer.train import preprocess_config_for, resolve_fill_dropouts

S = 96


def _good_block(seed: int = 3):
    return SceneGenerator("block", image_size=S, seed=seed).sample("good")


def _punch(xyz: np.ndarray, centre: tuple[int, int], r: int) -> np.ndarray:
    """A copy of ``xyz`` with a round patch of no return (0, 0, 0) around ``centre``."""
    out = xyz.copy()
    yy, xx = np.mgrid[: xyz.shape[0], : xyz.shape[1]]
    out[(yy - centre[1]) ** 2 + (xx - centre[0]) ** 2 <= r * r] = 0.0
    return out


def _part_centre(xyz: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(foreground_mask(xyz, plane=fit_background_plane(xyz)))
    return int(np.median(xs)), int(np.median(ys))


def test_a_hole_takes_the_heights_around_it_and_nothing_else_moves() -> None:
    z = np.full((40, 40), 0.50, np.float32)
    z[:, :10] = 0.56  # the background, farther away
    part = np.zeros_like(z, dtype=bool)
    part[:, 10:] = True
    z[:, 10:] += np.linspace(0, 0.004, 30, dtype=np.float32)  # a gently sloping top
    holed = z.copy()
    holed[15:24, 20:29] = 0.0  # 9 px across: deeper than any single 3×3 pass reaches
    holed[0:3, 10:14] = 0.0  # at the part's edge, beside the background
    filled = fill_dropouts(holed, part)
    inside = np.zeros_like(part)
    inside[15:24, 20:29] = True
    assert np.abs(filled[inside] - z[inside]).max() < 5e-4  # the slope, not a hole
    assert np.all(filled[0:3, 10:14] < 0.53)  # the background's 0.56 never leaks in
    np.testing.assert_array_equal(filled[holed != 0], holed[holed != 0])
    assert np.all(filled[part] != 0)
    # outside the part a 0 stays a missing point
    bg_hole = holed.copy()
    bg_hole[5, 2] = 0.0
    assert fill_dropouts(bg_hole, part)[5, 2] == 0.0
    # nothing to fill: the very array back, unchanged
    assert fill_dropouts(z, part) is z


def test_a_dropout_on_a_good_part_is_no_spike_in_the_3d_image() -> None:
    scene = _good_block()
    cx, cy = _part_centre(scene.xyz)
    holed = _punch(scene.xyz, (cx + 4, cy + 3), 4)  # 9 px across, on the block's flat top
    base = dict(image_size=S, pipeline="working", sobel_ksize=3)
    clean = preprocess(scene.rgb, scene.xyz, PreprocessConfig(**base, fill_dropouts=True))
    off = preprocess(scene.rgb, holed, PreprocessConfig(**base))
    on = preprocess(scene.rgb, holed, PreprocessConfig(**base, fill_dropouts=True))
    win = (slice(None), slice(cy - 8, cy + 15), slice(cx - 8, cx + 16))
    err_off = np.abs(off.x3d_vis[win] - clean.x3d_vis[win]).max()
    err_on = np.abs(on.x3d_vis[win] - clean.x3d_vis[win]).max()
    # unfilled: what two 3×3 fill passes leave is a spike that tips the normals over (0.25
    # measured); filled, what is left is the clean image's own noise, which a smooth fill lacks
    assert err_off > 0.2
    assert err_on < 0.1 and err_on < err_off / 3
    np.testing.assert_array_equal(on.foreground, clean.foreground)


def test_the_option_changes_nothing_without_dropouts_or_on_the_reference_path() -> None:
    scene = _good_block(seed=5)
    xyz = scene.xyz.copy()
    xyz[xyz[..., 2] == 0] = scene.xyz[..., 2].max()  # no missing point anywhere
    for pipeline in ("working", "reference"):
        a = preprocess(scene.rgb, xyz, PreprocessConfig(image_size=S, pipeline=pipeline))
        b = preprocess(scene.rgb, xyz, PreprocessConfig(image_size=S, pipeline=pipeline,
                                                        fill_dropouts=True))
        np.testing.assert_array_equal(a.x3d_vis, b.x3d_vis)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(data_root="/nonexistent", category="block", **kw)


@pytest.mark.parametrize(("pipeline", "expected"), [("working", True), ("reference", False)])
def test_train_fills_on_the_working_pipeline_only(pipeline, expected, capsys) -> None:
    cfg = resolve_fill_dropouts(_cfg(preprocess=pipeline, fill_dropouts=None))
    assert cfg.fill_dropouts is expected
    assert preprocess_config_for(cfg).fill_dropouts is expected
    assert ("filled" if expected else "left as they are") in capsys.readouterr().out
    # asked for on the reference path, the bundle still records what the pipeline does
    assert preprocess_config_for(_cfg(preprocess="reference", fill_dropouts=True)
                                 ).fill_dropouts is False


def test_runs_and_bundles_from_before_keep_their_3d_image(tmp_path: Path) -> None:
    """A run.json or manifest without the key did not fill; a resumed run keeps its choice."""
    assert PreprocessConfig().fill_dropouts is False
    assert TrainConfig(data_root="d", category="c").fill_dropouts is False
    run = tmp_path / "run"
    run.mkdir()
    old = _cfg(preprocess="working").model_dump()
    del old["fill_dropouts"]
    info = {"config": old, "preprocess": PreprocessConfig(pipeline="working").model_dump()}
    del info["preprocess"]["fill_dropouts"]
    (run / "run.json").write_text(json.dumps(info))
    resumed = resolve_fill_dropouts(_cfg(preprocess="working", fill_dropouts=None), run)
    assert resumed.fill_dropouts is False
