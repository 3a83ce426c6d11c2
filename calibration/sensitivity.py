"""What a station can see: the smallest geometry defect detectable at its measured depth noise.

`trd-edge calibrate` measures the depth noise (`calibration.geometry.plane_noise`, the residual
RMS of the flat background). This module turns that RMS into the smallest dent depth the model
finds, by interpolating **measured detection curves**: image AUROC of geometry-only defects vs
dent depth (1–5 mm), each measured at one noise level through the stereo camera model
(edge/datasets/sensors.py) with `scripts/sensor_table.py` (docs/sensor-model.md, "Detection vs dent
depth"). A dent counts as detectable when its AUROC reaches `TARGET_AUROC`.

How to read the result: the curves come from one part (the synthetic puck, dents 10–15 mm
across, i.e. about 11–16 px of the 128 px image), the training recipe listed in
`CURVES_RECIPE` (the README's offline recipe) and one seed. A larger model, more epochs or a different part moves them; a
station that needs a guarantee measures its own curve with recordings of real defects. The
lookup is monotone by construction (more noise never sees a smaller dent) and never claims more
than the quietest measurement saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CURVES",
    "CURVES_RECIPE",
    "DENT_DIAMETER_MM",
    "TARGET_AUROC",
    "POOL_REL",
    "DetectionCurve",
    "Sensitivity",
    "pooled",
    "sensitivity_for",
    "smallest_detectable_dent",
]

TARGET_AUROC = 0.95
DENT_DIAMETER_MM = (10.0, 15.0)  # diameter range of the measured dents (min–max of 20)
CURVES_RECIPE = (
    "the README's offline recipe: trd-edge synth puck (128 px, 60 train, 20 good + 20 geometry "
    "test per depth, seed 0 unless marked), trd-edge train resnet18 --teacher-weights offline --image-size "
    "128 --epochs 20 --align principal-axis --sobel-ksize 3 --preprocess reference, fused score"
)


@dataclass(frozen=True)
class DetectionCurve:
    """Image AUROC of geometry-only defects vs dent depth at one measured noise level."""

    station: str  # how it was measured (camera, distance, frames averaged)
    noise_rms_mm: float  # plane-fit RMS the model predicts there (incl. quantisation, ÷√N)
    auroc_by_depth_mm: tuple[tuple[float, float], ...]  # (dent depth mm, AUROC), ascending

    def smallest_depth_mm(self, target: float = TARGET_AUROC) -> float | None:
        """Smallest dent depth whose AUROC reaches ``target`` (linear between the measured
        depths, and only from the last crossing up, so a noisy dip is not bridged);
        None when no measured depth reaches it."""
        pts = self.auroc_by_depth_mm
        # The depth from which on every measured point is at or above the target.
        start = None
        for i in range(len(pts) - 1, -1, -1):
            if pts[i][1] >= target:
                start = i
            else:
                break
        if start is None:
            return None
        if start == 0:
            return pts[0][0]
        (d0, a0), (d1, a1) = pts[start - 1], pts[start]
        return d0 + (target - a0) / (a1 - a0) * (d1 - d0)


# Measured with the recipe above at each camera's default station settings (docs/sensor-model.md,
# "Detection vs dent depth"). Update both together when the curves are re-measured.
CURVES: tuple[DetectionCurve, ...] = (
    # with the height smoothing `trd-edge train` picks for a D405 (σ 3 px; edge.datasets.sensors)
    DetectionCurve("D405 0.2 m, 1 frame, smoothing 3 px", 0.27,
                   ((1, 0.845), (2, 0.985), (3, 1.0), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 16 frames averaged", 0.28,
                   ((1, 0.7825), (2, 0.975), (3, 0.9925), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 16 frames averaged, seed 1", 0.28,
                   ((1, 0.8475), (2, 0.96), (3, 0.985), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 8 frames averaged", 0.40,
                   ((1, 0.5325), (2, 0.85), (3, 0.9725), (4, 0.9975), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 1 frame", 1.12,
                   ((1, 0.5475), (2, 0.555), (3, 0.595), (4, 0.635), (5, 0.675))),
)
# Curves whose noise differs by less than this (relative) measure the same noise level: they
# are averaged depth by depth before the lookup (one seed each; 1/400 AUROC steps).
POOL_REL = 0.10


def pooled(curves: tuple[DetectionCurve, ...]) -> list[DetectionCurve]:
    """``curves`` ordered by noise, with neighbours within `POOL_REL` of each other averaged."""
    ordered = sorted(curves, key=lambda c: c.noise_rms_mm)
    groups: list[list[DetectionCurve]] = []
    for c in ordered:
        if groups and c.noise_rms_mm <= groups[-1][0].noise_rms_mm * (1 + POOL_REL):
            groups[-1].append(c)
        else:
            groups.append([c])
    out = []
    for g in groups:
        if len(g) == 1:
            out.append(g[0])
            continue
        depths = [d for d, _ in g[0].auroc_by_depth_mm]
        if any([d for d, _ in c.auroc_by_depth_mm] != depths for c in g):
            raise ValueError("pooled curves must be measured at the same dent depths")
        mean = tuple((d, sum(c.auroc_by_depth_mm[i][1] for c in g) / len(g))
                     for i, d in enumerate(depths))
        out.append(DetectionCurve(" + ".join(c.station for c in g),
                                  sum(c.noise_rms_mm for c in g) / len(g), mean))
    return out


class Sensitivity(BaseModel):
    """What `calibrate` reports and records about the station's geometry sensitivity."""

    model_config = ConfigDict(extra="forbid")

    noise_rms_mm: float
    smallest_dent_mm: float | None  # None: nothing up to the deepest measured dent
    deepest_measured_mm: float
    target_auroc: float = TARGET_AUROC
    dent_diameter_mm: tuple[float, float] = DENT_DIAMETER_MM
    expected_dent_mm: float | None = None
    # averaging this many times more still frames (noise ÷ √N) would reveal the expected
    # defects by the same curves; None: not needed, or 32 would not be enough
    frames_factor: int | None = None
    # False: the noise is at or below the quietest curve, so the camera is not what limits
    noise_limited: bool = True
    basis: str  # which measured curves the number comes from

    def lines(self) -> list[str]:
        """Human-readable lines for the calibration report."""
        across = f"{self.dent_diameter_mm[0]:g}–{self.dent_diameter_mm[1]:g} mm across"
        if self.smallest_dent_mm is None:
            seen = f"none up to {self.deepest_measured_mm:g} mm deep"
        else:
            seen = f"{self.smallest_dent_mm:.1f} mm deep"
        out = [
            f"  smallest dent seen   {seen} ({across}, AUROC >= {self.target_auroc:g} at "
            f"{self.noise_rms_mm:.2f} mm RMS; {self.basis})",
        ]
        if self.expected_dent_mm is not None:
            out.append(f"  expected defects     {self.expected_dent_mm:g} mm deep (configured)")
        return out

    def warning(self) -> str | None:
        """A warning when the configured defects are shallower than the station can see."""
        if self.expected_dent_mm is None:
            return None
        if self.smallest_dent_mm is not None and self.expected_dent_mm >= self.smallest_dent_mm:
            return None
        limit = (f"{self.smallest_dent_mm:.1f} mm" if self.smallest_dent_mm is not None
                 else f"more than {self.deepest_measured_mm:g} mm")
        if self.noise_limited is False:
            return (
                f"the expected geometry defects ({self.expected_dent_mm:g} mm deep) are below "
                f"what the measured curves see even at this station's low depth noise "
                f"({self.noise_rms_mm:.2f} mm RMS): {limit}; there the model, not the camera, "
                "is the limit: train with the full recipe (README: 128 px, 96 images, 20 "
                "epochs) and measure the station's own curve (docs/sensor-model.md)"
            )
        return (
            f"the expected geometry defects ({self.expected_dent_mm:g} mm deep) are below what "
            f"this station's depth noise ({self.noise_rms_mm:.2f} mm RMS) lets the model see: "
            f"{limit}; average still frames (camera.realsense.average_frames, noise ÷ √N"
            + (f": {self.frames_factor}× the frames averaged now would do" if self.frames_factor
               else "") + "), move the camera closer (noise ∝ distance²) or use a short-range "
            "camera (D405); see docs/sensor-model.md"
        )


def smallest_detectable_dent(
    noise_rms_m: float, target: float = TARGET_AUROC,
    curves: tuple[DetectionCurve, ...] = CURVES,
) -> tuple[float | None, str]:
    """Smallest detectable dent depth (mm; None = deeper than measured) at ``noise_rms_m``.

    Between two measured noise levels the depth is interpolated linearly in log(noise);
    below the quietest curve that curve's value is returned (never a claim beyond what was
    measured), above the noisiest its value (None when it saw nothing). Curves of nearly the
    same noise are averaged first (`pooled`), then a running maximum over noise keeps the
    lookup monotone. Returns ``(depth_mm, basis)``.
    """
    if not noise_rms_m > 0 or not math.isfinite(noise_rms_m):
        raise ValueError(f"noise RMS must be a positive number of metres, got {noise_rms_m}")
    noise = noise_rms_m * 1e3
    ordered = pooled(curves)
    depths: list[float | None] = []
    worst: float | None = 0.0
    for c in ordered:  # monotone: a noisier curve never sees a smaller dent than a quieter one
        d = c.smallest_depth_mm(target)
        worst = None if (d is None or worst is None) else max(worst, d)
        depths.append(worst)
    if noise <= ordered[0].noise_rms_mm:
        return depths[0], f"at or below the quietest measured noise ({ordered[0].station})"
    if noise >= ordered[-1].noise_rms_mm:
        return depths[-1], f"at or above the noisiest measured noise ({ordered[-1].station})"
    for i in range(len(ordered) - 1):
        lo, hi, dlo, dhi = ordered[i], ordered[i + 1], depths[i], depths[i + 1]
        if lo.noise_rms_mm <= noise <= hi.noise_rms_mm:
            basis = f"between {lo.station} and {hi.station}"
            if dlo is None or dhi is None:
                # the noisier curve saw nothing up to its deepest dent: no number to claim
                return (dlo if noise == lo.noise_rms_mm else None), basis
            t = math.log(noise / lo.noise_rms_mm) / math.log(hi.noise_rms_mm / lo.noise_rms_mm)
            return dlo + t * (dhi - dlo), basis
    raise AssertionError("unreachable: noise lies within the measured range")


def sensitivity_for(
    noise_rms_m: float, expected_dent_m: float | None = None, target: float = TARGET_AUROC,
) -> Sensitivity:
    """The station's `Sensitivity` for its measured noise and configured defect depth."""
    if expected_dent_m is not None and not expected_dent_m > 0:
        raise ValueError(f"expected defect depth must be positive (metres), got {expected_dent_m}")
    depth, basis = smallest_detectable_dent(noise_rms_m, target)
    deepest = max(d for c in CURVES for d, _ in c.auroc_by_depth_mm)
    factor = None
    if expected_dent_m is not None and (depth is None or depth > expected_dent_m * 1e3):
        for n in (2, 4, 8, 16, 32):  # assumes temporal noise (a fixed-pattern part stays)
            d, _ = smallest_detectable_dent(noise_rms_m / math.sqrt(n), target)
            if d is not None and d <= expected_dent_m * 1e3:
                factor = n
                break
    return Sensitivity(
        noise_rms_mm=noise_rms_m * 1e3, smallest_dent_mm=depth, deepest_measured_mm=deepest,
        target_auroc=target,
        expected_dent_mm=None if expected_dent_m is None else expected_dent_m * 1e3,
        frames_factor=factor, basis=basis,
        noise_limited=noise_rms_m * 1e3 > min(c.noise_rms_mm for c in CURVES),
    )
