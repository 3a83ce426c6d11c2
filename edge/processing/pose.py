"""Pose normalisation: turn a freely lying part into one canonical position before the model.

A station without a fixture sees its part at any angle. TRD's student learns to reproduce the
teacher's features on the orientations it was trained on; with a few dozen good images of a part
that lies at any angle it sees few of them, and good parts at unseen angles score like defects
(docs/offline-teachers.md: the synthetic bracket went from fused I-AUROC 0.75 to 0.9+ with this).
Classic machine vision solves it before inspection by aligning the part; we do the same:

1. The part is what stands off the background plane (`edge.processing.geometry.foreground_mask`).
2. Its centroid and principal axis come from the mask's second moments (the orientation of the
   equivalent ellipse, ``θ = ½·atan2(2μ11, μ20 − μ02)``).
3. The 180° ambiguity of an axis is settled by height: the end whose points stand higher above
   the plane points to +x (``Σ h·u > 0``, u = position along the axis). Missing points (z = 0)
   are left out: the mask's closing fills them and their "height" would be the camera distance.
4. RGB and the organised cloud are warped together (nearest neighbour for the cloud, so missing
   points stay missing and no flying pixels are invented) so that the centroid lands on the frame
   centre and the axis is horizontal. The model sees the part as if it lay in a fixture.

Turning the cloud's pixel grid, not its coordinates, is what a camera looking straight down would
see if the part were turned about the optical axis: the z-based 3D images (depth and Sobel
normals) are recomputed from it, so the normals turn with the part. The model's maps are in the
aligned frame; `Pose.to_camera` maps them back for heatmaps and defect regions.

A part whose mask is nearly round (second-moment ratio below ``min_elongation``) keeps its angle
and is only centred: its axis would be noise.

``align="auto"`` (`pose_auto`, issue 13) handles every shape. Squares, regular polygons and discs
have isotropic second moments, so the principal axis says nothing about them. Instead:

1. **The outline's symmetry**: the radius of the mask's outer contour as a function of the angle
   about the centroid, r(φ), and its Fourier harmonics c_k = mean(r·e^{ikφ}) / mean(r). An n-fold
   symmetric outline has only harmonics at multiples of n: a square's c4 is about 0.07, a
   hexagon's c6 0.03, a pixelated circle's harmonics stay below 0.005. The order n is the
   strongest harmonic (or its smallest strong divisor), the angle modulo 2π/n is arg(c_n)/n (a
   direction of largest radius turned onto +x). An elongated part (second-moment ratio ≥
   ``min_elongation``) keeps its principal axis (n = 2): the same turn as ``principal-axis``
   whenever height settles the ends (an elongated part without a cue is not flipped by noise).
2. **Which of the n turns, from content**: the first moment of the part's height above the
   plane, M = Σ h·(dx + i·dy), generalises principal-axis's "higher end to +x"; when the height
   is (nearly) symmetric, the same moment of the print (grey level minus its median, on the
   part's interior: the rim's shading would only say where the light is). Normalised by
   Σ|w|·rms radius it is a dimensionless asymmetry; below a threshold it is noise and the part
   truly looks the same under those turns. The turn whose direction is closest to arg M wins; a
   round outline takes arg M itself (a disc turned by its print).
3. A round part without a decisive cue keeps its angle (only centred), as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.processing.geometry import Plane, fit_background_plane, foreground_mask

MIN_ELONGATION = 1.3  # ratio of the mask's principal second moments below which we do not turn
# `pose_auto` thresholds, measured on `trd-edge synth` parts at 128 px (docs/any-shape.md):
OUTLINE_HARMONIC = 0.01  # |c_k| of r(φ)/mean r above which the outline has that symmetry
HEIGHT_ASYMMETRY = 0.05  # normalised height moment that settles the turn (bracket ≈ 0.25)
PRINT_ASYMMETRY = 0.12  # normalised print moment that settles the turn (arrow disc 0.2–0.36)
MAX_ORDER = 12  # harmonics examined (a 12-fold part still has its angle)


@dataclass(frozen=True)
class Pose:
    """Where the part lay in the camera frame and the warp that puts it in canonical position."""

    centre: tuple[float, float]  # part centroid in camera pixels (x, y)
    angle_deg: float  # counter-clockwise turn applied to the frame (0 for round parts)
    matrix: np.ndarray  # 2×3 affine: camera pixel → aligned pixel (same H×W canvas)
    size: tuple[int, int]  # (H, W) of the frame and of the aligned canvas

    def turned(self, degrees: float) -> Pose:
        """This pose followed by a turn of the aligned frame about its centre (counter-clockwise
        on screen, like ``angle_deg``): training's rotation augmentation (`trainer.augment`)."""
        h, w = self.size
        extra = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0),
                           [0, 0, 1]])
        matrix = (extra @ np.vstack([self.matrix, [0, 0, 1]]))[:2]
        return Pose(self.centre, self.angle_deg + degrees, matrix, self.size)

    @classmethod
    def identity(cls, size: tuple[int, int]) -> Pose:
        """No turn, no shift: the camera frame itself (a part left where it lies)."""
        h, w = size
        eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        return cls(((w - 1) / 2, (h - 1) / 2), 0.0, eye, (h, w))

    def warp(self, img: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Warp a camera-frame image (H×W[×C]) into the aligned frame."""
        h, w = self.size
        flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.warpAffine(img, self.matrix, (w, h), flags=flags,
                              borderMode=cv2.BORDER_REPLICATE)

    def to_camera(self, maps: np.ndarray, fill: float | None = None) -> np.ndarray:
        """Map model-frame maps (…, S, S) (the aligned frame resized to S×S) back to the camera
        frame at the same S×S grid; pixels that came from outside the frame get ``fill``
        (default: each map's minimum)."""
        arr = np.asarray(maps, dtype=np.float32)
        s = arr.shape[-1]
        h, w = self.size
        # camera S-grid → camera pixels → aligned pixels → aligned S-grid (pixel-centre resize)
        to_px = np.array([[w / s, 0, 0.5 * w / s - 0.5], [0, h / s, 0.5 * h / s - 0.5], [0, 0, 1]])
        to_s = np.linalg.inv(to_px)
        m = (to_s @ np.vstack([self.matrix, [0, 0, 1]]) @ to_px)[:2]
        flat = arr.reshape(-1, arr.shape[-2], s)
        out = np.empty_like(flat)
        # up to four maps in one warp (OpenCV warps channels together; border value per map)
        for i in range(0, len(flat), 4):
            chunk = flat[i:i + 4]
            border = [float(c.min()) if fill is None else float(fill) for c in chunk]
            src = chunk[0] if len(chunk) == 1 else np.ascontiguousarray(chunk.transpose(1, 2, 0))
            warped = cv2.warpAffine(
                src, m, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT, borderValue=border + [0.0] * (4 - len(border)),
            )
            out[i:i + 4] = warped[None] if len(chunk) == 1 else warped.transpose(2, 0, 1)
        return out.reshape(arr.shape)


def estimate_pose(
    xyz: np.ndarray,
    plane_distance: float = 0.005,
    closing_iterations: int = 3,
    min_elongation: float = MIN_ELONGATION,
    method: str = "principal-axis",
    rgb: np.ndarray | None = None,
) -> Pose | None:
    """The part's pose from an organised cloud (H×W×3, metres), or None when nothing stands off
    the background plane (an empty station: nothing to align). ``method`` "auto" is
    `pose_auto` (any shape; ``rgb`` lets the print settle the turn)."""
    plane = fit_background_plane(xyz)
    fg = foreground_mask(xyz, plane_distance, closing_iterations, plane=plane)
    if method == "auto":
        return pose_auto(xyz, fg, plane, rgb, min_elongation)
    return pose_from_mask(xyz, fg, plane, min_elongation)


@dataclass(frozen=True)
class _MaskMoments:
    """Centroid and second moments of a foreground mask (both alignments start from them)."""

    ys: np.ndarray
    xs: np.ndarray
    cx: float
    cy: float
    dx: np.ndarray
    dy: np.ndarray
    lam_big: float
    lam_small: float
    axis: float  # radians: direction of the larger eigenvalue's axis

    @classmethod
    def of(cls, fg: np.ndarray) -> _MaskMoments | None:
        ys, xs = np.nonzero(fg)
        if len(xs) < 10:
            return None
        cx, cy = float(xs.mean()), float(ys.mean())
        dx, dy = xs - cx, ys - cy
        mu20, mu02 = float((dx * dx).mean()), float((dy * dy).mean())
        mu11 = float((dx * dy).mean())
        spread = math.hypot(mu20 - mu02, 2 * mu11)
        return cls(ys, xs, cx, cy, dx, dy, (mu20 + mu02 + spread) / 2,
                   (mu20 + mu02 - spread) / 2, 0.5 * math.atan2(2 * mu11, mu20 - mu02))

    def elongated(self, min_elongation: float) -> bool:
        """The principal axis is decisive (eigenvalue ratio at least ``min_elongation``)."""
        return self.lam_big >= min_elongation * max(self.lam_small, 1e-9)


def pose_from_mask(
    xyz: np.ndarray, fg: np.ndarray, plane: Plane, min_elongation: float = MIN_ELONGATION
) -> Pose | None:
    """`estimate_pose` from a background plane and foreground mask already computed (the
    working pipeline fits them once per frame and reuses them here)."""
    m = _MaskMoments.of(fg)
    if m is None:
        return None
    ys, xs, cx, cy, dx, dy = m.ys, m.xs, m.cx, m.cy, m.dx, m.dy
    angle = 0.0
    if m.elongated(min_elongation):
        theta = m.axis
        u = dx * math.cos(theta) + dy * math.sin(theta)
        valid = xyz[ys, xs, 2] != 0  # closed-over dropouts have no height
        height = plane.distance(xyz[ys, xs])
        if float((height * u)[valid].sum()) < 0:
            theta += math.pi
        angle = math.degrees(theta)
    return _pose(cx, cy, angle, xyz.shape[:2])


def _pose(cx: float, cy: float, angle: float, size: tuple[int, int]) -> Pose:
    """The pose that puts (cx, cy) on the frame centre turned by ``angle`` degrees."""
    h, w = size
    # image y points down: rotating by +θ (OpenCV's counter-clockwise in a y-up view) brings the
    # axis at angle θ (measured in y-down pixels) onto +x
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[0, 2] += (w - 1) / 2 - cx
    matrix[1, 2] += (h - 1) / 2 - cy
    return Pose(centre=(cx, cy), angle_deg=angle, matrix=matrix, size=size)


def outline_harmonics(fg: np.ndarray, cx: float, cy: float, bins: int = 180) -> np.ndarray:
    """c_1…c_MAX_ORDER of the outer contour's radius r(φ) about (cx, cy), normalised by the
    mean radius (complex; |c_k| is the strength of k-fold structure, arg(c_k)/k its phase).
    Angles are in image pixels (x right, y down), like the rest of this module."""
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    phi = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    r = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy)
    order = np.argsort(phi)
    grid = np.linspace(-math.pi, math.pi, bins, endpoint=False)
    # for a non-star-shaped outline this averages the contour's radii per angle: still symmetric
    radius = np.interp(grid, phi[order], r[order], period=2 * math.pi)
    k = np.arange(1, MAX_ORDER + 1)[:, None]
    return (radius[None, :] * np.exp(1j * k * grid[None, :])).mean(axis=1) / radius.mean()


def symmetry_order(harmonics: np.ndarray, threshold: float = OUTLINE_HARMONIC) -> int:
    """The outline's rotational symmetry order n from `outline_harmonics` (0 = round: no
    harmonic above ``threshold``). An n-fold outline has harmonics at multiples of n only; the
    strongest is taken, or its smallest divisor that is itself clearly present."""
    amp = np.abs(harmonics)
    k_best = int(np.argmax(amp[1:])) + 2  # k = 1 is the centroid's own noise
    if amp[k_best - 1] < threshold:
        return 0
    for d in range(2, k_best):
        if k_best % d == 0 and amp[d - 1] >= max(threshold, 0.25 * amp[k_best - 1]):
            return d
    return k_best


def content_moments(
    xyz: np.ndarray, fg: np.ndarray, plane: Plane, rgb: np.ndarray | None, cx: float, cy: float
) -> tuple[complex, complex]:
    """Normalised first moments (height, print) of the part about its centroid: |M| in [0, 1]
    says how lopsided the cue is, arg M which way (image pixels, y down). Print is 0 without
    ``rgb``."""
    ys, xs = np.nonzero(fg)
    pos = (xs - cx) + 1j * (ys - cy)
    rms = math.sqrt(float(np.mean(np.abs(pos) ** 2))) or 1.0
    valid = xyz[ys, xs, 2] != 0  # closed-over dropouts have no height
    height = np.where(valid, plane.distance(xyz[ys, xs]), 0.0)
    m_h = complex((height * pos).sum() / max(float(np.abs(height).sum()) * rms, 1e-12))
    if rgb is None:
        return m_h, 0j
    ink = interior_ink(fg, rgb, rms)
    if ink is None:
        return m_h, 0j
    ix, iy, dev, w = ink
    ipos = (ix - cx) + 1j * (iy - cy)
    # normalised by all of the deviation: a few stray pixels above the cut do not make a print
    m_p = complex((w * ipos).sum() / max(float(dev.sum()) * rms, 1e-12))
    return m_h, m_p


def interior_ink(
    fg: np.ndarray, rgb: np.ndarray, rms: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The print on a part's interior: pixel columns and rows, each pixel's unsigned grey-level
    deviation from the interior's median, and its "ink" weight (the deviation above 3 robust
    sigmas of the surface's own mottling, else 0). ``rms``: the part's radius of gyration in
    pixels, which sets how much rim is eroded away. None when too little interior is left."""
    # the interior only: a rim's shading is where the light comes from, not what the part is
    erode = max(2, round(0.12 * rms * math.sqrt(2)))
    inner = cv2.erode(fg.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))) > 0
    iy, ix = np.nonzero(inner)
    if len(ix) < 10:
        return None
    grey = rgb[iy, ix].astype(np.float64).mean(axis=1)
    # unsigned "ink": a relief's shading (a groove lit on one side, dark on the other) is
    # symmetric in |deviation| and cancels; a print off the centre does not
    dev = np.abs(grey - np.median(grey))
    # and only what stands out of the surface's own mottling (3 robust sigmas): ink, not texture
    w = np.maximum(dev - 3.0 * 1.4826 * np.median(dev), 0.0)
    return ix, iy, dev, w


def pose_auto(
    xyz: np.ndarray,
    fg: np.ndarray,
    plane: Plane,
    rgb: np.ndarray | None = None,
    min_elongation: float = MIN_ELONGATION,
) -> Pose | None:
    """Pose of a part of any shape (module docstring, ``align="auto"``): the outline's
    symmetry gives the angle modulo 2π/n, height or print settles which of the n turns, a part
    with neither keeps that (round: its own) angle. None when there is no part."""
    m = _MaskMoments.of(fg)
    if m is None:
        return None
    cx, cy = m.cx, m.cy
    if m.elongated(min_elongation):
        order, base = 2, m.axis
    else:
        harmonics = outline_harmonics(fg, cx, cy)
        order = symmetry_order(harmonics)
        base = float(np.angle(harmonics[order - 1])) / order if order else 0.0
    m_h, m_p = content_moments(xyz, fg, plane, rgb, cx, cy)
    if abs(m_h) >= HEIGHT_ASYMMETRY:
        cue: complex | None = m_h
    elif abs(m_p) >= PRINT_ASYMMETRY:
        cue = m_p
    else:
        cue = None
    if cue is None:
        theta = base
    elif order == 0:
        theta = float(np.angle(cue))
    else:  # the turn (of the n) that brings the cue's direction closest to +x
        turns = base + 2 * math.pi * np.arange(order) / order
        theta = float(turns[int(np.argmax(np.cos(turns - np.angle(cue))))])
    return _pose(cx, cy, math.degrees(theta), xyz.shape[:2])
