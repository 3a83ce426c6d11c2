"""One frame in, one inspection out: preprocess → backend → postprocess, each stage timed.

The run loop, `trd-edge bench` and `trd-edge calibrate` all go through `Inspector`, so the
numbers they report and the verdicts a station publishes come from the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge.backends.base import Backend
from edge.bundle import Bundle, BundleError
from edge.frames import Frame
from edge.pose import Pose
from edge.preprocess import PreparedSample, PreprocessConfig, preprocess
from edge.scoring import Region, ScoredMaps, ScoreStats, defect_regions, score_maps

STAGES = ("capture", "preprocess", "h2d", "inference", "d2h", "postprocess", "publish")


@dataclass
class Inspection:
    """The outcome for one frame, before it becomes a wire message."""

    frame: Frame
    maps: ScoredMaps  # fused / rgb / x3d, each (1, S, S), normalised and smoothed
    image_score: float
    rgb_score: float
    x3d_score: float
    threshold: float
    regions: list[Region]  # in model-input pixels (S×S)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def is_defect(self) -> bool:
        """Rejected when the fused image score exceeds the threshold (same rule as `verify`)."""
        return self.image_score > self.threshold

    @property
    def fused(self) -> np.ndarray:
        return self.maps.fused[0]


class Inspector:
    """Runs a bundle's model on frames with its preprocessing, statistics and threshold."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        stats: ScoreStats | None = None,
        threshold: float | None = None,
        min_region_px: int = 4,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.pre: PreprocessConfig = bundle.preprocess_config()
        self.stats = stats or bundle.score_stats()
        if self.stats is None:
            raise BundleError(
                f"bundle {bundle.path} has no score statistics; export it from a trained run "
                "(`trd-edge export`) or calibrate it (`trd-edge calibrate`)"
            )
        thr = threshold if threshold is not None else bundle.manifest.scoring.threshold
        if thr is None:
            raise BundleError(f"bundle {bundle.path} has no threshold; run `trd-edge calibrate`")
        self.threshold = float(thr)
        self.min_region_px = min_region_px

    def prepare(self, frame: Frame) -> tuple[PreparedSample, float]:
        """Preprocess a frame; returns the sample and the milliseconds it took."""
        t0 = time.perf_counter()
        sample = preprocess(frame.rgb, frame.xyz, self.pre)
        return sample, (time.perf_counter() - t0) * 1000.0

    def infer(self, sample: PreparedSample) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Raw per-modality maps and the backend's h2d / inference / d2h split."""
        m_rgb, m_3d = self.backend.infer(sample.rgb[None], sample.x3d[None])
        t = self.backend.last_timing
        return m_rgb, m_3d, {"h2d": t.h2d_ms, "inference": t.compute_ms, "d2h": t.d2h_ms}

    def postprocess(
        self,
        frame: Frame,
        m_rgb: np.ndarray,
        m_3d: np.ndarray,
        timings: dict[str, float],
        pose: Pose | None = None,
    ) -> Inspection:
        """Normalise, fuse, smooth, score, threshold and find defect regions.

        Scores come from the maps as the model made them (in the aligned frame when the bundle
        aligns parts, as at training); the maps kept for regions and heatmaps are turned back
        into the camera frame with ``pose``.
        """
        t0 = time.perf_counter()
        maps = score_maps(m_rgb, m_3d, self.stats)
        score = float(maps.fused[0].max())
        rgb_score, x3d_score = float(maps.rgb[0].max()), float(maps.x3d[0].max())
        if pose is not None:
            maps = ScoredMaps(*(pose.to_camera(m) for m in (maps.fused, maps.rgb, maps.x3d)))
        fused = maps.fused[0]
        regions = (
            defect_regions(fused, self.threshold, self.min_region_px)
            if score > self.threshold
            else []
        )
        timings = dict(timings)
        timings["postprocess"] = (time.perf_counter() - t0) * 1000.0
        return Inspection(
            frame=frame, maps=maps, image_score=score, rgb_score=rgb_score,
            x3d_score=x3d_score, threshold=self.threshold, regions=regions,
            timings_ms=timings,
        )

    def inspect(self, frame: Frame) -> Inspection:
        """All three steps for one frame (single-threaded callers: bench, calibrate)."""
        sample, pre_ms = self.prepare(frame)
        m_rgb, m_3d, t = self.infer(sample)
        return self.postprocess(
            frame, m_rgb, m_3d, {"capture": frame.capture_ms, "preprocess": pre_ms, **t},
            pose=sample.pose,
        )
