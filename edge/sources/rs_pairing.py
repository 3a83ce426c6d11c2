"""A RealSense recording read as two single-stream playbacks, paired by nearest timestamp.

``rs.pipeline`` pairs depth and colour with librealsense's syncer, which only matches frames
less than about half a frame period apart and holds an unmatched frame until a newer one
arrives. A recording of parts that stand still at a low frame rate (the RealSense tools at
6 fps, depth and colour 268 ms apart) therefore plays back as *no* frameset at all. When the
station is told how much skew it may accept (``max_sync_skew_ms``), a recording is instead read
as two pipelines over the same file, one per stream, both in non-real-time playback (so memory
stays bounded: each waits for us), and each colour frame is paired with the depth frame
nearest to it in time, if that is within the tolerance.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

from edge.sources.base import FrameError, SourceError

__all__ = ["PairedPlayback"]

log = logging.getLogger(__name__)

_POLL_MS = 250


class PairedPlayback:
    """Depth/colour pairs from a ``.db3``/``.bag`` recording, matched by timestamp."""

    def __init__(self, rs: ModuleType, path: Path, max_skew_ms: float) -> None:
        self.rs = rs
        self.path = path
        self.max_skew_ms = float(max_skew_ms)
        self.pipes: dict[str, tuple[Any, Any, Any]] = {}  # kind -> (pipeline, playback, profile)
        self._pending: dict[str, deque] = {"depth": deque(), "color": deque()}
        self._ended = {"depth": False, "color": False}
        try:
            for kind in ("depth", "color"):
                self.pipes[kind] = self._start(kind)
            self.depth_to_color = self._extrinsics()
        except Exception:
            self.stop()
            raise

    def _extrinsics(self) -> Any:
        """Depth→colour extrinsics as recorded. The two pipelines are two device instances,
        between which librealsense knows no extrinsics: ask the depth playback's own device,
        which holds the colour sensor's recorded profiles too."""
        rs = self.rs
        d_prof = self.profile("depth")
        for sensor in self.device.query_sensors():
            for prof in sensor.get_stream_profiles():
                if prof.stream_type() == rs.stream.color:
                    try:
                        return d_prof.get_extrinsics_to(prof)
                    except RuntimeError:
                        continue
        raise SourceError(
            f"recording {self.path} holds no depth-to-colour extrinsics; it cannot be "
            "registered (record it with librealsense, which stores them)"
        )

    def _start(self, kind: str) -> tuple[Any, Any, Any]:
        rs = self.rs
        pipe = rs.pipeline()
        cfg = rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        cfg.enable_stream(getattr(rs.stream, kind))
        try:
            resolved = cfg.resolve(rs.pipeline_wrapper(pipe))
        except RuntimeError as exc:
            raise SourceError(
                f"recording {self.path} has no {kind} stream ({exc}); the station needs depth "
                "and colour: record with both streams enabled"
            ) from exc
        resolved.get_device().as_playback().set_real_time(False)
        profile = pipe.start(cfg)
        return pipe, profile.get_device().as_playback(), profile

    @property
    def device(self) -> Any:
        """The depth playback's device (depth sensor, depth scale, serial number)."""
        return self.pipes["depth"][2].get_device()

    def profile(self, kind: str) -> Any:
        """The video stream profile of ``kind`` ("depth" or "color")."""
        stream = getattr(self.rs.stream, kind)
        return self.pipes[kind][2].get_stream(stream).as_video_stream_profile()

    def _pull(self, kind: str, deadline: float) -> bool:
        """One more frame of ``kind`` into the pending queue; False once that stream ended."""
        if self._ended[kind]:
            return False
        pipe, playback, _ = self.pipes[kind]
        while True:
            ok, frames = pipe.try_wait_for_frames(_POLL_MS)
            if ok:
                frame = frames.get_depth_frame() if kind == "depth" else frames.get_color_frame()
                if frame:
                    frame.keep()  # held across later reads of the other stream
                    self._pending[kind].append(frame)
                    return True
                continue
            if playback.current_status() == self.rs.playback_status.stopped:
                ok, frames = pipe.try_wait_for_frames(100)
                if not ok:
                    self._ended[kind] = True
                    return False
                continue
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.path}: no {kind} frame within the timeout")

    def next_pair(self, timeout_s: float) -> tuple[Any, Any] | None:
        """The next (depth, colour) pair, or None at the end of the recording.

        Raises `FrameError` for a colour frame with no depth frame within the tolerance (the
        caller counts it and reads on).
        """
        deadline = time.monotonic() + max(timeout_s, 1.0)
        colour, depth = self._pending["color"], self._pending["depth"]
        if not colour and not self._pull("color", deadline):
            return None
        c = colour[0]
        t_c = float(c.get_timestamp())
        # read depth until one frame lies past the colour frame's time (or depth ended)
        while not depth or float(depth[-1].get_timestamp()) < t_c:
            if not self._pull("depth", deadline):
                break
        colour.popleft()
        if not depth:
            raise FrameError(f"colour frame {c.get_frame_number()} has no depth frame left")
        best = min(range(len(depth)), key=lambda i: abs(float(depth[i].get_timestamp()) - t_c))
        d = depth[best]
        skew = abs(float(d.get_timestamp()) - t_c)
        if skew > self.max_skew_ms:
            raise FrameError(
                f"colour frame {c.get_frame_number()}: the nearest depth frame is {skew:.1f} ms "
                f"away, more than max_sync_skew_ms {self.max_skew_ms:g}"
            )
        for _ in range(best + 1):  # older depth frames can no longer be the nearest
            depth.popleft()
        return d, c

    def stop(self) -> None:
        """Stop both pipelines (idempotent)."""
        self._pending = {"depth": deque(), "color": deque()}
        for pipe, _, _ in self.pipes.values():
            try:
                pipe.stop()
            except RuntimeError as exc:
                log.debug("paired playback stop: %s", exc)
        self.pipes = {}
