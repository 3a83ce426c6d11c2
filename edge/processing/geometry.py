"""Point-cloud helpers shared by every 3D preprocessing path (torch-free).

These follow the TRD reference preprocessing (design/trd-model.md §9.2), which itself comes from
the BTF / M3DM lineage on MVTec 3D-AD: the background is a plane estimated from three image
corners, everything farther than a few millimetres from it is foreground, and small holes are
filled by averaging valid neighbours. A RealSense depth frame is first deprojected with
`depth_to_xyz` so that it meets exactly the same code as an MVTec 3D-AD xyz TIFF.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Plane",
    "check_xyz",
    "depth_to_xyz",
    "fill_dropouts",
    "plane_depth",
    "fill_holes",
    "fit_background_plane",
    "foreground_mask",
    "grid_to_xyz",
    "normals_image",
]

# Edge length of the corner patches used to estimate the background plane (§9.2).
_CORNER_PATCH = 3
_EPS_COUNT = 1e-12


@dataclass(frozen=True)
class Plane:
    """A plane ``normal·x = offset``; ``normal`` is not unit length (as in the reference)."""

    normal: np.ndarray
    offset: float

    def norm(self) -> float:
        """Length of ``normal``; raises for a degenerate plane (no normal)."""
        norm = float(np.linalg.norm(self.normal))
        if norm == 0.0:
            raise ValueError(
                "degenerate background plane (the three corner points are collinear or missing); "
                "make sure the image corners show the background surface"
            )
        return norm

    def distance(self, xyz: np.ndarray) -> np.ndarray:
        """Unsigned point-to-plane distance for an ``H×W×3`` cloud, same units as the cloud."""
        return np.abs(xyz.astype(np.float64, copy=False) @ self.normal - self.offset) / self.norm()


def plane_depth(xyz: np.ndarray, plane: Plane) -> np.ndarray:
    """Per-pixel depth as if the camera looked straight down on the background plane: the
    camera's distance to the plane minus each point's height above it (H×W float32, 0 where
    the cloud has no return).

    Camera z mixes the part's shape with the table's tilt *as the camera sees it*; once a part
    is turned to its canonical pose that tilt arrives from a different side on every part, so
    its flat top takes a different normal each time (docs/any-shape.md). Heights above the
    fitted plane carry the part only. Points on the camera's side of the plane have positive
    height, whichever way the plane's normal points.
    """
    norm = plane.norm()
    side = -1.0 if plane.offset > 0 else 1.0  # the camera (origin) is at height +|offset|/|n|
    height = (xyz.astype(np.float64, copy=False) @ plane.normal - plane.offset) * (side / norm)
    depth = abs(plane.offset) / norm - height
    return np.where(xyz[..., 2] != 0, depth, 0.0).astype(np.float32)


def check_xyz(xyz: np.ndarray, name: str = "xyz") -> np.ndarray:
    """Validate an organised cloud and return it as float32 ``H×W×3`` with NaN/inf set to 0.

    Raises ``ValueError`` naming the problem (wrong rank/channels, non-float dtype, no valid point).
    """
    if not isinstance(xyz, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(xyz).__name__}")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(
            f"{name} must be an organised point cloud of shape H×W×3, got shape {xyz.shape}; "
            "convert a depth map with edge.processing.geometry.depth_to_xyz first"
        )
    if not np.issubdtype(xyz.dtype, np.floating):
        raise ValueError(
            f"{name} must be floating point (metres, float32), got dtype {xyz.dtype}; "
            "convert integer depth units to metres first"
        )
    xyz = xyz.astype(np.float32, copy=False)
    if not np.isfinite(xyz).all():
        # Missing returns are (0,0,0) by convention; NaN/inf would poison the plane fit.
        xyz = np.nan_to_num(xyz, nan=0.0, posinf=0.0, neginf=0.0)
    if not np.any(xyz[..., 2] != 0):
        raise ValueError(f"{name} has no valid 3D points (every z is 0 or NaN)")
    return xyz


def depth_to_xyz(depth_m: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Deproject a depth image (metres) into an organised ``H×W×3`` float32 cloud.

    Pinhole model: ``x = (u − cx)·z / fx``, ``y = (v − cy)·z / fy``. Pixels with depth 0 (or NaN)
    become ``(0, 0, 0)``, the MVTec 3D-AD convention for a missing point.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise ValueError(f"depth_m must be an H×W depth image, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(
            f"depth_m must be float metres, got dtype {depth.dtype}; multiply raw units by the "
            "camera depth scale (e.g. 0.001 for a RealSense Z16 stream) first"
        )
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    z = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    z[z < 0] = 0.0
    h, w = z.shape
    u = (np.arange(w, dtype=np.float32) - np.float32(cx)) / np.float32(fx)
    v = (np.arange(h, dtype=np.float32) - np.float32(cy)) / np.float32(fy)
    xyz = np.empty((h, w, 3), dtype=np.float32)
    xyz[..., 0] = z * u[None, :]
    xyz[..., 1] = z * v[:, None]
    xyz[..., 2] = z
    return xyz


def grid_to_xyz(z: np.ndarray, rays_x: np.ndarray, rays_y: np.ndarray) -> np.ndarray:
    """`depth_to_xyz` for clean depth (float32 metres, 0 = none, no NaN) with precomputed rays
    ``(u − cx)/fx`` (W,) and ``(v − cy)/fy`` (H,): the camera loop's fast path."""
    h, w = z.shape
    xyz = np.empty((h, w, 3), dtype=np.float32)
    np.multiply(z, rays_x[None, :], out=xyz[..., 0])
    np.multiply(z, rays_y[:, None], out=xyz[..., 1])
    xyz[..., 2] = z
    return xyz


def _corner_point(patch: np.ndarray) -> np.ndarray:
    """Mean of a corner patch over its valid (z≠0) points; zero points add 0 to the sum (§9.2)."""
    count = max(float(np.count_nonzero(patch[..., 2] != 0)), _EPS_COUNT)
    return patch.reshape(-1, 3).astype(np.float64).sum(axis=0) / count


def _corner(xyz: np.ndarray, bottom: bool, right: bool) -> np.ndarray:
    """`_corner_point` of one corner's 3×3 patch (the reference), or, where the camera returned
    no depth there, of the smallest square twice, four times … as wide that holds a return: a
    3×3 patch without one would put the plane through the camera's origin, and every pixel of
    the table would count as part. Up to a quarter of the frame's side; beyond that raises."""
    h, w = xyz.shape[:2]
    k = _CORNER_PATCH
    while True:
        rows = slice(h - k, h) if bottom else slice(0, k)
        cols = slice(w - k, w) if right else slice(0, k)
        patch = xyz[rows, cols]
        if np.any(patch[..., 2] != 0):
            return _corner_point(patch)
        if 2 * k > max(min(h, w) // 4, _CORNER_PATCH):
            where = ("bottom" if bottom else "top") + "-" + ("right" if right else "left")
            raise ValueError(
                f"no depth in the {where} {k}×{k} corner of the {w}×{h} cloud: the background "
                "plane is fitted on the view's corners, which must show the table (check the "
                "camera's exposure and range, or the ROI)")
        k *= 2


def fit_background_plane(xyz: np.ndarray) -> Plane:
    """Plane through the mean points of the top-left, top-right and bottom-left 3×3 corners.

    Normal ``n = (p3 − p1) × (p2 − p1)`` and offset ``d = n·p3`` as in the reference code, so the
    corners of the image must show background (the object must not touch them). A corner patch
    without any depth return grows until it has one (`_corner`); with returns it is the
    reference's, bit for bit.
    """
    k = _CORNER_PATCH
    if xyz.shape[0] < k or xyz.shape[1] < k:
        raise ValueError(f"cloud too small for plane fitting: {xyz.shape[:2]} < {k}×{k}")
    p1 = _corner(xyz, bottom=False, right=False)
    p2 = _corner(xyz, bottom=False, right=True)
    p3 = _corner(xyz, bottom=True, right=False)
    normal = np.cross(p3 - p1, p2 - p1)
    return Plane(normal, float(normal @ p3))


def foreground_mask(
    xyz: np.ndarray,
    plane_distance: float = 0.005,
    closing_iterations: int = 3,
    plane: Plane | None = None,
) -> np.ndarray:
    """Boolean ``H×W`` mask of points farther than ``plane_distance`` from the background plane.

    The raw mask is multiplied by ``z ≠ 0`` and then closed with a 3×3 kernel
    ``closing_iterations`` times (fills small dropouts inside the object, §9.2).
    """
    plane = fit_background_plane(xyz) if plane is None else plane
    mask = (plane.distance(xyz) > plane_distance) & (xyz[..., 2] != 0)
    mask_f = mask.astype(np.float32)
    if closing_iterations > 0:
        mask_f = cv2.morphologyEx(
            mask_f, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8), iterations=closing_iterations
        )
    return mask_f > 0


def fill_holes(img: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Replace exact zeros by the mean of the strictly positive values in their 3×3 neighbourhood.

    Zero padding at the border; non-zero pixels are unchanged; repeated ``iterations`` times.
    Works on ``H×W`` or ``H×W×C`` (per channel). Returns float32. Like the reference, this also
    grows the object by up to ``iterations`` pixels into a zero background.
    """
    out = np.asarray(img, dtype=np.float32).copy()
    kernel = np.ones((3, 3), np.float32)
    for _ in range(iterations):
        positive = (out > 0).astype(np.float32)
        pos_vals = out * positive
        total = cv2.filter2D(pos_vals, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        count = cv2.filter2D(positive, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        filled = total / (count + _EPS_COUNT)
        out = np.where(out == 0, filled, out).astype(np.float32)
    return out


# Widths (pixels) of the normalised convolutions `fill_dropouts` tries, smallest first: each
# pass fills the holes its neighbourhood reaches; 16 px covers any dropout a closed mask keeps.
_DROPOUT_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)


def fill_dropouts(z: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Heights ``z`` (H×W, 0 = no return) with every pixel of ``part`` that has no return
    filled from the part's valid pixels around it.

    A stereo camera loses depth in small patches (specular spots, texture-less cells); the
    foreground mask closes over them, but a 0 left inside the part reaches the Sobel normals as
    a spike (after the min–max, 0 is the part's highest level), which the 3D branch scores as a
    defect (docs/any-shape.md: one dropout on a good block outscored every colour stain).
    Each pass is a normalised convolution ``G*(z·v) / G*v`` over valid part pixels ``v`` with a
    wider Gaussian than the last, so small holes take their nearest neighbours' heights and
    large ones a smooth blend; the background never leaks in. Pixels outside ``part`` are
    unchanged. float32.
    """
    z = np.asarray(z, dtype=np.float32)
    part = np.asarray(part, dtype=bool)
    valid = z != 0
    holes = part & ~valid
    if not holes.any():
        return z
    out = z.copy()
    v = (valid & part).astype(np.float32)
    h, w = z.shape
    for sigma in _DROPOUT_SIGMAS:
        # Only the holes' bounding box plus the kernel's reach (OpenCV: radius round(4σ)) is
        # filtered: the same values at the holes for a fraction of the frame's cost.
        ys, xs = np.nonzero(holes)
        m = int(4 * sigma) + 2
        y0, y1, x0, x1 = max(ys.min() - m, 0), min(ys.max() + m + 1, h), max(xs.min() - m, 0), \
            min(xs.max() + m + 1, w)
        win = (slice(y0, y1), slice(x0, x1))
        vw, hw = v[win], holes[win]
        num = cv2.GaussianBlur(out[win] * vw, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        den = cv2.GaussianBlur(vw, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        reached = hw & (den > 1e-3)
        out[win][reached] = num[reached] / den[reached]
        hw &= ~reached  # views: the frame's holes and weights follow
        if not holes.any():
            break
        vw[reached] = 1.0
    return out


def normals_image(z: np.ndarray, ksize: int = 5, dtype: type = np.float64) -> np.ndarray:
    """Encode surface normals of a (normalised) height image as an ``H×W×3`` float32 image in [0,1].

    Gradients with OpenCV Sobel (CV_64F, scale 1, reflect-101 border) of aperture ``ksize``;
    ``n = (−gx, −gy, 1) / ‖·‖`` then ``(n + 1) / 2``. A flat region maps to ``(0.5, 0.5, 1)``.
    The unnormalised Sobel gain grows with ``ksize``, so it also sets how strongly normals tilt
    (§9.4).
    """
    if ksize not in (1, 3, 5, 7):
        raise ValueError(f"sobel ksize must be one of 1, 3, 5, 7 (OpenCV Sobel), got {ksize}")
    # float64 is the reference's precision; the working pipeline passes float32 (the result is
    # stored as float32 either way; on a normalised height image the difference is < 1e-6)
    depth = cv2.CV_64F if np.dtype(dtype) == np.float64 else cv2.CV_32F
    z64 = np.asarray(z, dtype=dtype)
    gx = cv2.Sobel(z64, depth, 1, 0, ksize=ksize)
    gy = cv2.Sobel(z64, depth, 0, 1, ksize=ksize)
    # Written out per channel (no stacked temporary): about 3× faster on a 640×480 frame.
    inv = 0.5 / (np.sqrt(gx * gx + gy * gy + 1.0) + 1e-8)
    out = np.empty(z64.shape + (3,), np.float32)
    out[..., 0] = 0.5 - gx * inv
    out[..., 1] = 0.5 - gy * inv
    out[..., 2] = 0.5 + inv
    return out
