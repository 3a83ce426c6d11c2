"""One frame in, one inspection out: preprocess → backend → postprocess, each stage timed.

The run loop, `trd-edge bench` and `trd-edge calibrate` all go through `Inspector`, so the
numbers they report and the verdicts a station publishes come from the same code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edge.backends.base import Backend
from edge.bundle import Bundle, BundleError, model_inputs
from edge.frames import Frame
from edge.processing.pose import Pose
from edge.processing.preprocess import (
    WHOLE_FRAME,
    PreparedSample,
    PreprocessConfig,
    preprocess,
    roi_pixels,
)
from edge.processing.scoring import (
    Region,
    ScoredMaps,
    ScoreStats,
    defect_regions,
    foreground_region,
    score_maps,
)

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "h2d", "inference", "d2h", "postprocess", "publish")


@dataclass
class Inspection:
    """The outcome for one frame, before it becomes a wire message."""

    frame: Frame
    model_maps: ScoredMaps  # fused / rgb / x3d, each (1, S, S), in the model's (aligned) frame
    image_score: float
    rgb_score: float
    x3d_score: float
    threshold: float
    regions: list[Region]  # in model-input pixels (S×S)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The rectangle the S×S maps cover (x0, y0, x1, y1): in the frame's pixels (for overlays on
    # frame.rgb) and in the camera's full-resolution pixels (for verdict regions).
    view_frame: tuple[float, float, float, float] | None = None
    view_camera: tuple[float, float, float, float] | None = None
    pose: Pose | None = None  # the part's alignment; maps turn back into the camera frame by it
    camera_fused: np.ndarray | None = None  # (S, S) fused map in the camera frame
    # the bundle scores the part (scoring.region) but this frame's foreground was empty: the
    # whole frame was scored (the verdict says so in extra.scored_on)
    no_part: bool = False
    # the part reaches the edge of the bundle's ROI (PreparedSample.at_edge; bundles with an ROI
    # narrower than the frame only): it may lie partly outside (verdict extra.part_at_edge)
    part_at_edge: bool = False
    _maps: ScoredMaps | None = field(default=None, repr=False)

    @property
    def is_defect(self) -> bool:
        """Rejected when the fused image score exceeds the threshold (same rule as `verify`)."""
        return self.image_score > self.threshold

    @property
    def fused(self) -> np.ndarray:
        """The fused map in the camera frame (regions, heatmaps)."""
        if self.camera_fused is not None:
            return self.camera_fused
        return self.maps.fused[0]

    @property
    def maps(self) -> ScoredMaps:
        """All three maps in the camera frame (turned on first use: the loop needs only the
        fused one, `fused`)."""
        if self._maps is None:
            if self.pose is None:
                self._maps = self.model_maps
            else:
                m = self.model_maps
                turned = self.pose.to_camera(np.concatenate([m.fused, m.rgb, m.x3d]))
                self._maps = ScoredMaps(*(turned[i:i + 1] for i in range(3)))
        return self._maps


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
        # the whole map or the part's foreground (scoring.region; calibrate fits on the same)
        self.region: str = bundle.manifest.scoring.region
        self._at_edge = False  # the last frame's part reached the view's edge (warn on change)
        # only a crop can cut a part the camera sees whole; a part that fills the camera's own
        # frame (MVTec 3D-AD-like) touches its edge on every frame and is no news
        roi = self.pre.roi
        self._cropped = roi is not None and tuple(roi) != WHOLE_FRAME

    @property
    def working_grid(self) -> dict | None:
        """What a camera source may register frames at for this bundle (`edge.processing.registration`):
        ``{"size": G, "roi": fractions | None}``, or None for the reference pipeline."""
        if self.pre.pipeline != "working":
            return None
        return {"size": self.pre.working_size, "roi": self.pre.roi}

    def attach(self, source) -> bool:
        """Ask ``source`` to deliver frames already at this bundle's working grid (a RealSense
        camera or recording registers depth there instead of at full colour resolution).
        Returns whether it will; other sources deliver full frames, which preprocessing
        brings to the grid itself."""
        grid = self.working_grid
        setter = getattr(source, "set_working_grid", None)
        return bool(grid is not None and setter is not None and setter(grid["size"], grid["roi"]))

    def _framed(self, frame: Frame) -> bool:
        grid = frame.meta.get("working_grid")
        if grid is None:
            return False
        if grid != self.working_grid:
            raise BundleError(
                f"frame {frame.frame_number} was registered for working grid {grid}, but bundle "
                f"{self.bundle.path.name} needs {self.working_grid}; one source feeds one bundle"
            )
        return True

    def prepare(self, frame: Frame) -> tuple[PreparedSample, float]:
        """Preprocess a frame; returns the sample and the milliseconds it took."""
        t0 = time.perf_counter()
        sample = preprocess(frame.rgb, frame.xyz, self.pre, framed=self._framed(frame))
        return sample, (time.perf_counter() - t0) * 1000.0

    def infer(self, sample: PreparedSample) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Raw per-modality maps and the backend's h2d / inference / d2h split."""
        m_rgb, m_3d = self.backend.infer(*model_inputs(self.bundle.manifest.io, sample))
        t = self.backend.last_timing
        return m_rgb, m_3d, {"h2d": t.h2d_ms, "inference": t.compute_ms, "d2h": t.d2h_ms}

    def views(self, frame: Frame) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The rectangle the model's maps cover, in frame pixels and in camera pixels."""
        h, w = frame.size
        if frame.meta.get("working_grid") is not None:  # the frame is the ROI's working grid
            ch, cw = frame.meta.get("camera_size", (h, w))
            fx0, fy0, fx1, fy1 = self.pre.roi or WHOLE_FRAME
            return (0.0, 0.0, float(w), float(h)), (fx0 * cw, fy0 * ch, fx1 * cw, fy1 * ch)
        if self.pre.pipeline == "working":
            view = tuple(float(v) for v in roi_pixels(self.pre, h, w))
            return view, view
        return (0.0, 0.0, float(w), float(h)), (0.0, 0.0, float(w), float(h))

    def postprocess(
        self,
        frame: Frame,
        m_rgb: np.ndarray,
        m_3d: np.ndarray,
        timings: dict[str, float],
        sample: PreparedSample | None = None,
    ) -> Inspection:
        """Normalise, fuse, smooth, score, threshold and find defect regions.

        Scores come from the maps as the model made them (in the aligned frame when the bundle
        aligns parts, as at training); the maps kept for regions and heatmaps are turned back
        into the camera frame with the ``sample``'s pose. Its foreground (S×S) is required
        when the bundle scores the part (``scoring.region: part``).
        """
        t0 = time.perf_counter()
        pose = sample.pose if sample is not None else None
        foreground = sample.foreground if sample is not None else None
        maps = score_maps(m_rgb, m_3d, self.stats, work_dtype=np.float32,
                          region=foreground_region(self.region, foreground))
        no_part = maps.on_frame is not None and bool(maps.on_frame[0])
        if no_part:
            log.warning("frame %s: no part in the foreground; scored on the whole frame",
                        frame.frame_number)
        at_edge = self._cropped and sample is not None and sample.at_edge and not no_part
        if at_edge and not self._at_edge:  # once per run of such frames, not at 30 fps
            log.warning("frame %s: the part reaches the edge of the model's view (the bundle's "
                        "ROI); part of it may be outside: place parts where the training parts "
                        "lay, or retrain with a wider --roi", frame.frame_number)
        self._at_edge = at_edge
        score = float(maps.fused[0].max())
        rgb_score, x3d_score = float(maps.rgb[0].max()), float(maps.x3d[0].max())
        fused = maps.fused[0] if pose is None else pose.to_camera(maps.fused)[0]
        regions = (
            defect_regions(fused, self.threshold, self.min_region_px)
            if score > self.threshold
            else []
        )
        view_frame, view_camera = self.views(frame)
        timings = dict(timings)
        timings["postprocess"] = (time.perf_counter() - t0) * 1000.0
        return Inspection(
            frame=frame, model_maps=maps, image_score=score, rgb_score=rgb_score,
            x3d_score=x3d_score, threshold=self.threshold, regions=regions,
            timings_ms=timings, view_frame=view_frame, view_camera=view_camera,
            pose=pose, camera_fused=fused, no_part=no_part, part_at_edge=at_edge,
        )

    def inspect(self, frame: Frame) -> Inspection:
        """All three steps for one frame (single-threaded callers: bench, calibrate)."""
        sample, pre_ms = self.prepare(frame)
        m_rgb, m_3d, t = self.infer(sample)
        return self.postprocess(
            frame, m_rgb, m_3d, {"capture": frame.capture_ms, "preprocess": pre_ms, **t}, sample
        )
