"""Pose normalisation: turn a freely lying part into one canonical position before the model.

A station without a fixture sees its part at any angle. TRD's student learns to reproduce the
teacher's features on the orientations it was trained on; with a few dozen good images of a part
that lies at any angle it sees few of them, and good parts at unseen angles score like defects
(docs/offline-teachers.md: the synthetic bracket went from fused I-AUROC 0.75 to 0.9+ with this).
Classic machine vision solves it before inspection by aligning the part; we do the same:

1. The part is what stands off the background plane (`edge.geometry.foreground_mask`).
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.geometry import Plane, fit_background_plane, foreground_mask

MIN_ELONGATION = 1.3  # ratio of the mask's principal second moments below which we do not turn


@dataclass(frozen=True)
class Pose:
    """Where the part lay in the camera frame and the warp that puts it in canonical position."""

    centre: tuple[float, float]  # part centroid in camera pixels (x, y)
    angle_deg: float  # counter-clockwise turn applied to the frame (0 for round parts)
    matrix: np.ndarray  # 2×3 affine: camera pixel → aligned pixel (same H×W canvas)
    size: tuple[int, int]  # (H, W) of the frame and of the aligned canvas

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
            border = [float(m.min()) if fill is None else float(fill) for m in chunk]
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
) -> Pose | None:
    """The part's pose from an organised cloud (H×W×3, metres), or None when nothing stands off
    the background plane (an empty station: nothing to align)."""
    plane = fit_background_plane(xyz)
    fg = foreground_mask(xyz, plane_distance, closing_iterations, plane=plane)
    return pose_from_mask(xyz, fg, plane, min_elongation)


def pose_from_mask(
    xyz: np.ndarray, fg: np.ndarray, plane: Plane, min_elongation: float = MIN_ELONGATION
) -> Pose | None:
    """`estimate_pose` from a background plane and foreground mask already computed (the
    working pipeline fits them once per frame and reuses them here)."""
    ys, xs = np.nonzero(fg)
    if len(xs) < 10:
        return None
    cx, cy = float(xs.mean()), float(ys.mean())
    dx, dy = xs - cx, ys - cy
    mu20, mu02, mu11 = float((dx * dx).mean()), float((dy * dy).mean()), float((dx * dy).mean())
    spread = math.hypot(mu20 - mu02, 2 * mu11)
    lam_big, lam_small = (mu20 + mu02 + spread) / 2, (mu20 + mu02 - spread) / 2
    angle = 0.0
    if lam_big >= min_elongation * max(lam_small, 1e-9):
        theta = 0.5 * math.atan2(2 * mu11, mu20 - mu02)
        u = dx * math.cos(theta) + dy * math.sin(theta)
        valid = xyz[ys, xs, 2] != 0  # closed-over dropouts have no height
        height = plane.distance(xyz[ys, xs])
        if float((height * u)[valid].sum()) < 0:
            theta += math.pi
        angle = math.degrees(theta)
    h, w = xyz.shape[:2]
    # image y points down: rotating by +θ (OpenCV's counter-clockwise in a y-up view) brings the
    # axis at angle θ (measured in y-down pixels) onto +x
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[0, 2] += (w - 1) / 2 - cx
    matrix[1, 2] += (h - 1) / 2 - cy
    return Pose(centre=(cx, cy), angle_deg=angle, matrix=matrix, size=(h, w))
