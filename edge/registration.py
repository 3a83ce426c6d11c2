"""Depth registered to colour at the model's working resolution, not the camera's.

A RealSense camera's depth and colour sensors are two cameras: a depth pixel belongs to a colour
pixel only after it is deprojected to a 3D point, moved by the depth→colour extrinsics and
projected with the colour intrinsics. librealsense's ``rs.align`` does that for every colour
pixel at the colour stream's resolution (2 Mpx for 1920×1080), and then our preprocessing threw
nearly all of it away by resizing to the model's 128–256 px. Here the same geometry lands
directly on a small *working grid*: a rectangle of the colour image (the region of interest,
default the whole frame) divided into ``grid_w × grid_h`` cells. Each cell takes the nearest
surface seen through it (a z-buffer, like ``rs.align``'s), so the result equals ``rs.align``
followed by a nearest-neighbour downsample wherever both have a value (tested in
tests/test_registration.py on recordings with different depth and colour resolutions).

The projection formulas are those of librealsense's ``rsutil.h`` (pinhole plus the
Brown–Conrady variants the D400 series reports), vectorised with numpy; rotation matrices are
column-major there, as in ``rs.extrinsics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.frames import Intrinsics

__all__ = [
    "SUPPORTED_DISTORTION",
    "Extrinsics",
    "WorkingGrid",
    "area_resize",
    "project_points",
    "register_depth",
    "splat_depth",
]

# Distortion models handled here (names as pyrealsense2's rs.distortion prints them, lower case).
_FORWARD_MODELS = ("modified_brown_conrady", "inverse_brown_conrady", "brown_conrady")
SUPPORTED_DISTORTION = ("none", *_FORWARD_MODELS)


@dataclass(frozen=True)
class Extrinsics:
    """A rigid transform ``p_to = R · p_from + t`` (metres)."""

    rotation: np.ndarray  # 3×3, row-major (numpy convention)
    translation: np.ndarray  # (3,)

    @classmethod
    def identity(cls) -> Extrinsics:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_rs(cls, extr) -> Extrinsics:
        """From a pyrealsense2 ``rs.extrinsics`` (its rotation is stored column-major)."""
        rot = np.asarray(extr.rotation, dtype=np.float64).reshape(3, 3).T
        return cls(rot, np.asarray(extr.translation, dtype=np.float64))

    @property
    def is_identity(self) -> bool:
        return bool(np.allclose(self.rotation, np.eye(3)) and np.allclose(self.translation, 0))


@dataclass(frozen=True)
class WorkingGrid:
    """``grid_w × grid_h`` cells over the colour-image rectangle ``roi`` = (x0, y0, x1, y1).

    ``roi`` is in colour pixels, edges (not centres): the whole frame is ``(0, 0, W, H)``.
    """

    camera_size: tuple[int, int]  # (H, W) of the colour image
    roi: tuple[float, float, float, float]
    grid_w: int
    grid_h: int

    @classmethod
    def over(
        cls,
        camera_size: tuple[int, int],
        roi_fraction: tuple[float, float, float, float] | None,
        grid_w: int,
        grid_h: int,
    ) -> WorkingGrid:
        """The grid over a region given as fractions of the frame (None = the whole frame)."""
        h, w = camera_size
        fx0, fy0, fx1, fy1 = roi_fraction or (0.0, 0.0, 1.0, 1.0)
        return cls((int(h), int(w)), (fx0 * w, fy0 * h, fx1 * w, fy1 * h), int(grid_w), int(grid_h))

    @property
    def cell(self) -> tuple[float, float]:
        """Cell size in colour pixels (x, y)."""
        x0, y0, x1, y1 = self.roi
        return (x1 - x0) / self.grid_w, (y1 - y0) / self.grid_h

    def intrinsics(self, color: Intrinsics) -> Intrinsics:
        """Intrinsics of the grid as an image (cell centres), for deprojecting grid depth."""
        x0, y0, _, _ = self.roi
        cw, ch = self.cell
        return Intrinsics(
            fx=color.fx / cw, fy=color.fy / ch,
            cx=(color.cx + 0.5 - x0) / cw - 0.5, cy=(color.cy + 0.5 - y0) / ch - 0.5,
            width=self.grid_w, height=self.grid_h, depth_scale=color.depth_scale,
        )

    def crop(self, img: np.ndarray) -> np.ndarray:
        """The ROI of a colour-resolution image (a view; whole pixels)."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.roi)
        return img[y0:y1, x0:x1]


def area_resize(
    img: np.ndarray, width: int, height: int, buffers: dict | None = None
) -> np.ndarray:
    """Antialiased downscale (pixel-area averaging), halving first while the factor allows.

    OpenCV's INTER_AREA has a SIMD path for exactly 2×: 1920×1080 → 960×540 → 480×270 → 256×256
    costs 2 ms where one direct INTER_AREA resize costs 9 ms (one core, measured), and two
    halvings average exactly the 4×4 blocks one 4× step would. ``buffers`` (a dict the caller
    keeps) holds the intermediate images between calls, so a camera loop allocates none.
    """
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img

    def resize(src: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
        if buffers is None:
            return cv2.resize(src, size, interpolation=interp)
        key = (size, src.shape[2:], src.dtype.str)
        dst = buffers.get(key)
        if dst is None:
            dst = buffers[key] = np.empty((size[1], size[0], *src.shape[2:]), src.dtype)
        return cv2.resize(src, size, dst=dst, interpolation=interp)

    while w >= 2 * width and h >= 2 * height and w % 2 == 0 and h % 2 == 0:
        w, h = w // 2, h // 2
        img = resize(img, (w, h), cv2.INTER_AREA)
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if (width <= w and height <= h) else cv2.INTER_LINEAR
    return resize(img, (width, height), interp)


def _coeffs(intr: Intrinsics) -> np.ndarray:
    return np.asarray(intr.coeffs, dtype=np.float64)


def project_points(points: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)`` of camera-frame points ``(N, 3)`` (rsutil.h's
    ``rs2_project_point_to_pixel``); points with z ≤ 0 get NaN."""
    z = points[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(z > 0, 1.0 / z, np.nan)
    x, y = points[:, 0] * inv, points[:, 1] * inv
    k = _coeffs(intr)
    if intr.model in _FORWARD_MODELS and np.any(k):
        r2 = x * x + y * y
        f = 1 + k[0] * r2 + k[1] * r2 * r2 + k[4] * r2 * r2 * r2
        if intr.model == "brown_conrady":  # tangential terms on the undistorted x, y
            xf, yf = x * f, y * f
            x, y = (xf + 2 * k[2] * x * y + k[3] * (r2 + 2 * x * x),
                    yf + 2 * k[3] * x * y + k[2] * (r2 + 2 * y * y))
        else:  # modified / inverse Brown–Conrady: tangential terms on the radially scaled x, y
            x, y = x * f, y * f
            x, y = (x + 2 * k[2] * x * y + k[3] * (r2 + 2 * x * x),
                    y + 2 * k[3] * x * y + k[2] * (r2 + 2 * y * y))
    elif intr.model not in ("none", *_FORWARD_MODELS) and np.any(k):
        raise ValueError(f"distortion model {intr.model!r} is not supported for registration")
    return x * intr.fx + intr.cx, y * intr.fy + intr.cy


def _rays(intr: Intrinsics, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalised rays (x/z, y/z) of every ``stride``-th depth pixel and their indices."""
    rows = np.arange(stride // 2, intr.height, stride)
    cols = np.arange(stride // 2, intr.width, stride)
    x = (cols - intr.cx) / intr.fx
    y = (rows - intr.cy) / intr.fy
    k = _coeffs(intr)
    xx, yy = np.meshgrid(x, y)
    if np.any(k) and intr.model in ("inverse_brown_conrady", "brown_conrady"):
        # Undistort iteratively, as rs2_deproject_pixel_to_point (10 iterations).
        x0, y0 = xx.copy(), yy.copy()
        for _ in range(10):
            r2 = xx * xx + yy * yy
            icd = 1.0 / (1 + ((k[4] * r2 + k[1]) * r2 + k[0]) * r2)
            xq, yq = (xx / icd, yy / icd) if intr.model == "inverse_brown_conrady" else (xx, yy)
            dx = 2 * k[2] * xq * yq + k[3] * (r2 + 2 * xq * xq)
            dy = 2 * k[3] * xq * yq + k[2] * (r2 + 2 * yq * yq)
            xx, yy = (x0 - dx) * icd, (y0 - dy) * icd
    elif np.any(k) and intr.model != "none":
        raise ValueError(f"depth distortion model {intr.model!r} is not supported")
    return xx.astype(np.float32), yy.astype(np.float32), rows, cols


class _RayCache:
    """Per depth pixel, the direction of its ray in the colour camera's frame (rotation
    applied): depends on the intrinsics, the stride and the extrinsics only, so it is computed
    once per stream, and each frame costs a multiply-add per point."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def get(
        self, intr: Intrinsics, stride: int, extr: Extrinsics
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (intr, stride, extr.rotation.tobytes())
        if key != self._key:
            xr, yr, _, _ = _rays(intr, stride)
            r = extr.rotation.astype(np.float32)
            # p_colour = R · (z·(x, y, 1)) + t = z · (R·(x, y, 1)) + t
            self._value = tuple(  # type: ignore[assignment]
                np.ascontiguousarray(r[i, 0] * xr + r[i, 1] * yr + r[i, 2]) for i in range(3)
            )
            self._key = key
        return self._value  # type: ignore[return-value]


_RAYS = _RayCache()


def splat_depth(
    points: np.ndarray, intr: Intrinsics, grid: WorkingGrid, out: np.ndarray | None = None
) -> np.ndarray:
    """Z-buffer the points ``(N, 3)`` (already in the colour camera's frame) onto ``grid``:
    float32 ``grid_h × grid_w`` of the nearest z per cell, 0 where nothing landed."""
    pts = np.asarray(points, dtype=np.float32)
    return _splat(pts[:, 0], pts[:, 1], pts[:, 2], intr, grid, out)


def _splat(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, intr: Intrinsics, grid: WorkingGrid,
    out: np.ndarray | None,
) -> np.ndarray:
    """`splat_depth` on coordinate arrays of any (equal) shape; z ≤ 0 = no point."""
    if out is None:
        out = np.empty((grid.grid_h, grid.grid_w), np.float32)
    zbuf = out.reshape(-1)
    zbuf.fill(np.inf)
    x0, y0, _, _ = grid.roi
    cw, ch = grid.cell
    front = z > 0
    if intr.model in _FORWARD_MODELS and np.any(_coeffs(intr)):
        x, y, z = x[front], y[front], z[front]
        u, v = project_points(np.stack([x, y, z], axis=-1), intr)
        gx = (u + 0.5 - x0) * np.float32(1 / cw)
        gy = (v + 0.5 - y0) * np.float32(1 / ch)
    else:
        if intr.model not in ("none", *_FORWARD_MODELS) and np.any(_coeffs(intr)):
            raise ValueError(f"distortion model {intr.model!r} is not supported for registration")
        # grid coordinate = (f·x/z + c + 0.5 − roi origin) / cell, folded into one scale/offset
        inv = np.divide(1.0, z, out=np.zeros_like(z), where=front)
        gx = x * inv
        gx *= np.float32(intr.fx / cw)
        gx += np.float32((intr.cx + 0.5 - x0) / cw)
        gy = y * inv
        gy *= np.float32(intr.fy / ch)
        gy += np.float32((intr.cy + 0.5 - y0) / ch)
    ok = front if gx.shape == front.shape else np.ones(gx.shape, bool)
    ok = ok & (gx >= 0) & (gx < grid.grid_w) & (gy >= 0) & (gy < grid.grid_h)
    flat = gy[ok].astype(np.intp) * grid.grid_w + gx[ok].astype(np.intp)
    np.minimum.at(zbuf, flat, z[ok])
    zbuf[zbuf == np.inf] = 0.0
    return out


def _close_single_holes(z: np.ndarray) -> np.ndarray:
    """Cells no sample landed in because of the sampling phase (not real holes): an empty cell
    whose neighbours left and right (or above and below) are both valid takes the nearer."""
    empty = z == 0
    if not empty.any():
        return z
    big = np.pad(np.where(empty, np.float32(np.inf), z), 1, constant_values=np.inf)
    left, right = big[1:-1, :-2], big[1:-1, 2:]
    up, down = big[:-2, 1:-1], big[2:, 1:-1]
    horiz = np.where(np.isfinite(left) & np.isfinite(right), np.minimum(left, right), np.inf)
    vert = np.where(np.isfinite(up) & np.isfinite(down), np.minimum(up, down), np.inf)
    fill = np.minimum(horiz, vert)
    fill[~np.isfinite(fill)] = 0.0
    return np.where(empty, fill, z).astype(np.float32, copy=False)


def register_depth(
    depth_raw: np.ndarray,
    depth_scale: float,
    depth_intr: Intrinsics,
    depth_to_color: Extrinsics,
    color_intr: Intrinsics,
    grid: WorkingGrid,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Depth (raw Z16 units × ``depth_scale`` = metres) as seen from the colour camera, on
    ``grid``: float32 ``grid_h × grid_w`` metres, 0 = no return.

    Only as many depth pixels are read as the grid can tell apart (a stride of about one grid
    cell), so the cost follows the grid, not the camera.
    """
    if depth_raw.shape != (depth_intr.height, depth_intr.width):
        raise ValueError(
            f"depth image {depth_raw.shape} does not match its intrinsics "
            f"{depth_intr.width}x{depth_intr.height}"
        )
    # Depth pixels per grid cell, roughly (focal ratio × cell size); sample at least once a cell.
    cw, ch = grid.cell
    per_cell = min(cw * depth_intr.fx / color_intr.fx, ch * depth_intr.fy / color_intr.fy)
    stride = max(1, int(math.floor(per_cell)))
    ax, ay, az = _RAYS.get(depth_intr, stride, depth_to_color)
    z = depth_raw[stride // 2::stride, stride // 2::stride][: ax.shape[0], : ax.shape[1]]
    z = z.astype(np.float32)
    z *= np.float32(depth_scale)
    t = depth_to_color.translation.astype(np.float32)
    valid = z > 0  # no return stays no return (the translation would move it off zero)
    px, py, pz = z * ax, z * ay, z * az
    if np.any(t):
        px += t[0]
        py += t[1]
        pz += t[2]
    pz[~valid] = 0.0
    out = _splat(px, py, pz, color_intr, grid, out)
    return _close_single_holes(out)
