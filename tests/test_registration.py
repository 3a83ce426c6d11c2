"""Depth registered at the model's working grid (edge/processing/registration.py), through real recordings
made with pyrealsense2's software device: depth and colour at different sizes, 15 mm apart, as
a D435 delivers them. The reference is librealsense's own ``rs.align``."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rs_fixtures import rs_or_skip  # noqa: E402

from edge.frames import Intrinsics
from edge.processing.registration import (
    Extrinsics,
    WorkingGrid,
    area_resize,
    register_depth,
    splat_depth,
)

pytestmark = pytest.mark.realsense


def _frames(path: Path, grid: int | None = None, roi=None) -> dict:
    from edge.sources.realsense import RealSenseSource

    src = RealSenseSource(path)
    if grid is not None:
        assert src.set_working_grid(grid, roi)
    with src:
        return {f.frame_number: f for f in src}


def _nearest_cells(img: np.ndarray, g: int, roi=(0.0, 0.0, 1.0, 1.0)) -> np.ndarray:
    """The full-resolution pixel at each grid cell's centre (nearest-neighbour downsample)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = roi[0] * w, roi[1] * h, roi[2] * w, roi[3] * h
    xs = (x0 + (np.arange(g) + 0.5) * (x1 - x0) / g).astype(int)
    ys = (y0 + (np.arange(g) + 0.5) * (y1 - y0) / g).astype(int)
    return img[np.ix_(ys, xs)]


@pytest.fixture(scope="module")
def d435_recording(tmp_path_factory) -> Path:
    rs_or_skip()
    from edge.sources.rs_scenes import write_camera_recording

    path = tmp_path_factory.mktemp("rec") / "d435.db3"
    write_camera_recording(path, "puck", n_frames=5, depth_size=(640, 360),
                           color_size=(960, 540), scene_size=192, seed=3, defect_rate=0.5)
    return path


@pytest.mark.parametrize("roi", [None, (0.2, 0.1, 0.8, 0.9)])
def test_grid_registration_equals_rs_align(d435_recording: Path, roi) -> None:
    g = 96
    ref = _frames(d435_recording)  # rs.align at full colour resolution
    ours = _frames(d435_recording, g, roi)
    common = sorted(set(ref) & set(ours))
    assert len(common) >= 4
    for n in common:
        f = ours[n]
        assert f.rgb.shape == (g, g, 3) and f.xyz.shape == (g, g, 3)
        assert f.meta["camera_size"] == (540, 960)
        assert f.meta["working_grid"] == {"size": g, "roi": roi}
        z_ref = _nearest_cells(ref[n].xyz[..., 2], g, roi or (0, 0, 1, 1))
        z = f.xyz[..., 2]
        both = (z_ref > 0) & (z > 0)
        assert both.mean() > 0.98 and abs((z > 0).mean() - (z_ref > 0).mean()) < 0.01
        dz = np.abs(z - z_ref)[both]
        assert np.median(dz) == 0.0  # the same depth units as rs.align
        # within one depth unit (1 mm) but at rims, where a cell straddles two surfaces
        assert (dz > 0.0011).mean() < 0.03, (dz > 0.0011).mean()
        # the cloud is the grid's own deprojection: x/z and y/z follow the grid intrinsics
        gi = f.intrinsics
        v, u = np.nonzero(z > 0)
        np.testing.assert_allclose(f.xyz[v, u, 0] / z[v, u], (u - gi.cx) / gi.fx, atol=1e-5)
        # colour: the ROI of the full image, area-averaged
        rgb_ref = ref[n].rgb
        if roi is not None:
            h, w = rgb_ref.shape[:2]
            rgb_ref = rgb_ref[round(roi[1] * h):round(roi[3] * h), round(roi[0] * w):round(roi[2] * w)]
        expect = cv2.resize(rgb_ref, (g, g), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(expect - f.rgb.astype(int)).mean() < 1.5


def test_registration_moves_points_by_the_extrinsics() -> None:
    """A flat wall seen by a depth camera 15 mm to the left: the registered depth is the wall's
    and its edge lands where the colour camera sees it (the shift a baseline makes)."""
    intr = Intrinsics(fx=200.0, fy=200.0, cx=79.5, cy=59.5, width=160, height=120)
    depth = np.zeros((120, 160), np.uint16)
    depth[:, 80:] = 500  # a wall at 0.5 m on the right half, nothing on the left
    grid = WorkingGrid.over((120, 160), None, 160, 120)
    same = register_depth(depth, 0.001, intr, Extrinsics.identity(), intr, grid)
    moved = register_depth(
        depth, 0.001, intr, Extrinsics(np.eye(3), np.array([-0.015, 0.0, 0.0])), intr, grid
    )
    assert np.all(same[:, 81:] == pytest.approx(0.5)) and not same[:, :79].any()
    # x' = x − 0.015 at z = 0.5: u' = u − 200·0.015/0.5 = u − 6 px
    first_same = int(np.argmax(same[60] > 0))
    first_moved = int(np.argmax(moved[60] > 0))
    assert first_same - first_moved == 6


def test_splat_keeps_the_nearest_surface() -> None:
    intr = Intrinsics(fx=10.0, fy=10.0, cx=4.5, cy=4.5, width=10, height=10)
    grid = WorkingGrid.over((10, 10), None, 10, 10)
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.6], [0.0, 0.0, 0.8]], np.float32)
    z = splat_depth(pts, intr, grid)
    assert z[5, 5] == pytest.approx(0.6) and np.count_nonzero(z) == 1


def test_area_resize_halves_exactly() -> None:
    img = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    two_steps = area_resize(img, 480, 270)
    direct = cv2.resize(img, (480, 270), interpolation=cv2.INTER_AREA)
    assert np.abs(two_steps.astype(int) - direct.astype(int)).max() <= 1  # rounding only


def test_depth_and_colour_at_different_sizes_through_rs_align(d435_recording: Path) -> None:
    """Issue 11 item 9: without a working grid (reference bundles, `record`) the recording
    still plays through rs.align: colour-sized frames with depth registered to them."""
    frames = _frames(d435_recording)
    assert len(frames) >= 4
    for f in frames.values():
        assert f.rgb.shape == (540, 960, 3) and f.xyz.shape == (540, 960, 3)
        assert (f.xyz[..., 2] > 0).mean() > 0.95
