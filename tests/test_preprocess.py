"""Preprocessing (edge/processing/geometry.py, edge/processing/preprocess.py) on hand-built point clouds."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from pydantic import ValidationError

from edge.processing.geometry import (
    depth_to_xyz,
    fill_holes,
    fit_background_plane,
    foreground_mask,
    normals_image,
)
from edge.processing.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    preprocess,
    preprocess_normals_png,
    resize_mask,
    sobel_ksize_for,
)

F = 80.0  # focal length (px) of the hand-built camera


def box_scene(
    h: int = 64,
    w: int = 64,
    box=(20, 44, 20, 44),
    box_height: float = 0.02,
    ramp: float = 0.0,
    hole: tuple[int, int] | None = None,
    tilt: tuple[float, float] = (0.05, 0.03),
):
    """A background plane at ~0.5 m (slopes ``tilt``) with a box standing on it.

    The box top is ``box_height`` closer to the camera than the plane (so parallel to it),
    ``ramp`` adds a slope along x (metres across the box); ``hole`` zeroes one pixel.
    Returns (rgb, xyz, box_mask).
    """
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    rx, ry = (u - (w - 1) / 2) / F, (v - (h - 1) / 2) / F
    depth = 0.5 / (1.0 - tilt[0] * rx - tilt[1] * ry)  # ray/plane intersection
    y0, y1, x0, x1 = box
    box_mask = np.zeros((h, w), bool)
    box_mask[y0:y1, x0:x1] = True
    top = depth - box_height + ramp * (u - x0) / max(x1 - x0 - 1, 1)
    depth = np.where(box_mask, top, depth).astype(np.float32)
    if hole is not None:
        depth[hole] = 0.0
    xyz = depth_to_xyz(depth, F, F, (w - 1) / 2, (h - 1) / 2)
    rgb = np.full((h, w, 3), 120, np.uint8)
    rgb[box_mask] = (200, 40, 40)
    return rgb, xyz, box_mask


def test_depth_to_xyz_pinhole_and_zeros():
    depth = np.zeros((5, 7), np.float32)
    depth[2, 5] = 0.5
    xyz = depth_to_xyz(depth, fx=100.0, fy=50.0, cx=3.0, cy=2.0)
    assert xyz.shape == (5, 7, 3) and xyz.dtype == np.float32
    # (u - cx) * z / fx = 2 * 0.5 / 100; (v - cy) = 0 → y = 0
    np.testing.assert_allclose(xyz[2, 5], [0.01, 0.0, 0.5], rtol=1e-6)
    zero = np.ones((5, 7), bool)
    zero[2, 5] = False
    assert np.all(xyz[zero] == 0)


def test_depth_to_xyz_rejects_integer_depth():
    with pytest.raises(ValueError, match="metres"):
        depth_to_xyz(np.ones((4, 4), np.uint16), 1, 1, 0, 0)


def test_plane_fit_recovers_tilted_plane():
    _, xyz, box = box_scene()
    plane = fit_background_plane(xyz)
    dist = plane.distance(xyz)
    assert dist[~box].max() < 1e-6
    assert dist[box].min() > 0.018  # the 20 mm box (distance along the rays ≈ normal)


def test_foreground_is_the_box_not_the_plane():
    _, xyz, box = box_scene()
    fg = foreground_mask(xyz, plane_distance=0.005, closing_iterations=3)
    assert fg[box].all()
    # Closing never grows a convex blob: everything off the box is background.
    assert not fg[~box].any()


def test_foreground_threshold_is_respected():
    _, xyz, _ = box_scene(box_height=0.003)  # lower than 5 mm → not foreground
    assert not foreground_mask(xyz, plane_distance=0.005).any()
    assert foreground_mask(xyz, plane_distance=0.002).any()


def test_fill_holes_means_positive_neighbours():
    img = np.array([[1, 2, 3], [4, 0, 6], [7, 8, 9]], np.float32)
    out = fill_holes(img, iterations=1)
    assert out[1, 1] == pytest.approx(40 / 8)
    assert np.array_equal(np.delete(out.ravel(), 4), np.delete(img.ravel(), 4))


def test_fill_holes_grows_by_iterations_into_zero_background():
    img = np.zeros((9, 9), np.float32)
    img[4, 4] = 1.0
    once = fill_holes(img, 1)
    twice = fill_holes(img, 2)
    assert np.count_nonzero(once) == 9 and np.count_nonzero(twice) == 25


def test_normals_of_flat_and_sloped_height():
    flat = normals_image(np.full((16, 16), 0.3, np.float32), ksize=5)
    np.testing.assert_allclose(flat, np.broadcast_to([0.5, 0.5, 1.0], flat.shape), atol=1e-6)
    ramp = normals_image(np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1)), ksize=3)
    # z grows with x → normal tilts to −x → encoded x below 0.5, y unchanged.
    assert (ramp[4:-4, 4:-4, 0] < 0.45).all()
    np.testing.assert_allclose(ramp[4:-4, 4:-4, 1], 0.5, atol=1e-6)


def test_depth_variant_range_fill_and_background():
    rgb, xyz, box = box_scene(ramp=0.004, hole=(32, 32))
    cfg = PreprocessConfig(image_size=64, modality="depth")
    out = preprocess(rgb, xyz, cfg)
    vis = out.x3d_vis[0]
    assert np.array_equal(out.x3d_vis[0], out.x3d_vis[1])  # replicated channels
    assert out.foreground[box].all()
    top = vis[box]
    assert top.min() == pytest.approx(0.1, abs=1e-5)
    assert top.max() == pytest.approx(0.9, abs=1e-5)
    # The hole is filled from its neighbours.
    assert 0.1 <= vis[32, 32] <= 0.9
    assert vis[32, 32] == pytest.approx(np.mean([vis[31, 32], vis[33, 32]]), abs=0.05)
    # Hole filling dilates by 2 px at most; farther background stays exactly 0.
    v, u = np.mgrid[0:64, 0:64]
    far = (np.maximum(np.maximum(20 - u, u - 43), np.maximum(20 - v, v - 43))) > 2
    assert np.all(vis[far] == 0)
    mean = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, np.float32)[:, None, None]
    np.testing.assert_allclose(out.x3d, (out.x3d_vis - mean) / std, atol=1e-5)


def test_normal_variant_flat_box_top_is_straight_up():
    rgb, xyz, box = box_scene(tilt=(0.0, 0.0))  # box top at constant z
    out = preprocess(rgb, xyz, PreprocessConfig(image_size=64, modality="normal"))
    inner = np.zeros_like(box)
    inner[24:40, 24:40] = True  # away from the box edges by more than the Sobel aperture
    vis = out.x3d_vis.transpose(1, 2, 0)
    np.testing.assert_allclose(vis[inner], np.broadcast_to([0.5, 0.5, 1.0], (inner.sum(), 3)))
    assert np.all(vis[~out.foreground] == 0)
    assert out.foreground[inner].all()


def test_per_class_sobel_aperture_changes_tilt():
    rgb, xyz, _ = box_scene(ramp=0.004)
    small = preprocess(rgb, xyz, PreprocessConfig(image_size=64, sobel_ksize=3)).x3d_vis
    large = preprocess(rgb, xyz, PreprocessConfig(image_size=64, sobel_ksize=7)).x3d_vis
    # Larger aperture → larger unnormalised gain → stronger tilt (further from 0.5).
    assert abs(large[0, 32, 32] - 0.5) > abs(small[0, 32, 32] - 0.5)
    assert sobel_ksize_for("cookie") == 3 and sobel_ksize_for("Tire") == 7
    assert sobel_ksize_for("bagel") == 5


@pytest.mark.parametrize("modality", ["depth", "normal"])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_and_dtypes(modality, size):
    rgb, xyz, _ = box_scene(h=80, w=100, box=(25, 55, 30, 70))
    out = preprocess(rgb, xyz, PreprocessConfig(image_size=size, modality=modality))
    for arr in (out.rgb, out.x3d, out.x3d_vis):
        assert arr.shape == (3, size, size) and arr.dtype == np.float32
    assert out.foreground.shape == (size, size) and out.foreground.dtype == bool
    assert 0.0 <= out.x3d_vis.min() and out.x3d_vis.max() <= 1.0
    assert out.foreground.any()


def test_rgb_is_normalised_and_antialiased():
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    rgb = np.repeat(checker[..., None], 3, axis=2)
    _, xyz, _ = box_scene()
    out = preprocess(rgb, xyz, PreprocessConfig(image_size=32, modality="depth"))
    grey = out.rgb * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    # Area averaging turns a 1-px checkerboard into mid grey (no aliasing to black/white).
    np.testing.assert_allclose(grey, 0.5, atol=0.01)


def test_input_validation_messages():
    rgb, xyz, _ = box_scene()
    cfg = PreprocessConfig(image_size=32)
    with pytest.raises(ValueError, match="H×W×3"):
        preprocess(rgb, xyz[..., :2], cfg)
    with pytest.raises(ValueError, match="sizes differ"):
        preprocess(rgb[:40], xyz, cfg)
    with pytest.raises(ValueError, match="no valid 3D points"):
        preprocess(rgb, np.zeros_like(xyz), cfg)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(rgb.astype(np.float32), xyz, cfg)
    with pytest.raises(ValueError, match="floating point"):
        preprocess(rgb, (xyz * 1000).astype(np.int32), cfg)


def test_nan_points_count_as_missing():
    rgb, xyz, box = box_scene()
    xyz = xyz.copy()
    xyz[30:33, 30:33] = np.nan
    out = preprocess(rgb, xyz, PreprocessConfig(image_size=64, modality="depth"))
    assert np.isfinite(out.x3d).all()
    assert out.foreground[box].all()


def test_config_is_strict():
    with pytest.raises(ValidationError):
        PreprocessConfig(image_size=64, unknown_field=1)
    with pytest.raises(ValidationError):
        PreprocessConfig(sobel_ksize=4)
    with pytest.raises(ValidationError):
        PreprocessConfig(modality="rgb")
    cfg = PreprocessConfig()
    assert cfg.plane_distance == 0.005 and cfg.closing_iterations == 3
    assert cfg.fill_iterations == 2 and cfg.sobel_ksize == 5


def test_resize_mask_binary():
    gt = np.zeros((64, 64), np.uint8)
    gt[16:48, 16:48] = 255
    small = resize_mask(gt, 32)
    assert small.dtype == np.float32 and set(np.unique(small)) == {0.0, 1.0}
    assert small[8:24, 8:24].all() and small.sum() == 16 * 16
    # 0/1 masks (as some tools write them) are treated the same as 0/255.
    np.testing.assert_array_equal(resize_mask((gt > 0).astype(np.uint8), 32), small)
    np.testing.assert_array_equal(resize_mask(gt, 128).sum(), 64 * 64)


def test_preprocess_normals_png():
    rgb = np.full((48, 48, 3), 90, np.uint8)
    normals = np.full((48, 48, 3), (128, 128, 255), np.uint8)
    normals[:8] = 0
    out = preprocess_normals_png(rgb, normals, PreprocessConfig(image_size=32))
    assert out.x3d.shape == (3, 32, 32) and out.rgb.shape == (3, 32, 32)
    np.testing.assert_allclose(out.x3d_vis[:, 20, 20], [128 / 255, 128 / 255, 1.0], atol=1e-6)
    assert out.foreground[20:].all() and not out.foreground[:4].any()
    with pytest.raises(ValueError, match="--modality normal"):
        preprocess_normals_png(rgb, normals, PreprocessConfig(image_size=32, modality="depth"))


def test_vga_frame_is_fast():
    rgb, xyz, _ = box_scene(h=480, w=640, box=(150, 330, 200, 440), ramp=0.01)
    for modality in ("depth", "normal"):
        cfg = PreprocessConfig(image_size=256, modality=modality)
        preprocess(rgb, xyz, cfg)
        best = min(_timed(preprocess, rgb, xyz, cfg) for _ in range(3))
        # ~15 / ~35 ms on an idle core; generous bound for busy shared CI machines.
        assert best < 0.25, f"{modality}: {best * 1000:.0f} ms per 640×480 frame"


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def test_edge_modules_do_not_import_torch():
    code = (
        "import sys; import edge.processing.geometry, edge.processing.preprocess, edge.datasets.dataset_io, edge.datasets.synthetic; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
