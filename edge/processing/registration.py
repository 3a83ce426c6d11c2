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

from dataclasses import dataclass

import cv2
import numpy as np

from edge.frames import Intrinsics

__all__ = [
    "SUPPORTED_DISTORTION",
    "DepthRegistration",
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


def _sample_positions(n: int, step: float) -> np.ndarray:
    """Pixel indices ``step`` apart (a float: the sampling follows the grid, not the pixels)."""
    if step <= 1.0:
        return np.arange(n)
    return np.unique(np.floor(np.arange(step / 2, n, step)).astype(np.intp))


def _rays(
    intr: Intrinsics, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised rays (x/z, y/z) of the depth pixels at ``rows`` × ``cols``."""
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
    return xx.astype(np.float32), yy.astype(np.float32)


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
    x, y, z = (np.asarray(a, np.float32).reshape(-1) for a in (x, y, z))
    if intr.model in _FORWARD_MODELS and np.any(_coeffs(intr)):
        front = z > 0
        x, y, z = x[front], y[front], z[front]
        u, v = project_points(np.stack([x, y, z], axis=-1), intr)
        gx = ((u + 0.5 - x0) / cw).astype(np.float32)
        gy = ((v + 0.5 - y0) / ch).astype(np.float32)
    else:
        if intr.model not in SUPPORTED_DISTORTION and np.any(_coeffs(intr)):
            raise ValueError(f"distortion model {intr.model!r} is not supported for registration")
        # grid coordinate = (f·x/z + c + 0.5 − roi origin) / cell, folded into one scale/offset;
        # z = 0 gives ±inf/NaN here, which the range test below drops
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.divide(np.float32(1.0), z)
            gx = np.multiply(x, inv)
            gy = np.multiply(y, inv, out=inv)
        gx *= np.float32(intr.fx / cw)
        gx += np.float32((intr.cx + 0.5 - x0) / cw)
        gy *= np.float32(intr.fy / ch)
        gy += np.float32((intr.cy + 0.5 - y0) / ch)
    # truncating casts (NaN/inf become out of range), +1 so that (-1, 0) is not cell 0
    with np.errstate(invalid="ignore"):
        ix = (gx + np.float32(1.0)).astype(np.int32)
        iy = (gy + np.float32(1.0)).astype(np.int32)
    ix -= 1
    iy -= 1
    ok = (ix.view(np.uint32) < grid.grid_w) & (iy.view(np.uint32) < grid.grid_h)
    ok &= z > 0
    flat = iy[ok].astype(np.intp)
    flat *= grid.grid_w
    flat += ix[ok]
    np.minimum.at(zbuf, flat, z[ok])
    zbuf[zbuf == np.inf] = 0.0
    return out


def _close_single_holes(z: np.ndarray) -> np.ndarray:
    """Cells no sample landed in because of the sampling phase (not real holes): an empty cell
    whose neighbours left and right (or above and below) are both valid takes the nearer.
    Works on the empty cells only (a few percent of the grid), in place."""
    h, w = z.shape
    ys, xs = np.nonzero(z[1:-1, 1:-1] == 0)
    if ys.size == 0:
        return z
    ys += 1
    xs += 1
    left, right = z[ys, xs - 1], z[ys, xs + 1]
    up, down = z[ys - 1, xs], z[ys + 1, xs]
    inf = np.float32(np.inf)
    horiz = np.where((left > 0) & (right > 0), np.minimum(left, right), inf)
    vert = np.where((up > 0) & (down > 0), np.minimum(up, down), inf)
    fill = np.minimum(horiz, vert)
    fill[np.isinf(fill)] = 0.0
    z[ys, xs] = fill  # neighbours were read before any write: no hole fills from a filled one
    return z


class DepthRegistration:
    """Registers depth frames of one stream onto a working grid, keeping everything it needs
    between frames: which depth pixels to read, their rays (rotation applied), and every
    temporary array. A camera loop then allocates nothing per frame — which is also what makes
    it fast: fresh half-megabyte temporaries cost page faults, measured at 2.5× the arithmetic.
    One instance per stream; not thread-safe.
    """

    # Depth samples outside the colour image's ROI are wasted work (a D435's depth sees about
    # twice the colour camera's field): after a frame, only the window of samples that landed,
    # plus a margin for parallax, is read; every REFRESH-th frame reads everything again.
    REFRESH = 30
    MARGIN = 0.05  # of the window's extent, at least 4 samples

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rays: tuple = ()
        self._buf: dict[str, np.ndarray] = {}
        self._window: tuple[int, int, int, int] | None = None
        self._frames = 0
        self._flat_key: tuple | None = None
        self._flat = np.empty(0, np.intp)

    def _array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A contiguous array of ``shape`` on a backing buffer kept between frames (it only
        grows), so windows of changing size allocate nothing."""
        n = int(np.prod(shape))
        arr = self._buf.get(name)
        if arr is None or arr.size < n or arr.dtype != np.dtype(dtype):
            arr = self._buf[name] = np.empty(max(n, 1), dtype)
        return arr[:n].reshape(shape)

    def _next_window(self, ok: np.ndarray, offset: tuple[int, int], full: tuple[int, int]) -> None:
        rows_hit = np.flatnonzero(ok.any(axis=1))
        cols_hit = np.flatnonzero(ok.any(axis=0))
        if rows_hit.size == 0 or cols_hit.size == 0:
            self._window = None
            return
        r0, r1 = offset[0] + int(rows_hit[0]), offset[0] + int(rows_hit[-1]) + 1
        c0, c1 = offset[1] + int(cols_hit[0]), offset[1] + int(cols_hit[-1]) + 1
        mr = max(4, int(self.MARGIN * (r1 - r0)))
        mc = max(4, int(self.MARGIN * (c1 - c0)))
        self._window = (max(r0 - mr, 0), min(r1 + mr, full[0]),
                        max(c0 - mc, 0), min(c1 + mc, full[1]))

    def _prepare(self, d_intr: Intrinsics, c_intr: Intrinsics, grid: WorkingGrid,
                 extr: Extrinsics) -> tuple:
        """Sample rows and columns and their rays (cached per stream geometry)."""
        # Depth pixels per grid cell along each axis (focal ratio × cell size); read a little
        # more than one per cell (0.9 × that step), so nearly every cell gets a sample; cells a
        # sample skipped by phase are closed from their neighbours (_close_single_holes).
        cw, ch = grid.cell
        step_x = 0.9 * cw * d_intr.fx / c_intr.fx
        step_y = 0.9 * ch * d_intr.fy / c_intr.fy
        key = (d_intr, round(step_x, 6), round(step_y, 6), extr.rotation.tobytes())
        if key != self._key:
            rows = _sample_positions(d_intr.height, step_y)
            cols = _sample_positions(d_intr.width, step_x)
            xr, yr = _rays(d_intr, rows, cols)
            r = extr.rotation.astype(np.float32)
            # p_colour = R · (z·(x, y, 1)) + t = z · (R·(x, y, 1)) + t
            dirs = tuple(
                np.ascontiguousarray(r[i, 0] * xr + r[i, 1] * yr + r[i, 2]) for i in range(3)
            )
            self._rays = (rows, cols, *dirs)
            self._key = key
        return self._rays

    def __call__(
        self,
        depth_raw: np.ndarray,
        depth_scale: float,
        depth_intr: Intrinsics,
        depth_to_color: Extrinsics,
        color_intr: Intrinsics,
        grid: WorkingGrid,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """See `register_depth`."""
        if depth_raw.shape != (depth_intr.height, depth_intr.width):
            raise ValueError(
                f"depth image {depth_raw.shape} does not match its intrinsics "
                f"{depth_intr.width}x{depth_intr.height}"
            )
        if color_intr.model not in SUPPORTED_DISTORTION and any(color_intr.coeffs):
            raise ValueError(
                f"distortion model {color_intr.model!r} is not supported for registration"
            )
        key_before = self._key
        rows, cols, ax, ay, az = self._prepare(depth_intr, color_intr, grid, depth_to_color)
        full = ax.shape
        if self._key != key_before or self._frames % self.REFRESH == 0:
            self._window = None
        self._frames += 1
        r0, r1, c0, c1 = self._window or (0, full[0], 0, full[1])
        ax, ay, az = ax[r0:r1, c0:c1], ay[r0:r1, c0:c1], az[r0:r1, c0:c1]
        shape = ax.shape
        buf = self._array
        window = (r0, r1, c0, c1, depth_raw.shape[1])
        if self._flat_key != window:  # one gather through flat indices, rebuilt per window
            self._flat = (rows[r0:r1, None] * depth_raw.shape[1] + cols[None, c0:c1]).ravel()
            self._flat_key = window
        z_raw = np.take(np.ascontiguousarray(depth_raw).reshape(-1), self._flat,
                        out=buf("zraw", (self._flat.size,), depth_raw.dtype)).reshape(shape)
        z = buf("z", shape, np.float32)
        np.multiply(z_raw, np.float32(depth_scale), out=z, casting="unsafe")
        valid = np.greater(z, 0, out=buf("valid", shape, np.bool_))
        t = depth_to_color.translation.astype(np.float32)
        px = np.multiply(z, ax, out=buf("px", shape, np.float32))
        py = np.multiply(z, ay, out=buf("py", shape, np.float32))
        pz = np.multiply(z, az, out=buf("pz", shape, np.float32))
        if np.any(t):
            px += t[0]
            py += t[1]
            pz += t[2]
        if color_intr.model in _FORWARD_MODELS and any(color_intr.coeffs):
            pz[~valid] = 0.0  # distorted lenses: the general (allocating) path
            return _close_single_holes(_splat(px, py, pz, color_intr, grid, out))
        # grid coordinate = (f·x/z + c + 0.5 − roi origin) / cell, as a scale and an offset
        x0, y0, _, _ = grid.roi
        cw, ch = grid.cell
        gw, gh = grid.grid_w, grid.grid_h
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.divide(np.float32(1.0), pz, out=buf("inv", shape, np.float32))
            np.multiply(px, inv, out=px)
            np.multiply(py, inv, out=py)
        # +1 so the truncating cast floors every cell ≥ -1; NaN/inf land out of range
        px *= np.float32(color_intr.fx / cw)
        px += np.float32((color_intr.cx + 0.5 - x0) / cw + 1.0)
        py *= np.float32(color_intr.fy / ch)
        py += np.float32((color_intr.cy + 0.5 - y0) / ch + 1.0)
        ix = buf("ix", shape, np.int32)
        iy = buf("iy", shape, np.int32)
        with np.errstate(invalid="ignore"):
            np.copyto(ix, px, casting="unsafe")
            np.copyto(iy, py, casting="unsafe")
        ix -= 1
        iy -= 1
        ok = np.less(ix.view(np.uint32), gw, out=buf("ok", shape, np.bool_))
        tmp = np.less(iy.view(np.uint32), gh, out=buf("tmp", shape, np.bool_))
        ok &= tmp
        ok &= valid
        self._next_window(ok, (r0, c0), full)
        flat = buf("flat", shape, np.intp)
        np.multiply(iy, gw, out=flat, casting="unsafe")
        flat += ix
        # an extra slot at the end takes every point that lands nowhere
        np.copyto(flat, gw * gh, where=np.logical_not(ok, out=tmp))
        if out is None:
            out = np.empty((gh, gw), np.float32)
        zbuf = buf("zbuf", (gw * gh + 1,), np.float32)
        zbuf.fill(np.inf)
        np.minimum.at(zbuf, flat.reshape(-1), pz.reshape(-1))
        grid_z = zbuf[:-1].reshape(gh, gw)
        np.copyto(out, grid_z)
        np.copyto(out, 0.0, where=np.isinf(grid_z, out=buf("empty", (gh, gw), np.bool_)))
        return _close_single_holes(out)


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

    Only as many depth pixels are read as the grid can tell apart (a little more than one per
    cell), so the cost follows the grid, not the camera. A camera loop keeps one
    `DepthRegistration` per stream instead (no allocation per frame).
    """
    return DepthRegistration()(depth_raw, depth_scale, depth_intr, depth_to_color, color_intr,
                               grid, out)
