"""Temporal averaging of a part that stands still: N frames in, one quieter frame out.

A stereo camera's depth noise is mostly independent from frame to frame, so the mean of N
frames of a part that does not move has ``1/√N`` of the noise (`edge.datasets.sensors`: a D435 at
0.55 m has ≈ 1.1 mm RMS; 8 frames ≈ 0.4 mm). `AveragingSource` wraps any frame source
(`open_source` wraps a RealSense camera or recording when ``camera.realsense.average_frames``
> 1) and delivers one frame per ``n`` consecutive frames of a still part:

* **valid-aware mean**: each pixel's point is the mean over the frames where it has a return
  (``z > 0``); a pixel with no return in any frame stays ``(0, 0, 0)``. Colour is averaged too.
* **motion**: each new frame is compared with the first frame of the window. The part moved
  when more than ``motion_fraction`` of the pixels changed by more than ``motion_threshold`` ×
  their noise in colour (after removing a global gain and offset: auto-exposure is not
  motion), or in depth (3×3 median first, so flickering pixels at rims do not count). The
  noise is measured from the two frames themselves (median absolute difference), so no sensor
  model is needed. Frames before the motion are dropped (counted in `AveragingStats`) and the
  window restarts at the moved frame: frames are never averaged across motion.

At a stop-and-go station a part standing ``k`` frames gives ``k // n`` averaged frames; while
parts move nothing is delivered. At the end of a recording an incomplete window is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from edge.frames import Frame
from edge.sources.base import FrameSource, FrameTimeout

__all__ = ["AveragingSource", "AveragingStats", "average_frames", "motion_between"]

log = logging.getLogger(__name__)

# Noise floors for frames whose noise is below their quantisation (identical pixels give a
# median difference of 0): colour in grey levels, depth in depth units.
_COLOUR_FLOOR = 1.0
_DEPTH_FLOOR_UNITS = 2.0


@dataclass
class AveragingStats:
    """What averaging did (logged on close, readable by a run loop)."""

    averaged: int = 0  # frames delivered, each the mean of n frames
    motion_resets: int = 0  # windows restarted because the part moved
    discarded: int = 0  # frames dropped: before a motion, or an incomplete window at the end

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


def _changed_fraction(diff: np.ndarray, threshold: float, floor: float) -> float:
    """Share of pixels whose |diff| exceeds ``threshold`` × the robust noise of ``diff``."""
    if diff.size == 0:
        return 0.0
    ad = np.abs(diff)
    # |a − b| of two noisy frames: median = 0.6745·√2·σ; the bound is on the difference itself.
    sigma_diff = max(float(np.median(ad)) / 0.6745, floor)
    return float(np.mean(ad > threshold * sigma_diff))


def _exposure_residual(g_ref: np.ndarray, g_new: np.ndarray) -> np.ndarray:
    """``g_new`` minus the best gain/offset map of ``g_ref``: auto-exposure and gain changes
    scale the whole image, which is not motion. The fit is repeated without the pixels that
    changed most, so a moving part does not pull the gain."""
    a = np.stack([g_ref.ravel(), np.ones(g_ref.size, np.float32)], axis=1)
    b = g_new.ravel()
    keep = np.ones(b.shape, bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        resid = b - a @ coef
        keep = np.abs(resid) <= np.quantile(np.abs(resid), 0.9)
    return resid


def motion_between(
    ref: Frame, new: Frame, threshold: float = 5.0, fraction: float = 0.005
) -> str | None:
    """Why ``new`` shows a part that moved since ``ref`` (``"colour …"``/``"depth …"``), or
    None when it stands still. See the module docstring for the rule."""
    if ref.size != new.size:
        return f"image size changed {ref.size} -> {new.size}"
    g_ref = cv2.cvtColor(ref.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g_new = cv2.cvtColor(new.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    share = _changed_fraction(_exposure_residual(g_ref, g_new), threshold, _COLOUR_FLOOR)
    if share > fraction:
        return f"colour: {share:.1%} of pixels changed"
    z_ref = cv2.medianBlur(np.ascontiguousarray(ref.xyz[..., 2]), 3)
    z_new = cv2.medianBlur(np.ascontiguousarray(new.xyz[..., 2]), 3)
    both = (z_ref > 0) & (z_new > 0)
    unit = (new.intrinsics.depth_scale if new.intrinsics is not None else None) or 0.001
    share = _changed_fraction((z_new - z_ref)[both], threshold, _DEPTH_FLOOR_UNITS * unit)
    if share > fraction:
        return f"depth: {share:.1%} of pixels changed"
    return None


def average_frames(frames: list[Frame]) -> Frame:
    """One frame from ``frames`` of a still part: valid-aware mean of xyz, mean colour.

    The result carries the first frame's number, timestamps and meta (ground truth, working
    grid), plus ``meta["averaged_frames"]`` and ``meta["frame_numbers"]``.
    """
    if not frames:
        raise ValueError("average_frames needs at least one frame")
    first, last = frames[0], frames[-1]
    xyz = np.stack([f.xyz for f in frames])  # N×H×W×3
    valid = xyz[..., 2] > 0
    count = valid.sum(axis=0)
    total = np.where(valid[..., None], xyz, 0.0).sum(axis=0, dtype=np.float64)
    mean = np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], 0.0)
    rgb = np.stack([f.rgb for f in frames]).mean(axis=0, dtype=np.float64)
    return Frame(
        rgb=np.round(rgb).astype(np.uint8),
        xyz=mean.astype(np.float32),
        frame_number=first.frame_number,
        camera_timestamp_ms=first.camera_timestamp_ms,
        host_timestamp=last.host_timestamp,
        source=first.source,
        intrinsics=last.intrinsics,
        meta={
            **first.meta,
            "averaged_frames": len(frames),
            "frame_numbers": [f.frame_number for f in frames],
        },
        capture_ms=sum(f.capture_ms for f in frames),
    )


class AveragingSource(FrameSource):
    """Delivers the valid-aware mean of ``n_frames`` consecutive still frames of ``inner``.

    Other attributes (``intrinsics``, ``depth_scale``, ``serial``, ``set_working_grid`` …) are
    the inner source's; ``stats`` mirrors the inner source's error/drop/reconnect counters and
    counts averaged frames; `averaging` says what averaging did.
    """

    def __init__(
        self,
        inner: FrameSource,
        n_frames: int,
        motion_threshold: float = 5.0,
        motion_fraction: float = 0.005,
        max_consecutive_errors: int = 50,
    ) -> None:
        super().__init__(max_consecutive_errors)
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        self.inner = inner
        self.n_frames = int(n_frames)
        self.motion_threshold = float(motion_threshold)
        self.motion_fraction = float(motion_fraction)
        self.averaging = AveragingStats()
        self.name = f"{inner.name} (mean of {self.n_frames})"

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: the camera's own (intrinsics, serial…).
        if name == "inner":  # not set yet (during __init__): avoid recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def set_working_grid(
        self, size: int, roi: tuple[float, float, float, float] | None = None
    ) -> bool:
        """Forwarded to the inner source (frames are registered there, then averaged)."""
        setter = getattr(self.inner, "set_working_grid", None)
        return bool(setter is not None and setter(size, roi))

    def _open(self) -> None:
        self.inner.open()

    def _close(self) -> None:
        self.inner.close()
        log.info("%s: averaging %s", self.name, self.averaging.as_dict())

    def _sync_stats(self) -> None:
        inner = self.inner.stats
        self.stats.errors, self.stats.dropped = inner.errors, inner.dropped
        self.stats.reconnects = inner.reconnects

    def _grab(self, timeout_s: float) -> Frame | None:
        window: list[Frame] = []
        try:
            while len(window) < self.n_frames:
                frame = self.inner.read(timeout_s)
                if frame is None:
                    self.averaging.discarded += len(window)
                    return None
                if window:
                    why = motion_between(
                        window[0], frame, self.motion_threshold, self.motion_fraction
                    )
                    if why is not None:
                        log.info(
                            "%s: frame %d moved (%s); %d frame(s) not averaged",
                            self.name, frame.frame_number, why, len(window),
                        )
                        self.averaging.motion_resets += 1
                        self.averaging.discarded += len(window)
                        window = []
                window.append(frame)
        except FrameTimeout:
            self.averaging.discarded += len(window)  # the part may have moved meanwhile
            raise
        finally:
            self._sync_stats()
        self.averaging.averaged += 1
        return average_frames(window)
