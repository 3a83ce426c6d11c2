"""Heights above the table (`PreprocessConfig.heights`, `geometry.plane_depth`): the table's tilt
must not reach the 3D image of a part turned to its pose, old bundles keep camera z, and
`trd-edge train` picks it only where parts are turned."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.processing.geometry import Plane, depth_to_xyz, fit_background_plane, plane_depth
from edge.processing.preprocess import PreprocessConfig, preprocess
from trainer.choices import heights_for
from trainer.run import TrainConfig
from trainer.train import keep_resumed_choices, preprocess_config_for, resolve_heights

N = 128
F = N / 0.12 * 0.5  # about 12 cm across at 0.5 m, as the synthetic station


def _rays() -> np.ndarray:
    u, v = np.meshgrid(np.arange(N, dtype=np.float64), np.arange(N, dtype=np.float64))
    return np.dstack([(u - N / 2) / F, (v - N / 2) / F, np.ones((N, N))])


def _box_on_table(slope_x: float, slope_y: float, height: float = 0.008) -> np.ndarray:
    """Organised cloud of a 6 × 3 cm plate lying flat on a table whose depth rises by ``slope_*``
    per metre across the view (a tilted table), seen from 0.5 m: each ray meets the table plane
    or, inside the plate's footprint on it, the plate's top, ``height`` above the table."""
    n = np.array([-slope_x, -slope_y, 1.0])  # table: z = 0.5 + slope_x·x + slope_y·y
    unit = n / np.linalg.norm(n)
    r = _rays()
    t_table = 0.5 / (r @ n)
    on_table = r * t_table[..., None]
    # the box's footprint, in the table's own coordinates around the view's centre
    inside = (np.abs(on_table[..., 0]) < 0.03) & (np.abs(on_table[..., 1]) < 0.015)
    # the top, closer to the camera, with a 3-mm flange along one end (a part has a shape: a
    # top alone is one height, which a min–max cannot stretch)
    flange = inside & (on_table[..., 0] > 0.02)
    top_offset = 0.5 - (height + 0.003 * flange) * np.linalg.norm(n)
    t_top = top_offset / (r @ n)
    xyz = np.where(inside[..., None], r * t_top[..., None], on_table)
    inside &= ~flange
    assert np.allclose(np.abs(xyz @ unit - 0.5 / np.linalg.norm(n))[inside], height, atol=1e-9)
    return xyz.astype(np.float32)


def _top_tilt_deg(cfg: PreprocessConfig, xyz: np.ndarray) -> float:
    """Median normal tilt (deg) over the box's top, away from its rim."""
    rgb = np.full((N, N, 3), 128, np.uint8)
    p = preprocess(rgb, xyz, cfg)
    inner = cv2.erode(p.foreground.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert inner.sum() > 100
    nz = 2.0 * p.x3d_vis[2][inner] - 1.0
    return float(np.median(np.degrees(np.arccos(np.clip(nz, -1, 1)))))


def test_plane_depth_is_the_height_above_the_table_whichever_way_the_normal_points() -> None:
    xyz = _box_on_table(0.05, -0.03)
    plane = fit_background_plane(xyz)
    d = plane_depth(xyz, plane)
    flipped = plane_depth(xyz, Plane(-plane.normal, -plane.offset))
    np.testing.assert_allclose(d, flipped, atol=1e-6)
    camera_to_table = abs(plane.offset) / np.linalg.norm(plane.normal)
    top = d[N // 2, N // 2]
    corner = d[2, 2]
    assert corner == pytest.approx(camera_to_table, abs=1e-6)
    assert camera_to_table - top == pytest.approx(0.008, abs=1e-5)  # 8 mm box, any tilt
    # camera z of the box's top varies across it with the table; the depth above it does not
    top_rows = slice(N // 2 - 4, N // 2 + 4)
    assert np.ptp(xyz[top_rows, N // 2 - 15:N // 2 + 15, 2]) > 1e-3
    assert np.ptp(d[top_rows, N // 2 - 15:N // 2 + 15]) < 1e-5
    # no return stays no return
    xyz[10:14, 10:14] = 0
    assert (plane_depth(xyz, plane)[10:14, 10:14] == 0).all()


def test_a_degenerate_plane_is_named() -> None:
    with pytest.raises(ValueError, match="background plane"):
        plane_depth(np.ones((4, 4, 3), np.float32), Plane(np.zeros(3), 0.0))


@pytest.mark.parametrize("slopes", [(0.05, 0.0), (0.0, -0.06), (0.04, 0.04)])
def test_the_tables_tilt_does_not_reach_the_normals_of_a_flat_top(slopes) -> None:
    xyz = _box_on_table(*slopes)
    base = dict(image_size=128, pipeline="working", sobel_ksize=5, fill_dropouts=True)
    plane = _top_tilt_deg(PreprocessConfig(heights="plane", **base), xyz)
    camera = _top_tilt_deg(PreprocessConfig(heights="camera", **base), xyz)
    assert plane < 1.0  # flat, whatever the table does
    assert camera > 20.0  # min–max over camera z stretches the table's ramp into a slope


def test_bundles_and_runs_from_before_keep_camera_z(tmp_path: Path) -> None:
    assert PreprocessConfig().heights == "camera"
    assert TrainConfig(data_root="d", category="c").heights == "camera"
    # depth_to_xyz clouds (the station's) meet the same code: a flat table gives one depth
    z = np.full((32, 32), 0.5, np.float32)
    xyz = depth_to_xyz(z, 40.0, 40.0, 16.0, 16.0)
    assert np.ptp(plane_depth(xyz, fit_background_plane(xyz))) < 1e-6
    run = tmp_path / "run"
    run.mkdir()
    old = TrainConfig(data_root="d", category="c", preprocess="working").model_dump()
    del old["heights"]
    info = {"config": old, "preprocess": PreprocessConfig(pipeline="working").model_dump()}
    del info["preprocess"]["heights"]
    (run / "run.json").write_text(json.dumps(info))
    resumed = keep_resumed_choices(
        TrainConfig(data_root="d", category="c", heights=None, align="auto"), run)
    assert resumed.heights == "camera"  # a resumed run does not switch halfway


@pytest.mark.parametrize(("pipeline", "align", "expected"), [
    ("working", "auto", "plane"), ("working", "principal-axis", "plane"),
    ("working", "none", "camera"), ("reference", "auto", "camera"),
])
def test_train_uses_plane_heights_where_parts_are_turned(pipeline, align, expected,
                                                        capsys) -> None:
    assert heights_for(pipeline, align) == expected
    cfg = resolve_heights(TrainConfig(data_root="d", category="c", preprocess=pipeline,
                                      align=align, heights=None))
    assert cfg.heights == expected
    assert preprocess_config_for(cfg).heights == expected
    assert "3D image from" in capsys.readouterr().out
    # asked for on the reference path, the bundle still records what the pipeline does
    forced = TrainConfig(data_root="d", category="c", preprocess="reference", heights="plane")
    assert preprocess_config_for(forced).heights == "camera"
    with pytest.raises(ValueError, match="working pipeline only"):
        resolve_heights(forced)
