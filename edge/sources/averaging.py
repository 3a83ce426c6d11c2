"""Temporal averaging of a part that stands still: N frames in, one quieter frame out.

A stereo camera's depth noise is mostly independent from frame to frame, so the mean of N
frames of a part that does not move has ``1/√N`` of the noise (`edge.datasets.sensors`: a D435 at
0.55 m has ≈ 1.1 mm RMS; 8 frames ≈ 0.4 mm). `AveragingSource` wraps any frame source
(`open_source` wraps a RealSense camera or recording when ``camera.realsense.average_frames``
> 1) and delivers the mean of ``n`` consecutive frames of a still part:

* **valid-aware mean**: each pixel's point is the mean over the frames where it has a return
  (``z > 0``); a pixel with no return in any frame stays ``(0, 0, 0)``. Colour is averaged too.
* **motion**: each new frame is compared with the first frame of the window. The part moved
  when more than ``motion_fraction`` of the pixels changed by more than ``motion_threshold`` ×
  their noise in colour (after removing a global gain and offset: auto-exposure is not
  motion), or in depth (3×3 median first, so flickering pixels at rims do not count). The
  noise is measured from the two frames themselves (median absolute difference), so no sensor
  model is needed. Frames before the motion are dropped (counted in `AveragingStats`) and the
  window restarts at the moved frame: frames are never averaged across motion.

Two modes (``camera.realsense.average_mode``):

* ``per-stop`` (default): after delivering the mean of a stop's first ``n`` still frames the
  source delivers nothing more until a frame differs from that stop's first frame by the same
  motion rule (the part left, another arrived); then it collects a new still window. One mean
  per stop, so one verdict per part at a stop-and-go station however long the part stands.
  Frames of a stop already averaged are counted as ``held`` and one line is logged when the
  stop ends. Consequences (docs/sensor-model.md): an empty station that stands still gets one
  verdict, not one per ``n`` frames; two parts that look alike and swap without a frame
  showing the change (no visible motion) get one verdict; a slow drift that grows past the
  motion rule counts as motion (another verdict of the same part rather than a missed part).
* ``continuous``: a new window starts right after each mean, so a part standing ``k`` frames
  gives ``k // n`` means.

While parts move nothing is delivered in either mode; a stop that motion ends before ``n``
still frames gives no mean (counted as a ``short_stop``, logged). At the end of a recording an
incomplete window is dropped. While frames arrive but none is due, `read` raises `SourceIdle`
after its timeout (a `FrameTimeout`: the run loop can check its stop flag and tell health
the camera is alive; frames collected so far are kept); a real timeout of the camera drops the
window (the part may have moved meanwhile) but keeps the stop's reference frame.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np

from edge.frames import Frame
from edge.sources.base import FrameSource, FrameTimeout, SourceIdle

__all__ = [
    "AVERAGE_MODES", "AverageMode", "AveragingSource", "AveragingStats", "average_frames",
    "motion_between",
]

AverageMode = Literal["per-stop", "continuous"]
AVERAGE_MODES: tuple[str, ...] = ("per-stop", "continuous")

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
    short_stops: int = 0  # windows of >= 2 still frames that motion ended before n: no mean
    held: int = 0  # per-stop: frames of a stop already averaged, not averaged again

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
    """Delivers the valid-aware mean of ``n_frames`` consecutive still frames of ``inner``,
    once per stop (``mode="per-stop"``) or every ``n_frames`` (``"continuous"``).

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
        mode: AverageMode = "per-stop",
    ) -> None:
        super().__init__(max_consecutive_errors)
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        if mode not in AVERAGE_MODES:
            raise ValueError(f"unknown averaging mode {mode!r}; choose one of {AVERAGE_MODES}")
        self.inner = inner
        self.n_frames = int(n_frames)
        self.motion_threshold = float(motion_threshold)
        self.motion_fraction = float(motion_fraction)
        self.mode = mode
        self.averaging = AveragingStats()
        self.name = f"{inner.name} (mean of {self.n_frames}, {mode})"
        self._window: list[Frame] = []
        # per-stop: the first frame of the stop already averaged; None while collecting
        self._stop_ref: Frame | None = None
        self._held_now = 0  # frames held in the current stop
        self._stop_has_mean = False  # continuous: the window is the tail of a stop with a mean

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

    def no_output_reason(self) -> str | None:
        """Why frames came in but no mean went out (for a run without a verdict), else None."""
        read = self.inner.stats.frames
        if self.averaging.averaged or read == 0:
            return None
        a = self.averaging
        return (
            f"{read} frames read but never {self.n_frames} consecutive still ones "
            f"({a.motion_resets} motion resets, {a.short_stops} stops shorter than "
            f"{self.n_frames} frames); lower average_frames, or raise motion_threshold / "
            "motion_fraction if the part did stand still"
        )

    def _open(self) -> None:
        self.inner.open()

    def _close(self) -> None:
        self.inner.close()
        log.info("%s: averaging %s", self.name, self.averaging.as_dict())

    def _sync_stats(self) -> None:
        inner = self.inner.stats
        self.stats.errors, self.stats.dropped = inner.errors, inner.dropped
        self.stats.reconnects = inner.reconnects

    def _moved(self, ref: Frame, frame: Frame) -> str | None:
        return motion_between(ref, frame, self.motion_threshold, self.motion_fraction)

    def _step(self, frame: Frame) -> Frame | None:
        """Take one frame; return a mean when a window is complete."""
        if self._stop_ref is not None:  # per-stop: this stop already has its mean
            why = self._moved(self._stop_ref, frame)
            if why is None:
                self._held_now += 1
                self.averaging.held += 1
                return None
            log.info(
                "%s: frame %d moved (%s): the stop since frame %d is over; %d frame(s) of it "
                "held back after its mean", self.name, frame.frame_number, why,
                self._stop_ref.frame_number, self._held_now,
            )
            self._stop_ref, self._held_now, self._stop_has_mean = None, 0, False
        elif self._window:
            why = self._moved(self._window[0], frame)
            if why is not None:
                k = len(self._window)
                self.averaging.motion_resets += 1
                self.averaging.discarded += k
                if k >= 2 and not self._stop_has_mean:  # still, but too short: no verdict
                    self.averaging.short_stops += 1
                    log.info(
                        "%s: frame %d moved (%s) after %d still frame(s) (< %d): no mean "
                        "for that stop", self.name, frame.frame_number, why, k, self.n_frames,
                    )
                else:  # moving (every frame differs), or the tail of a stop with its mean
                    log.debug("%s: frame %d moved (%s)", self.name, frame.frame_number, why)
                self._window, self._stop_has_mean = [], False
        self._window.append(frame)
        if len(self._window) < self.n_frames:
            return None
        window, self._window = self._window, []
        if self.mode == "per-stop":
            self._stop_ref = window[0]
        self._stop_has_mean = True
        self.averaging.averaged += 1
        return average_frames(window)

    def _grab(self, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    frame = self.inner.read(timeout_s)
                except FrameTimeout:
                    self.averaging.discarded += len(self._window)  # it may have moved meanwhile
                    self._window = []
                    raise
                if frame is None:
                    self.averaging.discarded += len(self._window)
                    self._window = []
                    return None
                out = self._step(frame)
                if out is not None:
                    return out
                if time.monotonic() >= deadline:
                    raise SourceIdle(self._waiting_for())
        finally:
            self._sync_stats()

    def _waiting_for(self) -> str:
        if self._stop_ref is not None:
            return (f"{self.name}: waiting for motion after the stop's mean ({self._held_now} "
                    "frame(s) held)")
        return (f"{self.name}: waiting for {self.n_frames} still frames "
                f"({len(self._window)} so far)")
