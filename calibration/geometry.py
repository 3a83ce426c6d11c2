"""The station's geometry record and its comparison with the training data (numpy only).

Preprocessing (edge/processing/preprocess.py, trd-model.md §9.2) removes the background as the plane
through three image corners and keeps what lies more than ``plane_distance`` above it. What a
model learnt therefore depends on how the camera sees the scene: how far away the plane is
(object size in pixels), how tilted it is (depth gradients and normals change, corners move
off the support), how many points are missing (hole filling invents surface) and how noisy the
background is (the foreground mask frays). `GeometryAccumulator` measures these per frame with
the *same* helpers preprocessing uses; `compare_geometry` warns where the station differs from
the training set enough to hurt.

The station's depth noise (`plane_noise`) is measured the way Intel's Depth Quality Tool
measures a camera's RMS error: the residual RMS of a plane fitted to a flat surface, here the
support around the part (foreground and a margin around it excluded, so rims, shadows and flying
pixels do not count). It is what decides which geometry defects the station can see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.frames import Frame
from edge.processing.geometry import fit_background_plane, foreground_mask

__all__ = [
    "FrameGeometry",
    "GeometryAccumulator",
    "GeometryTolerance",
    "SceneGeometry",
    "StationRecord",
    "compare_geometry",
    "measure_xyz",
    "plane_noise",
    "training_geometry",
]


class FrameGeometry(BaseModel):
    """Geometry of one organised cloud (metres, degrees, ratios)."""

    plane_normal: tuple[float, float, float]  # unit, pointing towards the camera
    plane_distance_m: float  # perpendicular distance camera centre → background plane
    tilt_deg: float  # angle between the plane normal and the optical axis
    z_min_m: float  # 1st percentile of valid z (near end of the working range)
    z_max_m: float  # 99th percentile of valid z (far end)
    holes_ratio: float  # pixels with no 3D point
    foreground_ratio: float  # pixels preprocessing keeps as object
    object_height_m: float  # 99th percentile of foreground height above the plane
    background_noise_m: float  # robust std of background distances to the plane
    depth_noise_rms_m: float | None = None  # plane-fit residual RMS on flat background


class SceneGeometry(BaseModel):
    """Median geometry over a set of frames (station or training set)."""

    model_config = ConfigDict(extra="forbid")

    n_frames: int
    n_failed: int = 0  # frames whose corners gave no plane (object on a corner, no returns)
    plane_normal: tuple[float, float, float]
    plane_distance_m: float
    tilt_deg: float
    working_range_m: tuple[float, float]
    holes_ratio: float
    foreground_ratio: float
    object_height_m: float
    background_noise_m: float
    image_size: tuple[int, int]  # (height, width) of the clouds
    # plane-fit residual RMS on the flat background (`plane_noise`); None: not measurable
    depth_noise_rms_m: float | None = None


class StationRecord(BaseModel):
    """What `trd-edge calibrate` stores in ``BUNDLE/calibration/station.json``."""

    model_config = ConfigDict(extra="forbid")

    fitted_at: str
    source: str
    depth_scale: float | None = None
    intrinsics: dict[str, float] | None = None
    preprocess: dict = Field(default_factory=dict)
    station: SceneGeometry | None = None
    training: SceneGeometry | None = None
    training_note: str = ""
    warnings: list[str] = Field(default_factory=list)
    calibration: dict = Field(default_factory=dict)
    # smallest detectable dent at the measured noise (calibration.sensitivity); None: no noise
    sensitivity: dict | None = None


def plane_noise(
    xyz: np.ndarray, foreground: np.ndarray | None = None, margin_px: int = 3,
    min_points: int = 200,
) -> tuple[float, int] | None:
    """Depth noise of a cloud: residual RMS (m) of a plane fitted to its flat background.

    Fits ``1/z = a·(x/z) + b·(y/z) + c`` (exact for any plane seen by a pinhole camera, and
    ``x/z``, ``y/z`` are the pixel rays, free of depth noise) by least squares to valid pixels
    outside ``foreground`` dilated by ``margin_px``; residuals are along z. Refits drop points
    beyond 4 σ (flying pixels the margin missed). Returns ``(rms, points used)``,
    or None when fewer than ``min_points`` background points remain.
    """
    xyz = np.asarray(xyz, np.float32)
    z = xyz[..., 2].astype(np.float64)
    keep = np.isfinite(z) & (z > 0)
    if foreground is not None and foreground.any():
        k = 2 * int(margin_px) + 1
        grown = cv2.dilate(foreground.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        keep &= ~grown
    if keep.sum() < min_points:
        return None
    zk = z[keep]
    a = np.stack([xyz[..., 0][keep] / zk, xyz[..., 1][keep] / zk, np.ones_like(zk)], axis=1)
    inliers = np.ones(zk.shape, bool)
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(a[inliers], 1.0 / zk[inliers], rcond=None)
        resid = zk - 1.0 / (a @ coef)
        # σ-clipping with the RMS, not the MAD: depth quantised coarser than its noise puts
        # most residuals on one value, and a MAD of ~0 would then discard every other one.
        sigma = float(np.sqrt(np.mean(resid[inliers] ** 2)))
        new = np.abs(resid) <= 4.0 * sigma
        if new.sum() < min_points or np.array_equal(new, inliers):
            break
        inliers = new
    return float(np.sqrt(np.mean(resid[inliers] ** 2))), int(inliers.sum())


def measure_xyz(
    xyz: np.ndarray, plane_distance: float = 0.005, closing_iterations: int = 3
) -> FrameGeometry:
    """Measure one ``H×W×3`` cloud; raises ValueError when the corner plane is degenerate."""
    xyz = np.asarray(xyz, np.float32)
    valid = xyz[..., 2] != 0
    if not valid.any():
        raise ValueError("the cloud has no valid 3D point")
    plane = fit_background_plane(xyz)
    norm = float(np.linalg.norm(plane.normal))
    if not norm > 0:
        raise ValueError("degenerate background plane (image corners show no background)")
    n = plane.normal / norm
    d = plane.offset / norm
    if d > 0:  # orient towards the camera at the origin: n·p = d < 0 for points on the plane
        n, d = -n, -d
    fg = foreground_mask(xyz, plane_distance, closing_iterations, plane=plane)
    dist = plane.distance(xyz)
    z = xyz[..., 2][valid]
    bg = valid & ~fg
    bg_d = dist[bg]
    noise = float(1.4826 * np.median(np.abs(bg_d - np.median(bg_d)))) if bg_d.size else 0.0
    fg_valid = fg & valid
    height = float(np.percentile(dist[fg_valid], 99)) if fg_valid.any() else 0.0
    flat = plane_noise(xyz, fg)
    return FrameGeometry(
        plane_normal=tuple(float(v) for v in n),
        plane_distance_m=float(abs(d)),
        tilt_deg=math.degrees(math.acos(min(1.0, abs(float(n[2]))))),
        z_min_m=float(np.percentile(z, 1)),
        z_max_m=float(np.percentile(z, 99)),
        holes_ratio=float(1.0 - valid.mean()),
        foreground_ratio=float(fg.mean()),
        object_height_m=height,
        background_noise_m=noise,
        depth_noise_rms_m=flat[0] if flat is not None else None,
    )


class GeometryAccumulator:
    """Collects per-frame geometry (every ``every``-th frame) and the camera's intrinsics."""

    def __init__(
        self, plane_distance: float = 0.005, closing_iterations: int = 3, every: int = 1
    ) -> None:
        self.plane_distance = plane_distance
        self.closing_iterations = closing_iterations
        self.every = max(1, int(every))
        self.frames: list[FrameGeometry] = []
        self.failed = 0
        self.seen = 0
        self.size: tuple[int, int] | None = None
        self.intrinsics = None

    def add_xyz(self, xyz: np.ndarray) -> None:
        """Measure one cloud (failures are counted, not raised: one bad frame is no verdict)."""
        self.seen += 1
        if (self.seen - 1) % self.every:
            return
        self.size = (int(xyz.shape[0]), int(xyz.shape[1]))
        try:
            self.frames.append(measure_xyz(xyz, self.plane_distance, self.closing_iterations))
        except ValueError:
            self.failed += 1

    def add(self, frame: Frame) -> None:
        """Measure a frame and keep the first intrinsics seen."""
        if self.intrinsics is None and frame.intrinsics is not None:
            self.intrinsics = frame.intrinsics
        self.add_xyz(frame.xyz)

    def result(self) -> SceneGeometry | None:
        """Medians over the measured frames; None if none could be measured."""
        if not self.frames:
            return None
        f = self.frames

        def med(name: str) -> float:
            return float(np.median([getattr(g, name) for g in f]))

        rms = [g.depth_noise_rms_m for g in f if g.depth_noise_rms_m is not None]
        normal = np.median(np.array([g.plane_normal for g in f]), axis=0)
        normal = normal / max(float(np.linalg.norm(normal)), 1e-12)
        return SceneGeometry(
            n_frames=len(f),
            n_failed=self.failed,
            plane_normal=tuple(float(v) for v in normal),
            plane_distance_m=med("plane_distance_m"),
            tilt_deg=med("tilt_deg"),
            working_range_m=(
                float(min(g.z_min_m for g in f)),
                float(max(g.z_max_m for g in f)),
            ),
            holes_ratio=med("holes_ratio"),
            foreground_ratio=med("foreground_ratio"),
            object_height_m=med("object_height_m"),
            background_noise_m=med("background_noise_m"),
            image_size=self.size or (0, 0),
            depth_noise_rms_m=float(np.median(rms)) if rms else None,
        )


def training_geometry(
    dataset: str, category: str, preprocess: dict, max_samples: int = 16
) -> tuple[SceneGeometry | None, str]:
    """Geometry of the training split the bundle was trained on, when it is reachable here.

    Returns ``(geometry or None, note)``; the note says where it came from or why not.
    """
    from edge.datasets.dataset_io import DatasetError, list_samples, load_raw

    if not dataset or not category:
        return None, (
            "the bundle's provenance names no dataset/category: station geometry "
            "stored alone, no comparison"
        )
    try:
        records = list_samples(dataset, category, "train")
    except (DatasetError, OSError) as exc:
        return None, (
            f"training data {dataset} ({category}) is not reachable here ({exc}): "
            "station geometry stored alone, no comparison"
        )
    if records[0].kind != "mvtec3d":
        return None, (
            f"training data {dataset} ({category}) has no point clouds (precomputed "
            "normals): station geometry stored alone, no comparison"
        )
    idx = np.unique(np.linspace(0, len(records) - 1, min(max_samples, len(records))).astype(int))
    acc = GeometryAccumulator(
        float(preprocess.get("plane_distance", 0.005)),
        int(preprocess.get("closing_iterations", 3)),
    )
    for i in idx:
        try:
            raw = load_raw(records[i])
        except (DatasetError, OSError, ValueError):
            acc.failed += 1
            continue
        acc.add_xyz(raw.xyz)
    geo = acc.result()
    if geo is None:
        return None, f"no training sample of {dataset} ({category}) could be measured"
    return geo, f"{geo.n_frames} training samples of {dataset} ({category}, split train)"


class GeometryTolerance(BaseModel):
    """How far the station may drift from the training geometry before we warn."""

    distance_rel: float = 0.15  # ±15 % distance ≈ ±15 % object size in pixels
    tilt_deg: float = 5.0
    holes_abs: float = 0.05  # absolute difference of the missing-point ratio
    foreground_rel: float = 0.5  # apparent object area ±50 %
    noise_rel: float = 0.5  # depth noise up to 1.5 × training's
    noise_abs_m: float = 0.0001  # ... or 0.1 mm above it, whichever is larger


def compare_geometry(
    station: SceneGeometry,
    training: SceneGeometry | None,
    plane_distance: float = 0.005,
    tol: GeometryTolerance | None = None,
) -> list[str]:
    """Warnings, each saying what differs, by how much and why it hurts (empty: all fine)."""
    tol = tol or GeometryTolerance()
    out: list[str] = []
    if station.n_failed and station.n_failed >= station.n_frames:
        out.append(
            f"the background plane could not be fitted on {station.n_failed} frames: the image "
            "corners must show the support surface (preprocessing fits the plane there)"
        )
    if station.background_noise_m > plane_distance / 2:
        out.append(
            f"background depth noise {station.background_noise_m * 1e3:.1f} mm is more than half "
            f"the foreground cut ({plane_distance * 1e3:.1f} mm): the object mask will fray; "
            "enable the RealSense spatial/temporal filters or move closer"
        )
    if training is None:
        return out
    ratio = station.plane_distance_m / max(training.plane_distance_m, 1e-12)
    if ratio > 50 or ratio < 0.02:
        out.append(
            f"station distance {station.plane_distance_m:.4g} vs training "
            f"{training.plane_distance_m:.4g}: the units differ (metres vs millimetres?); "
            "clouds must be in metres"
        )
        return out
    if abs(ratio - 1.0) > tol.distance_rel:
        out.append(
            f"camera-to-background distance {station.plane_distance_m:.3f} m vs "
            f"{training.plane_distance_m:.3f} m in training ({(ratio - 1) * 100:+.0f} %): parts "
            "appear at another scale, which the model reads as anomalous; mount the camera at "
            "the training distance or retrain on station data"
        )
    dt = station.tilt_deg - training.tilt_deg
    if abs(dt) > tol.tilt_deg:
        out.append(
            f"background tilt {station.tilt_deg:.1f}° vs {training.tilt_deg:.1f}° in training "
            f"({dt:+.1f}°): depth gradients and normals shift; level the support or the camera"
        )
    dh = station.holes_ratio - training.holes_ratio
    if abs(dh) > tol.holes_abs:
        out.append(
            f"missing 3D points {station.holes_ratio:.1%} vs {training.holes_ratio:.1%} in "
            f"training: hole filling invents surface where data is missing and the 3D score "
            "rises; check exposure, reflections and the working range"
        )
    sn, tn = station.depth_noise_rms_m, training.depth_noise_rms_m
    if sn is not None and tn is not None and sn > max(tn * (1 + tol.noise_rel), tn + tol.noise_abs_m):
        out.append(
            f"depth noise {sn * 1e3:.2f} mm RMS vs {tn * 1e3:.2f} mm in training: geometry "
            "defects near the noise go unseen and good parts score higher; average still "
            "frames (camera.realsense.average_frames), move the camera closer, or retrain on "
            "station data"
        )
    if training.foreground_ratio > 0:
        fr = station.foreground_ratio / training.foreground_ratio
        if abs(fr - 1.0) > tol.foreground_rel:
            out.append(
                f"the object covers {station.foreground_ratio:.1%} of the image vs "
                f"{training.foreground_ratio:.1%} in training: different zoom, distance or part"
            )
    return out


def scene_lines(g: SceneGeometry) -> Iterable[str]:
    """Human-readable lines for the text report."""
    yield f"  frames measured      {g.n_frames} (plane fit failed on {g.n_failed})"
    yield f"  background distance  {g.plane_distance_m:.4f} m, tilt {g.tilt_deg:.1f}°"
    yield (f"  working range (z)    {g.working_range_m[0]:.4f} – {g.working_range_m[1]:.4f} m")
    yield f"  missing points       {g.holes_ratio:.2%}"
    yield f"  object area / height {g.foreground_ratio:.1%} / {g.object_height_m * 1e3:.1f} mm"
    yield f"  background noise     {g.background_noise_m * 1e3:.2f} mm"
    if g.depth_noise_rms_m is not None:
        yield (f"  depth noise (RMS)    {g.depth_noise_rms_m * 1e3:.3f} mm, plane fit on the flat "
               f"background; holes {g.holes_ratio:.2%}")
    else:
        yield "  depth noise (RMS)    not measurable (too little flat background)"
