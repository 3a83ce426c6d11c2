"""What a station can see: the smallest geometry defect detectable at its measured depth noise.

`trd-edge calibrate` measures the depth noise (`calibration.geometry.plane_noise`, the residual
RMS of the flat background). This module turns that RMS into the smallest dent depth the model
finds, by interpolating **measured detection curves**, each measured at one noise level through
the stereo camera model (edge/datasets/sensors.py):

- `MEASURED` (what `calibrate` uses with a false-alarm target): per station and dent diameter
  (5, 10, 15, 20 mm, and the generator's own 10–15 mm), the share of dented parts (1–5 mm
  deep) above the threshold `calibration.threshold.fit_threshold` sets on 200 good parts for
  FPR 5 %, 1 % and 0.1 %, and the AUROC. A dent is found when that share reaches
  `TARGET_DETECTION` at the station's target. Measured with `scripts/sensitivity_table.py` on
  the runs of `scripts/sensor_table.py` (docs/sensor-model.md, "Detection at the false-alarm
  target by dent depth × diameter", which has the commands and the tables).
- `CURVES` (with a best-F1 threshold, no FPR target): image AUROC vs dent depth for dents
  10–15 mm across, 20 good + 20 dented parts ("Detection vs dent depth"); a dent counts as
  detectable when its AUROC reaches `TARGET_AUROC`.

Which curves: the product's, where they were measured. `trd-edge train` defaults to
`--preprocess working` and the station defaults to the averaging that brings the plane RMS to
0.20 mm (32 frames for a D435 at 0.55 m, 2 frames + σ 3 px smoothing for a D405 at 0.2 m), so
the lookup holds the working-preprocessing runs: the two default stations (D435 ×32 seeds 0–2,
D405 ×2 seed 0; 0.19–0.20 mm, pooled) and the D435 ×16 (seeds 0–2, 0.28 mm). A
reference-preprocessing curve stays only at a noise level no working curve is within `POOL_REL`
of — the D435 ×8 (0.40 mm) and one frame (1.12 mm), without which the lookup would claim the
0.28 mm depths for every noisier station — so each pooled level is one recipe and no seed is
counted twice (the reference ×16 seeds 0 and 1 repeat the working ones within a depth step: the
preprocessing changes little on these data, docs/sensor-model.md). Dropped for that reason:
the reference D435 ×16 seeds 0 and 1 and the reference D405 one frame smoothed (0.27 mm, within
10 % of the working ×16).

How to read the result: the curves come from one part (the synthetic puck; 10–15 mm is about
11–16 px of the 128 px image), the training recipe listed in `CURVES_RECIPE` (the README's
offline recipe), three seeds at 0.20 and 0.28 mm (plus the D405 at 0.19 mm) and one at 0.40
and 1.12 mm. The seeds spread by about 1 mm of depth at the station's false-alarm target; a
larger model, more epochs or a different part moves them; a station that needs a guarantee
measures its own curve with recordings of real defects. The lookup is monotone in noise by
construction (more noise never sees a smaller dent) and never claims more than the quietest
measurement saw; detection is not monotone in the diameter, so between two measured diameters
the worse one counts.
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
    "MEASURED",
    "MEASURED_DIAMETERS_MM",
    "MEASURED_FPRS",
    "Measured",
    "Sensitivity",
    "TARGET_DETECTION",
    "pooled",
    "sensitivity_for",
    "smallest_detectable_dent",
    "smallest_detected_dent",
]

TARGET_AUROC = 0.95
DENT_DIAMETER_MM = (10.0, 15.0)  # diameter range of the measured dents (min–max of 20)
CURVES_RECIPE = (
    "the README's offline recipe: trd-edge synth puck (128 px, 60 train, 20 good + 20 geometry "
    "test per depth, seed 0 unless marked), trd-edge train resnet18 --teacher-weights offline --image-size "
    "128 --epochs 20 --align principal-axis --sobel-ksize 3 --preprocess working (train's "
    "default; reference where marked), frame scoring, fused score"
)


@dataclass(frozen=True)
class DetectionCurve:
    """Image AUROC (or detection rate at a false-alarm target) of geometry-only defects vs dent
    depth at one measured noise level."""

    station: str  # how it was measured (camera, distance, frames averaged)
    noise_rms_mm: float  # plane-fit RMS the model predicts there (incl. quantisation, ÷√N)
    by_depth_mm: tuple[tuple[float, float], ...]  # (dent depth mm, AUROC or rate), ascending

    def smallest_depth_mm(self, target: float = TARGET_AUROC) -> float | None:
        """Smallest dent depth whose value reaches ``target`` (linear between the measured
        depths, and only from the last crossing up, so a noisy dip is not bridged);
        None when no measured depth reaches it."""
        pts = self.by_depth_mm
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


# Measured with the recipe above (docs/sensor-model.md, "The default station: three seeds" and
# "Detection vs dent depth"), geometry_by_depth_mm of the puck rows of
#   OMP_NUM_THREADS=1 python scripts/sensor_table.py --out /tmp/trd17b --categories puck \
#       --stations d435@0.55x32 --depths 1 2 3 4 5 --image-size 128 --epochs 20 \
#       --preprocess working --seed S --jsonl rows128-wk.jsonl          # S = 0, 1, 2
#   and the same with d435@0.55x16 (S = 0, 1, 2), "d405@0.2x2 --depth-smoothing 3" (S = 0);
# the reference-preprocessing rows are rows128.jsonl's (--preprocess reference, seed 0).
# Noise: the model's plane RMS ÷ √N. Update both together when the curves are re-measured.
CURVES: tuple[DetectionCurve, ...] = (
    # -- working preprocessing (trd-edge train's default); the two default stations first
    DetectionCurve("D435 0.55 m, 32 frames averaged, working preprocessing", 0.20,
                   ((1, 0.8325), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 32 frames averaged, working preprocessing, seed 1", 0.20,
                   ((1, 0.8425), (2, 0.955), (3, 0.99), (4, 0.9975), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 32 frames averaged, working preprocessing, seed 2", 0.20,
                   ((1, 0.7925), (2, 0.9475), (3, 0.9975), (4, 1.0), (5, 1.0))),
    # with the height smoothing `trd-edge train` picks for a D405 (σ 3 px; edge.datasets.sensors)
    DetectionCurve("D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing", 0.19,
                   ((1, 0.8525), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 16 frames averaged, working preprocessing", 0.28,
                   ((1, 0.7825), (2, 0.975), (3, 0.9925), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 16 frames averaged, working preprocessing, seed 1", 0.28,
                   ((1, 0.8575), (2, 0.98), (3, 0.9875), (4, 1.0), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 16 frames averaged, working preprocessing, seed 2", 0.28,
                   ((1, 0.6975), (2, 0.8975), (3, 0.9775), (4, 1.0), (5, 1.0))),
    # -- reference preprocessing, at the noise levels no working run covers (module docstring)
    DetectionCurve("D435 0.55 m, 8 frames averaged, reference preprocessing", 0.40,
                   ((1, 0.5325), (2, 0.85), (3, 0.9725), (4, 0.9975), (5, 1.0))),
    DetectionCurve("D435 0.55 m, 1 frame, reference preprocessing", 1.12,
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
        depths = [d for d, _ in g[0].by_depth_mm]
        if any([d for d, _ in c.by_depth_mm] != depths for c in g):
            raise ValueError("pooled curves must be measured at the same dent depths")
        mean = tuple((d, sum(c.by_depth_mm[i][1] for c in g) / len(g))
                     for i, d in enumerate(depths))
        out.append(DetectionCurve(" + ".join(c.station for c in g),
                                  sum(c.noise_rms_mm for c in g) / len(g), mean))
    return out


# ------------------------------------------------------------------ depth × diameter at an FPR
#: a dent counts as detected at a false-alarm target when at least this share of dented parts
#: score above the threshold set for that target on good parts
TARGET_DETECTION = 0.90


@dataclass(frozen=True)
class Measured:
    """One station and dent diameter: AUROC and detection rates vs dent depth.

    ``detected`` maps each false-alarm target to the share of dented parts above the threshold
    that `calibration.threshold.fit_threshold` (quantile method, as `trd-edge calibrate`) sets
    on the station's good parts for it.
    """

    station: str
    noise_rms_mm: float
    diameter_mm: float | None  # None: the generator's own sizes (10–15 mm across on the puck)
    depths_mm: tuple[float, ...]
    auroc: tuple[float, ...]
    detected: tuple[tuple[float, tuple[float, ...]], ...]  # ((fpr, rates by depth), ...)

    def curve(self, fpr: float | None) -> DetectionCurve:
        """The AUROC curve (``fpr`` None) or the detection-rate curve at a measured ``fpr``."""
        values = self.auroc if fpr is None else dict(self.detected)[fpr]
        return DetectionCurve(self.station, self.noise_rms_mm,
                              tuple(zip(self.depths_mm, values, strict=True)))


# Measured (docs/sensor-model.md, "Detection at the false-alarm target by dent depth ×
# diameter" and "The default station: three seeds"): the README-recipe runs of the AUROC
# tables (CURVES), puck, R=/tmp/trd17b,
#   OMP_NUM_THREADS=1 python scripts/sensitivity_table.py --out OUT --runs RUN... \
#       --depths 1 2 3 4 5 --diameters 5 10 15 20 default --n-good 200 --n-dent 40 \
#       --fpr 0.05 0.01 0.001 --jsonl ROWS.jsonl
# and printed by `... --constants ROWS.jsonl --runs RUN...` (noise: the model's plane RMS ÷ √N):
#   OUT=/tmp/trd17e, ROWS=sens.jsonl: $R/run-puck-d435-0.55-x32-128-normal-e20-n60-wk,
#     ...-x32-...-n60-s1-wk, ...-x32-...-n60-s2-wk, $R/run-puck-d405-0.2-x2-128-normal-sm3-e20-n60-wk
#   OUT=/tmp/trd17d, ROWS=sens-wk.jsonl: $R/run-puck-d435-0.55-x16-128-normal-e20-n60-wk,
#     ...-x16-...-n60-s1-wk, ...-x16-...-n60-s2-wk
#   OUT=/tmp/trd17d, ROWS=sens.jsonl (reference preprocessing): $R/run-puck-d435-0.55-x8-128-
#     normal-e20-n60, $R/run-puck-d435-0.55-x1-128-normal-e20-n60
# 200 good parts per threshold (FPR 0.1 % is Gumbel-extrapolated from them), 40 dented parts
# per cell (steps of 0.025). Update the docs table with it.
MEASURED: tuple[Measured, ...] = (
    # -- working preprocessing (trd-edge train's default): the default stations (D435 ×32,
    # D405 ×2 smoothed), /tmp/trd17e/sens.jsonl
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing', 0.20, 5.0,
             (1, 2, 3, 4, 5),
             (0.8055, 0.9349, 0.971, 0.979, 0.9848),
             ((0.05, (0.5, 0.725, 0.925, 0.95, 0.95)),
              (0.01, (0.3, 0.7, 0.85, 0.925, 0.95)),
              (0.001, (0.225, 0.625, 0.775, 0.9, 0.925)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing', 0.20, 10.0,
             (1, 2, 3, 4, 5),
             (0.72, 0.9622, 0.9945, 0.9998, 1),
             ((0.05, (0.425, 0.75, 0.975, 1, 1)),
              (0.01, (0.375, 0.675, 0.85, 0.975, 1)),
              (0.001, (0.225, 0.575, 0.85, 0.95, 0.975)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing', 0.20, 15.0,
             (1, 2, 3, 4, 5),
             (0.8479, 0.9992, 1, 1, 1),
             ((0.05, (0.425, 1, 1, 1, 1)),
              (0.01, (0.25, 0.975, 1, 1, 1)),
              (0.001, (0.1, 0.825, 1, 1, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing', 0.20, 20.0,
             (1, 2, 3, 4, 5),
             (0.8411, 0.9932, 1, 1, 1),
             ((0.05, (0.35, 0.975, 1, 1, 1)),
              (0.01, (0.175, 0.875, 1, 1, 1)),
              (0.001, (0.075, 0.725, 0.975, 1, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing', 0.20, None,
             (1, 2, 3, 4, 5),
             (0.8458, 0.9971, 1, 1, 1),
             ((0.05, (0.525, 0.975, 1, 1, 1)),
              (0.01, (0.325, 0.925, 1, 1, 1)),
              (0.001, (0.075, 0.7, 0.95, 0.975, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 1', 0.20, 5.0,
             (1, 2, 3, 4, 5),
             (0.6909, 0.8551, 0.9353, 0.9634, 0.9688),
             ((0.05, (0.45, 0.65, 0.8, 0.875, 0.925)),
              (0.01, (0.425, 0.575, 0.7, 0.85, 0.875)),
              (0.001, (0.35, 0.5, 0.65, 0.725, 0.775)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 1', 0.20, 10.0,
             (1, 2, 3, 4, 5),
             (0.8678, 0.9651, 0.9911, 0.997, 0.9995),
             ((0.05, (0.6, 0.875, 0.95, 0.95, 1)),
              (0.01, (0.375, 0.875, 0.9, 0.95, 0.95)),
              (0.001, (0.225, 0.775, 0.875, 0.925, 0.925)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 1', 0.20, 15.0,
             (1, 2, 3, 4, 5),
             (0.8737, 0.9978, 1, 1, 1),
             ((0.05, (0.55, 1, 1, 1, 1)),
              (0.01, (0.45, 0.925, 1, 1, 1)),
              (0.001, (0.25, 0.8, 1, 1, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 1', 0.20, 20.0,
             (1, 2, 3, 4, 5),
             (0.8411, 0.997, 0.9999, 1, 1),
             ((0.05, (0.475, 0.975, 1, 1, 1)),
              (0.01, (0.375, 0.95, 1, 1, 1)),
              (0.001, (0.1, 0.85, 0.95, 1, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 1', 0.20, None,
             (1, 2, 3, 4, 5),
             (0.8528, 0.9739, 0.9942, 0.9984, 0.9998),
             ((0.05, (0.525, 0.925, 0.975, 0.975, 1)),
              (0.01, (0.375, 0.9, 0.975, 0.975, 0.975)),
              (0.001, (0.225, 0.8, 0.925, 0.975, 0.975)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 2', 0.20, 5.0,
             (1, 2, 3, 4, 5),
             (0.6509, 0.8005, 0.8889, 0.9254, 0.9531),
             ((0.05, (0.325, 0.55, 0.725, 0.825, 0.875)),
              (0.01, (0.325, 0.525, 0.65, 0.775, 0.85)),
              (0.001, (0.175, 0.375, 0.525, 0.625, 0.675)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 2', 0.20, 10.0,
             (1, 2, 3, 4, 5),
             (0.7835, 0.964, 0.9972, 0.9998, 0.9998),
             ((0.05, (0.375, 0.9, 0.975, 1, 1)),
              (0.01, (0.25, 0.825, 0.95, 1, 1)),
              (0.001, (0.1, 0.6, 0.825, 0.95, 0.95)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 2', 0.20, 15.0,
             (1, 2, 3, 4, 5),
             (0.7833, 0.9885, 0.9989, 0.9999, 1),
             ((0.05, (0.4, 0.95, 1, 1, 1)),
              (0.01, (0.225, 0.825, 0.975, 1, 1)),
              (0.001, (0.1, 0.6, 0.85, 0.975, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 2', 0.20, 20.0,
             (1, 2, 3, 4, 5),
             (0.7666, 0.9766, 0.9991, 1, 1),
             ((0.05, (0.275, 0.875, 1, 1, 1)),
              (0.01, (0.2, 0.775, 1, 1, 1)),
              (0.001, (0.075, 0.65, 0.825, 1, 1)),)),
    Measured('D435 0.55 m, 32 frames averaged, working preprocessing, seed 2', 0.20, None,
             (1, 2, 3, 4, 5),
             (0.81, 0.9661, 0.9965, 0.999, 0.9998),
             ((0.05, (0.525, 0.85, 0.975, 1, 1)),
              (0.01, (0.225, 0.8, 0.925, 0.975, 1)),
              (0.001, (0.1, 0.725, 0.825, 0.875, 0.95)),)),
    Measured('D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing', 0.19, 5.0,
             (1, 2, 3, 4, 5),
             (0.6121, 0.7962, 0.9224, 0.9679, 0.9801),
             ((0.05, (0.175, 0.6, 0.75, 0.9, 0.95)),
              (0.01, (0.05, 0.45, 0.625, 0.8, 0.875)),
              (0.001, (0.05, 0.35, 0.575, 0.675, 0.825)),)),
    Measured('D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing', 0.19, 10.0,
             (1, 2, 3, 4, 5),
             (0.881, 0.9954, 0.9999, 1, 1),
             ((0.05, (0.675, 0.975, 1, 1, 1)),
              (0.01, (0.5, 0.925, 1, 1, 1)),
              (0.001, (0.4, 0.875, 0.975, 1, 1)),)),
    Measured('D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing', 0.19, 15.0,
             (1, 2, 3, 4, 5),
             (0.9211, 0.9996, 1, 1, 1),
             ((0.05, (0.75, 1, 1, 1, 1)),
              (0.01, (0.475, 1, 1, 1, 1)),
              (0.001, (0.275, 0.925, 1, 1, 1)),)),
    Measured('D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing', 0.19, 20.0,
             (1, 2, 3, 4, 5),
             (0.9191, 0.9981, 0.9999, 1, 1),
             ((0.05, (0.65, 1, 1, 1, 1)),
              (0.01, (0.275, 0.95, 1, 1, 1)),
              (0.001, (0.1, 0.85, 0.975, 1, 1)),)),
    Measured('D405 0.2 m, 2 frames averaged, smoothing 3 px, working preprocessing', 0.19, None,
             (1, 2, 3, 4, 5),
             (0.9107, 0.996, 0.9999, 1, 1),
             ((0.05, (0.725, 0.975, 1, 1, 1)),
              (0.01, (0.5, 0.975, 1, 1, 1)),
              (0.001, (0.35, 0.9, 0.975, 1, 1)),)),
    # -- working preprocessing, D435 ×16, /tmp/trd17d/sens-wk.jsonl
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing', 0.28, 5.0,
             (1, 2, 3, 4, 5),
             (0.723, 0.9065, 0.9711, 0.9841, 0.9866),
             ((0.05, (0.375, 0.725, 0.9, 0.95, 0.95)),
              (0.01, (0.2, 0.6, 0.725, 0.85, 0.95)),
              (0.001, (0.175, 0.575, 0.675, 0.8, 0.875)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing', 0.28, 10.0,
             (1, 2, 3, 4, 5),
             (0.6775, 0.9039, 0.9823, 0.9979, 0.9996),
             ((0.05, (0.25, 0.65, 0.9, 1, 1)),
              (0.01, (0.125, 0.55, 0.775, 0.925, 0.975)),
              (0.001, (0.1, 0.475, 0.65, 0.85, 0.95)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing', 0.28, 15.0,
             (1, 2, 3, 4, 5),
             (0.6936, 0.9868, 0.9996, 1, 1),
             ((0.05, (0.125, 0.925, 1, 1, 1)),
              (0.01, (0.075, 0.675, 0.975, 1, 1)),
              (0.001, (0.05, 0.425, 0.925, 1, 1)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing', 0.28, 20.0,
             (1, 2, 3, 4, 5),
             (0.673, 0.9619, 0.9979, 1, 1),
             ((0.05, (0.15, 0.8, 1, 1, 1)),
              (0.01, (0.05, 0.5, 0.9, 1, 1)),
              (0.001, (0, 0.35, 0.825, 1, 1)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing', 0.28, None,
             (1, 2, 3, 4, 5),
             (0.7244, 0.9609, 0.9943, 0.9996, 1),
             ((0.05, (0.325, 0.85, 0.975, 1, 1)),
              (0.01, (0.025, 0.6, 0.9, 0.975, 1)),
              (0.001, (0.025, 0.6, 0.9, 0.95, 1)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 1', 0.28, 5.0,
             (1, 2, 3, 4, 5),
             (0.7324, 0.8682, 0.9396, 0.9729, 0.9802),
             ((0.05, (0.45, 0.625, 0.75, 0.875, 0.9)),
              (0.01, (0.45, 0.55, 0.725, 0.8, 0.875)),
              (0.001, (0.3, 0.5, 0.625, 0.675, 0.775)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 1', 0.28, 10.0,
             (1, 2, 3, 4, 5),
             (0.7997, 0.9656, 0.9851, 0.9956, 0.9989),
             ((0.05, (0.325, 0.875, 0.925, 0.95, 1)),
              (0.01, (0.25, 0.75, 0.9, 0.925, 0.975)),
              (0.001, (0.15, 0.625, 0.875, 0.9, 0.95)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 1', 0.28, 15.0,
             (1, 2, 3, 4, 5),
             (0.8265, 0.9885, 1, 1, 1),
             ((0.05, (0.3, 0.875, 1, 1, 1)),
              (0.01, (0.275, 0.825, 1, 1, 1)),
              (0.001, (0.075, 0.6, 0.925, 1, 1)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 1', 0.28, 20.0,
             (1, 2, 3, 4, 5),
             (0.8127, 0.9732, 0.9986, 1, 1),
             ((0.05, (0.4, 0.85, 0.975, 1, 1)),
              (0.01, (0.3, 0.85, 0.975, 1, 1)),
              (0.001, (0.075, 0.775, 0.9, 0.975, 1)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 1', 0.28, None,
             (1, 2, 3, 4, 5),
             (0.8014, 0.9777, 0.9906, 0.998, 0.9989),
             ((0.05, (0.25, 0.9, 0.975, 0.975, 1)),
              (0.01, (0.225, 0.875, 0.975, 0.975, 0.975)),
              (0.001, (0.05, 0.625, 0.925, 0.975, 0.975)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 2', 0.28, 5.0,
             (1, 2, 3, 4, 5),
             (0.604, 0.7637, 0.8594, 0.91, 0.9373),
             ((0.05, (0.2, 0.525, 0.625, 0.8, 0.875)),
              (0.01, (0.075, 0.4, 0.575, 0.65, 0.7)),
              (0.001, (0.025, 0.3, 0.45, 0.575, 0.65)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 2', 0.28, 10.0,
             (1, 2, 3, 4, 5),
             (0.6404, 0.9409, 0.9932, 0.9991, 0.9998),
             ((0.05, (0.1, 0.775, 0.95, 1, 1)),
              (0.01, (0.05, 0.575, 0.9, 0.95, 1)),
              (0.001, (0, 0.3, 0.75, 0.925, 0.95)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 2', 0.28, 15.0,
             (1, 2, 3, 4, 5),
             (0.6375, 0.9088, 0.9865, 0.9978, 0.9996),
             ((0.05, (0.125, 0.625, 0.9, 0.975, 1)),
              (0.01, (0.05, 0.55, 0.775, 0.975, 0.975)),
              (0.001, (0.025, 0.325, 0.625, 0.85, 0.925)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 2', 0.28, 20.0,
             (1, 2, 3, 4, 5),
             (0.6291, 0.9376, 0.9936, 0.9994, 1),
             ((0.05, (0.15, 0.725, 0.95, 1, 1)),
              (0.01, (0.075, 0.45, 0.8, 0.975, 1)),
              (0.001, (0, 0.325, 0.725, 0.85, 0.95)),)),
    Measured('D435 0.55 m, 16 frames averaged, working preprocessing, seed 2', 0.28, None,
             (1, 2, 3, 4, 5),
             (0.6896, 0.9271, 0.9815, 0.9951, 0.9989),
             ((0.05, (0.175, 0.775, 0.9, 0.975, 1)),
              (0.01, (0.1, 0.625, 0.825, 0.9, 0.975)),
              (0.001, (0.025, 0.475, 0.775, 0.825, 0.9)),)),
    # -- reference preprocessing, noise levels no working run covers (module docstring)
    Measured('D435 0.55 m, 8 frames averaged, reference preprocessing', 0.40, 5.0,
             (1, 2, 3, 4, 5),
             (0.6501, 0.8684, 0.9595, 0.9831, 0.9859),
             ((0.05, (0.175, 0.65, 0.8, 0.95, 0.95)),
              (0.01, (0.125, 0.575, 0.75, 0.85, 0.95)),
              (0.001, (0, 0.425, 0.625, 0.725, 0.825)),)),
    Measured('D435 0.55 m, 8 frames averaged, reference preprocessing', 0.40, 10.0,
             (1, 2, 3, 4, 5),
             (0.6089, 0.8114, 0.946, 0.989, 0.9988),
             ((0.05, (0.05, 0.45, 0.8, 0.9, 1)),
              (0.01, (0.025, 0.45, 0.7, 0.85, 0.925)),
              (0.001, (0.025, 0.325, 0.525, 0.75, 0.85)),)),
    Measured('D435 0.55 m, 8 frames averaged, reference preprocessing', 0.40, 15.0,
             (1, 2, 3, 4, 5),
             (0.6024, 0.9089, 0.9951, 1, 1),
             ((0.05, (0.075, 0.5, 0.925, 1, 1)),
              (0.01, (0.05, 0.4, 0.9, 1, 1)),
              (0.001, (0, 0.2, 0.6, 0.925, 1)),)),
    Measured('D435 0.55 m, 8 frames averaged, reference preprocessing', 0.40, 20.0,
             (1, 2, 3, 4, 5),
             (0.5843, 0.8595, 0.9803, 0.9989, 1),
             ((0.05, (0.075, 0.425, 0.825, 1, 1)),
              (0.01, (0.05, 0.375, 0.75, 0.95, 1)),
              (0.001, (0, 0.175, 0.475, 0.825, 0.95)),)),
    Measured('D435 0.55 m, 8 frames averaged, reference preprocessing', 0.40, None,
             (1, 2, 3, 4, 5),
             (0.6092, 0.9074, 0.9881, 0.9996, 1),
             ((0.05, (0.1, 0.6, 0.9, 1, 1)),
              (0.01, (0.05, 0.525, 0.875, 0.975, 1)),
              (0.001, (0, 0.25, 0.675, 0.9, 0.975)),)),
    Measured('D435 0.55 m, 1 frame, reference preprocessing', 1.12, 5.0,
             (1, 2, 3, 4, 5),
             (0.4826, 0.5124, 0.5877, 0.642, 0.6897),
             ((0.05, (0.075, 0.075, 0.075, 0.075, 0.075)),
              (0.01, (0, 0, 0, 0, 0)),
              (0.001, (0, 0, 0, 0, 0)),)),
    Measured('D435 0.55 m, 1 frame, reference preprocessing', 1.12, 10.0,
             (1, 2, 3, 4, 5),
             (0.4811, 0.4947, 0.5355, 0.6022, 0.6747),
             ((0.05, (0.075, 0.075, 0.075, 0.075, 0.075)),
              (0.01, (0, 0, 0, 0, 0)),
              (0.001, (0, 0, 0, 0, 0)),)),
    Measured('D435 0.55 m, 1 frame, reference preprocessing', 1.12, 15.0,
             (1, 2, 3, 4, 5),
             (0.4791, 0.4853, 0.5211, 0.5761, 0.6372),
             ((0.05, (0.075, 0.075, 0.05, 0.05, 0.05)),
              (0.01, (0, 0, 0, 0, 0)),
              (0.001, (0, 0, 0, 0, 0)),)),
    Measured('D435 0.55 m, 1 frame, reference preprocessing', 1.12, 20.0,
             (1, 2, 3, 4, 5),
             (0.4806, 0.4957, 0.5242, 0.5579, 0.6152),
             ((0.05, (0.075, 0.05, 0.05, 0.05, 0.05)),
              (0.01, (0, 0, 0, 0, 0)),
              (0.001, (0, 0, 0, 0, 0)),)),
    Measured('D435 0.55 m, 1 frame, reference preprocessing', 1.12, None,
             (1, 2, 3, 4, 5),
             (0.4836, 0.494, 0.5405, 0.597, 0.6581),
             ((0.05, (0.075, 0.05, 0.05, 0.05, 0.05)),
              (0.01, (0, 0, 0, 0, 0)),
              (0.001, (0, 0, 0, 0, 0)),)),
)
MEASURED_FPRS = tuple(sorted({f for m in MEASURED for f, _ in m.detected}))
MEASURED_DIAMETERS_MM = tuple(sorted({m.diameter_mm for m in MEASURED
                                      if m.diameter_mm is not None}))


def _measured_fpr(target_fpr: float) -> tuple[float, str]:
    """The measured false-alarm target to read for a station's ``target_fpr``: the largest one
    at or below it (a lower target means a higher threshold, so this errs on the safe side)."""
    below = [f for f in MEASURED_FPRS if f <= target_fpr * (1 + 1e-9)]
    if below:
        return max(below), ""
    low = min(MEASURED_FPRS)
    return low, (f"; the station's target FPR {target_fpr:g} is below the lowest measured "
                 f"({low:g}): optimistic")


def _measured_diameters(diameter_mm: float | None) -> tuple[tuple[float | None, ...], str]:
    """The measured diameters whose curves answer for ``diameter_mm`` (the worse one counts)."""
    if diameter_mm is None:
        return (None,), ""
    ds = MEASURED_DIAMETERS_MM
    if diameter_mm in ds:
        return (diameter_mm,), ""
    if diameter_mm < ds[0] or diameter_mm > ds[-1]:
        edge = ds[0] if diameter_mm < ds[0] else ds[-1]
        return (edge,), (f"; {diameter_mm:g} mm across is outside the measured "
                         f"{ds[0]:g}–{ds[-1]:g} mm: read at {edge:g} mm")
    lo = max(d for d in ds if d < diameter_mm)
    hi = min(d for d in ds if d > diameter_mm)
    # detection is not monotone in the diameter (a wider dent of one depth has gentler walls):
    # between two measured diameters the worse of the two counts
    return (lo, hi), ""


def smallest_detected_dent(
    noise_rms_m: float, target_fpr: float, diameter_mm: float | None = None,
    rate: float = TARGET_DETECTION,
) -> tuple[float | None, str, float]:
    """Smallest dent depth (mm; None = deeper than measured) found in ``rate`` of the dented
    parts at the false-alarm target ``target_fpr``, for dents ``diameter_mm`` across (None:
    the generator's own 10–15 mm), at depth noise ``noise_rms_m``.

    The noise lookup is `smallest_detectable_dent`'s (log-noise interpolation, pooled curves,
    monotone over noise) on the measured detection-rate curves of that diameter and target.
    Returns ``(depth_mm, basis, measured_fpr)``.
    """
    fpr, fpr_note = _measured_fpr(target_fpr)
    diameters, d_note = _measured_diameters(diameter_mm)
    depth, basis = _worst_over(diameters, lambda w: smallest_detectable_dent(
        noise_rms_m, rate, tuple(m.curve(fpr) for m in MEASURED if m.diameter_mm == w)))
    return depth, basis + d_note + fpr_note, fpr


def _worst_over(diameters, lookup) -> tuple[float | None, str]:
    """The deepest (worst) of ``lookup(w)`` over the measured ``diameters`` and its basis."""
    worst: float | None = 0.0
    basis = ""
    for w in diameters:
        if not any(m.diameter_mm == w for m in MEASURED):
            raise ValueError(f"no measured curves for dents {w} mm across (MEASURED)")
        d, basis = lookup(w)  # (the same stations at every diameter: one basis says it)
        worst = None if (d is None or worst is None) else max(worst, d)
    if diameters != (None,):
        across = " and ".join(f"{w:g}" for w in diameters)
        basis += (f"; dents {across} mm across" + (", the worse" if len(diameters) > 1 else ""))
    return worst, basis


class Sensitivity(BaseModel):
    """What `calibrate` reports and records about the station's geometry sensitivity."""

    model_config = ConfigDict(extra="forbid")

    noise_rms_mm: float
    smallest_dent_mm: float | None  # None: nothing up to the deepest measured dent
    deepest_measured_mm: float
    target_auroc: float = TARGET_AUROC
    dent_diameter_mm: tuple[float, float] = DENT_DIAMETER_MM  # of the curves read
    expected_dent_mm: float | None = None
    expected_dent_diameter_mm: float | None = None
    # the criterion: AUROC >= target_auroc when target_fpr is None, else at least
    # detection_rate of the dented parts above the threshold for target_fpr (read from the
    # curves measured at measured_fpr)
    target_fpr: float | None = None
    measured_fpr: float | None = None
    detection_rate: float | None = None
    # averaging this many times more still frames (noise ÷ √N) would reveal the expected
    # defects by the same curves; None: not needed, or 32 would not be enough
    frames_factor: int | None = None
    # False: the camera is not what limits: the noise is at or below the quietest curve, or
    # even the quietest measured noise does not find the expected defect
    noise_limited: bool = True
    basis: str  # which measured curves the number comes from

    def _criterion(self) -> str:
        if self.target_fpr is None:
            return f"AUROC >= {self.target_auroc:g}"
        return f">= {self.detection_rate:.0%} of dents found at FPR {self.target_fpr:g}"

    def lines(self) -> list[str]:
        """Human-readable lines for the calibration report."""
        lo, hi = self.dent_diameter_mm
        across = f"{lo:g}–{hi:g} mm across" if lo != hi else f"{lo:g} mm across"
        if self.smallest_dent_mm is None:
            seen = f"none up to {self.deepest_measured_mm:g} mm deep"
        else:
            seen = f"{self.smallest_dent_mm:.1f} mm deep"
        out = [
            f"  smallest dent seen   {seen} ({across}, {self._criterion()} at "
            f"{self.noise_rms_mm:.2f} mm RMS; {self.basis})",
        ]
        if self.expected_dent_mm is not None:
            wide = (f", {self.expected_dent_diameter_mm:g} mm across"
                    if self.expected_dent_diameter_mm is not None else "")
            out.append(f"  expected defects     {self.expected_dent_mm:g} mm deep{wide} "
                       "(configured)")
        return out

    def warning(self) -> str | None:
        """A warning when the configured defects are shallower than the station can see."""
        if self.expected_dent_mm is None:
            return None
        if self.smallest_dent_mm is not None and self.expected_dent_mm >= self.smallest_dent_mm:
            return None
        limit = (f"{self.smallest_dent_mm:.1f} mm" if self.smallest_dent_mm is not None
                 else f"more than {self.deepest_measured_mm:g} mm")
        wide = (f", {self.expected_dent_diameter_mm:g} mm across"
                if self.expected_dent_diameter_mm is not None else "")
        what = f"the expected geometry defects ({self.expected_dent_mm:g} mm deep{wide})"
        if self.noise_limited is False:
            return (
                f"{what} are below what the measured curves see ({self._criterion()}) even at "
                f"the quietest measured depth noise (this station: {self.noise_rms_mm:.2f} mm "
                f"RMS, {limit}); there the model, not the camera, is the limit: train with "
                "the full recipe "
                "(README: 128 px, 96 images, 20 epochs) and measure the station's own curve "
                "(docs/sensor-model.md)"
            )
        return (
            f"{what} are below what this station's depth noise ({self.noise_rms_mm:.2f} mm "
            f"RMS) lets the model see ({self._criterion()}): {limit}; average still frames "
            "(camera.realsense.average_frames, noise ÷ √N"
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
    target_fpr: float | None = None, expected_diameter_m: float | None = None,
) -> Sensitivity:
    """The station's `Sensitivity` for its measured noise and configured defect.

    With ``target_fpr`` (the false-alarm target calibrate set the threshold for) the smallest
    dent is the one found in `TARGET_DETECTION` of the dented parts at that target, read from
    the depth × diameter curves (`MEASURED`) for ``expected_diameter_m`` (None: the measured
    10–15 mm dents); without it (a best-F1 threshold) the AUROC curves as before: `CURVES` for
    10–15 mm dents, `MEASURED`'s AUROC for a given diameter.
    """
    if expected_dent_m is not None and not expected_dent_m > 0:
        raise ValueError(f"expected defect depth must be positive (metres), got {expected_dent_m}")
    if expected_diameter_m is not None and not expected_diameter_m > 0:
        raise ValueError(
            f"expected defect diameter must be positive (metres), got {expected_diameter_m}")
    if target_fpr is not None and not 0 < target_fpr < 0.5:
        raise ValueError(f"target false-alarm rate must be in (0, 0.5), got {target_fpr}")
    diameter_mm = None if expected_diameter_m is None else expected_diameter_m * 1e3
    measured_fpr = None

    def lookup(noise_m: float) -> tuple[float | None, str]:
        nonlocal measured_fpr
        if target_fpr is not None:
            d, basis, measured_fpr = smallest_detected_dent(noise_m, target_fpr, diameter_mm)
            return d, basis
        if diameter_mm is None:
            return smallest_detectable_dent(noise_m, target)
        ws, note = _measured_diameters(diameter_mm)
        d, basis = _worst_over(ws, lambda w: smallest_detectable_dent(
            noise_m, target, tuple(m.curve(None) for m in MEASURED if m.diameter_mm == w)))
        return d, basis + note

    depth, basis = lookup(noise_rms_m)
    if target_fpr is None and diameter_mm is None:
        used = CURVES
        across = DENT_DIAMETER_MM
    else:
        ws = (None,) if diameter_mm is None else _measured_diameters(diameter_mm)[0]
        used = tuple(m.curve(None) for m in MEASURED if m.diameter_mm in ws)
        across = DENT_DIAMETER_MM if ws == (None,) else (min(ws), max(ws))
    deepest = max(d for c in used for d, _ in c.by_depth_mm)
    factor = None
    if expected_dent_m is not None and (depth is None or depth > expected_dent_m * 1e3):
        for n in (2, 4, 8, 16, 32):  # assumes temporal noise (a fixed-pattern part stays)
            d, _ = lookup(noise_rms_m / math.sqrt(n))
            if d is not None and d <= expected_dent_m * 1e3:
                factor = n
                break
    quietest = min(c.noise_rms_mm for c in used)
    limited = noise_rms_m * 1e3 > quietest
    if limited and expected_dent_m is not None:  # would a quieter camera find it at all?
        best, _ = lookup(quietest / 1e3)
        limited = best is not None and best <= expected_dent_m * 1e3
    return Sensitivity(
        noise_rms_mm=noise_rms_m * 1e3, smallest_dent_mm=depth, deepest_measured_mm=deepest,
        target_auroc=target, dent_diameter_mm=across,
        expected_dent_mm=None if expected_dent_m is None else expected_dent_m * 1e3,
        expected_dent_diameter_mm=diameter_mm,
        target_fpr=target_fpr, measured_fpr=measured_fpr if target_fpr is not None else None,
        detection_rate=TARGET_DETECTION if target_fpr is not None else None,
        frames_factor=factor, basis=basis,
        noise_limited=limited,
    )
