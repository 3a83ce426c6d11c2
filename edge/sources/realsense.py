"""Intel RealSense frames — a live camera or a recording — through one code path.

Both go through ``rs.pipeline``: a live camera is selected with ``config.enable_device`` (serial
number), a recording with ``config.enable_device_from_file(path, repeat_playback=False)`` and
non-real-time playback, so every recorded frame is delivered in order instead of being skipped
when processing is slower than the recording. Each frameset then goes through the same steps:

1. the post-processing filters, in the order Intel recommends (decimation → depth-to-disparity →
   spatial → temporal → disparity-to-depth → hole filling), applied to the whole frameset;
2. registration of depth to colour. When the station has told the source its bundle's working
   grid (`set_working_grid`, from `Inspector.attach`), depth is projected straight onto that
   grid over the colour image's ROI with the streams' intrinsics and extrinsics
   (`edge.processing.registration`) and the colour ROI is area-resized to it: the cost follows the model's
   input, not the camera (a 1920×1080 frame never exists as floats). Without a grid (recording,
   reference-pipeline bundles) ``rs.align(rs.stream.color)`` at full colour resolution;
3. raw Z16 × depth scale (read from the device's depth sensor) → metres → organised xyz with the
   registered image's intrinsics (`edge.processing.geometry.depth_to_xyz`), the same cloud layout as an
   MVTec 3D-AD xyz TIFF.

Frame counters are watched: a frameset whose depth or colour frame repeats the previous one (the
pipeline re-sends the last frame of a stream that skipped one) is a counted error; gaps in the
counters are counted as dropped frames. A live camera that stops delivering (unplugged, USB
reset) is reconnected with exponential back-off; each success is counted in
``stats.reconnects``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from edge.frames import Frame, Intrinsics
from edge.processing.geometry import depth_to_xyz, grid_to_xyz
from edge.processing.registration import (
    SUPPORTED_DISTORTION,
    DepthRegistration,
    Extrinsics,
    WorkingGrid,
    area_resize,
)
from edge.sources.base import FrameError, FrameSource, FrameTimeout, SourceError
from edge.sources.options import FilterOptions, RealSenseOptions
from edge.sources.rs_pairing import PairedPlayback

__all__ = ["RECORDING_SUFFIXES", "RealSenseSource", "require_pyrealsense2", "set_depth_units"]

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".db3", ".bag")
NO_DEVICE_HINT = (
    "no RealSense device found; check the USB 3 cable (a USB 2 port or cable limits streams), "
    "the udev rules (librealsense's 99-realsense-libusb.rules, see deploy/) and that no other "
    "process holds the camera"
)
# Poll interval while waiting on a recording, so the end of playback is noticed promptly.
_PLAYBACK_POLL_S = 0.25


def require_pyrealsense2() -> ModuleType:
    """Import pyrealsense2 or raise a `SourceError` that says what to install."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        text = str(exc)
        if "libusb" in text:
            hint = (
                "pyrealsense2 is installed but cannot load libusb; install it with "
                "`apt-get install libusb-1.0-0`"
            )
        else:
            hint = (
                "pyrealsense2 is not installed; install it with `pip install 'trd-edge[realsense]'` "
                "(it also needs `apt-get install libusb-1.0-0`)"
            )
        raise SourceError(f"{hint} ({text})") from exc
    # Some builds expose the bindings one level down.
    if not hasattr(rs, "pipeline") and hasattr(rs, "pyrealsense2"):
        rs = rs.pyrealsense2
    return rs


def build_filters(rs: ModuleType, opts: FilterOptions) -> list[Any]:
    """Fresh post-processing blocks in upstream order (new objects = no temporal history)."""
    blocks: list[Any] = []
    if opts.decimation > 1:
        dec = rs.decimation_filter()
        dec.set_option(rs.option.filter_magnitude, float(opts.decimation))
        blocks.append(dec)
    smoothing = opts.spatial or opts.temporal
    if smoothing:
        blocks.append(rs.disparity_transform(True))
    if opts.spatial:
        spatial = rs.spatial_filter()
        spatial.set_option(rs.option.filter_smooth_alpha, opts.spatial_alpha)
        spatial.set_option(rs.option.filter_smooth_delta, opts.spatial_delta)
        blocks.append(spatial)
    if opts.temporal:
        temporal = rs.temporal_filter()
        temporal.set_option(rs.option.filter_smooth_alpha, opts.temporal_alpha)
        temporal.set_option(rs.option.filter_smooth_delta, opts.temporal_delta)
        blocks.append(temporal)
    if smoothing:
        blocks.append(rs.disparity_transform(False))
    if opts.hole_filling >= 0:
        blocks.append(rs.hole_filling_filter(opts.hole_filling))
    return blocks


def _intrinsics(intr: Any, depth_scale: float | None) -> Intrinsics:
    """Our `Intrinsics` from a pyrealsense2 `rs.intrinsics` (principal point = ppx, ppy)."""
    return Intrinsics(
        fx=intr.fx, fy=intr.fy, cx=intr.ppx, cy=intr.ppy, width=intr.width,
        height=intr.height, depth_scale=depth_scale,
        model=str(intr.model).rsplit(".", 1)[-1].lower(),
        coeffs=tuple(float(c) for c in intr.coeffs),  # type: ignore[arg-type]
    )


def _already_registered(depth: Any, color: Any, tol: float = 1e-6) -> bool:
    """True when depth is already pixel-registered to colour: same intrinsics and size, identity
    extrinsics (software-device recordings of registered RGB-D data, some camera modes)."""
    try:
        extr = depth.get_extrinsics_to(color)
    except RuntimeError:
        return False
    di, ci = depth.get_intrinsics(), color.get_intrinsics()
    same_intr = (di.width, di.height) == (ci.width, ci.height) and np.allclose(
        [di.fx, di.fy, di.ppx, di.ppy], [ci.fx, ci.fy, ci.ppx, ci.ppy], atol=tol
    )
    identity = np.allclose(extr.rotation, np.eye(3).ravel(), atol=tol) and np.allclose(
        extr.translation, 0.0, atol=tol
    )
    no_distortion = not np.any(np.asarray(di.coeffs)) and not np.any(np.asarray(ci.coeffs))
    return bool(same_intr and identity and no_distortion)


def set_depth_units(rs: ModuleType, sensor: Any, units: float, name: str) -> float:
    """Set a depth sensor's ``rs.option.depth_units`` to ``units`` (m per Z16 step) and return
    the unit it reports afterwards. SourceError, naming the fix, when the sensor does not
    have the option, cannot change it, or ``units`` is outside its range."""
    opt = rs.option.depth_units
    if not sensor.supports(opt):
        raise SourceError(
            f"{name}: this camera's depth sensor has no depth_units option; remove "
            "camera.realsense.depth_units (the camera's fixed unit is used)"
        )
    if sensor.is_option_read_only(opt):
        raise SourceError(f"{name}: depth_units is read-only on this camera; remove the setting")
    rng = sensor.get_option_range(opt)
    if not rng.min - 1e-12 <= units <= rng.max + 1e-12:
        raise SourceError(
            f"{name}: depth_units {units:g} m is outside the camera's range "
            f"{rng.min:g}–{rng.max:g} m; choose a unit in that range"
        )
    try:
        sensor.set_option(opt, float(units))
    except RuntimeError as exc:
        raise SourceError(f"{name}: the camera refused depth_units {units:g} m ({exc})") from exc
    got = float(sensor.get_option(opt))
    if abs(got - units) > 0.01 * units:
        raise SourceError(
            f"{name}: depth_units set to {units:g} m but the camera reports {got:g} m"
        )
    return got


class RealSenseSource(FrameSource):
    """A live RealSense camera (``path=None``) or a ``.db3``/``.bag`` recording (``path``)."""

    def __init__(
        self,
        path: str | Path | None = None,
        options: RealSenseOptions | None = None,
        max_consecutive_errors: int = 50,
    ) -> None:
        super().__init__(max_consecutive_errors)
        self.options = options or RealSenseOptions()
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.name = f"file:{self.path}"
            self._check_recording_path()
            if self.options.depth_units is not None:
                raise SourceError(
                    f"{self.name}: depth_units applies to a live camera; a recording keeps the "
                    "unit it was recorded with (remove camera.realsense.depth_units)"
                )
        else:
            self.name = f"realsense:{self.options.serial}" if self.options.serial else "realsense"
        self.intrinsics: Intrinsics | None = None
        self.depth_scale: float | None = None
        self.serial: str | None = None
        self._rs: ModuleType | None = None
        self._pipe: Any = None
        self._playback: Any = None
        self._align: Any = None
        self._filters: list[Any] = []
        self._last_numbers: dict[str, int] = {}
        self._lost_since: float | None = None
        self._registered = False
        # working grid (set_working_grid): side and ROI fractions; None = rs.align at full size
        self._grid: tuple[int, tuple[float, float, float, float] | None] | None = None
        self._geometry: dict[tuple, tuple[Intrinsics, Extrinsics, Intrinsics]] = {}
        self._zbuf: np.ndarray | None = None
        self._warned_lens = False
        self._resize_buffers: dict = {}
        self._grid_rays: tuple | None = None  # (grid intrinsics, x rays, y rays)
        self._registration = DepthRegistration()  # its rays and buffers, kept between frames  # area_resize's intermediate images, reused per frame
        # a recording with max_sync_skew_ms: two single-stream playbacks paired by us
        self._paired: PairedPlayback | None = None
        self._backoff = self.options.reconnect_initial_s
        self._next_attempt = 0.0

    def set_working_grid(
        self, size: int, roi: tuple[float, float, float, float] | None = None
    ) -> bool:
        """Deliver frames registered on a ``size × size`` grid over the colour ROI (fractions)
        instead of at full colour resolution; see the module docstring. Returns True."""
        self._grid = (int(size), tuple(roi) if roi is not None else None)  # type: ignore[assignment]
        self._zbuf = None
        return True

    @property
    def is_recording(self) -> bool:
        """True when playing back a file rather than streaming from a camera."""
        return self.path is not None

    # -- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        if self.is_recording:
            self._check_recording_path()
        self._rs = require_pyrealsense2()
        self._start()

    def _check_recording_path(self) -> None:
        assert self.path is not None
        if self.path.suffix.lower() not in RECORDING_SUFFIXES:
            raise SourceError(
                f"{self.path}: not a RealSense recording (expected a .db3 file, or a legacy .bag); "
                "for a folder of images use folder:DIR"
            )
        if not self.path.is_file():
            raise SourceError(f"recording {self.path} does not exist (or is not a file)")
        if self.options.record_to is not None:
            raise SourceError("record_to only applies to a live camera, not to a recording")
        # Look at the file before librealsense does: it says only "SQL logic error" for an
        # empty or foreign .db3. A rosbag2 .db3 is SQLite with `topics` and `messages` tables.
        with self.path.open("rb") as fh:
            head = fh.read(16)
        again = "record it again (a recording cut short or never written is unusable)"
        if not head:
            raise SourceError(f"recording {self.path} is empty (0 bytes): {again}")
        if self.path.suffix.lower() == ".db3":
            if head != b"SQLite format 3\x00":
                raise SourceError(
                    f"{self.path} is not a RealSense .db3 recording (not an SQLite file): {again}"
                )
            import sqlite3

            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
                ) as db:
                    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            except sqlite3.DatabaseError as exc:
                raise SourceError(f"{self.path} is a damaged SQLite file ({exc}): {again}") from None
            if not {"topics", "messages"} <= tables:
                raise SourceError(
                    f"{self.path} is an SQLite file but not a rosbag2 recording (no topics/"
                    f"messages tables; has {', '.join(sorted(tables)) or 'no tables'}): "
                    "record with the RealSense tools or camera.record_to"
                )
        elif not head.startswith(b"#ROSBAG V2.0"):
            raise SourceError(f"{self.path} is not a ROS1 .bag recording (bad header): {again}")

    def _config(self) -> Any:
        rs = self._rs
        assert rs is not None
        cfg = rs.config()
        if self.is_recording:
            cfg.enable_device_from_file(str(self.path), repeat_playback=False)
            return cfg
        opts = self.options
        serial = self._pick_serial()
        cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.depth, opts.width, opts.height, rs.format.z16, opts.fps)
        color_fmt = rs.format.rgb8 if opts.color_format == "rgb8" else rs.format.bgr8
        cfg.enable_stream(
            rs.stream.color, opts.color_width or opts.width, opts.color_height or opts.height,
            color_fmt, opts.fps,
        )
        if opts.record_to is not None:
            record_to = Path(opts.record_to)
            if record_to.suffix.lower() != ".db3":
                raise SourceError(
                    f"record_to {record_to}: pyrealsense2 >= 2.58 records .db3 files only"
                )
            record_to.parent.mkdir(parents=True, exist_ok=True)
            cfg.enable_record_to_file(str(record_to))
        return cfg

    def _pick_serial(self) -> str:
        rs = self._rs
        assert rs is not None
        devices = rs.context().query_devices()
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if not serials:
            raise SourceError(NO_DEVICE_HINT)
        wanted = self.options.serial
        if wanted is None:
            if len(serials) > 1:
                log.warning(
                    "several RealSense cameras (%s); using %s — set a serial to choose",
                    ", ".join(serials),
                    serials[0],
                )
            return serials[0]
        if wanted not in serials:
            raise SourceError(
                f"RealSense camera {wanted} not found; connected: {', '.join(serials)}"
            )
        return wanted

    def _start(self) -> None:
        """Start the pipeline and read the depth scale, intrinsics and serial number."""
        rs = self._rs
        assert rs is not None
        if self.is_recording and self.options.max_sync_skew_ms is not None:
            self._start_paired()
            return
        pipe = rs.pipeline()
        cfg = self._config()
        try:
            if self.is_recording:
                # Non-real-time must be set before streaming starts (set afterwards, the first
                # frames may already have played, and been dropped, in real time); resolve()
                # caches the device that start() then uses. Measured on 2.59 with software-device
                # recordings: all frames arrive in ~97 % of playbacks, otherwise the first
                # 1-8 framesets are lost at start-up. Pausing the playback until the pipeline
                # runs avoided that loss but made start() block for 10 s in ~20 % of starts.
                resolved = cfg.resolve(rs.pipeline_wrapper(pipe))
                resolved.get_device().as_playback().set_real_time(False)
            elif self.options.depth_units is not None:
                # before streaming: a live camera's depth unit, checked against max_depth_m by
                # RealSenseOptions; depth_scale below reads back what the camera uses
                device = cfg.resolve(rs.pipeline_wrapper(pipe)).get_device()
                set_depth_units(rs, device.first_depth_sensor(), self.options.depth_units,
                                self.name)
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            what = f"recording {self.path}" if self.is_recording else "the RealSense camera"
            raise SourceError(f"cannot start {what}: {exc}") from exc
        device = profile.get_device()
        self._pipe = pipe
        self._playback = device.as_playback() if self.is_recording else None
        try:
            self.serial = device.get_info(rs.camera_info.serial_number)
        except RuntimeError:
            self.serial = None
        self.depth_scale = self._read_depth_scale(device)
        self._align = rs.align(rs.stream.color)
        # New filter objects on every (re)start: the temporal filter's history belongs to the
        # previous stream and must not bleed into the new one.
        self._filters = build_filters(rs, self.options.filters)
        self._last_numbers = {}
        self._geometry = {}
        streams = {str(p.stream_type()).rsplit(".", 1)[-1] for p in profile.get_streams()}
        missing = [k for k in ("depth", "color") if k not in streams]
        if missing:
            self._stop_after_failed_start(pipe)
            what = f"recording {self.path}" if self.is_recording else f"{self.name}"
            raise SourceError(
                f"{what} has no {' and no '.join(missing)} stream (it has: "
                f"{', '.join(sorted(streams)) or 'none'}); the station needs depth and colour: "
                "record with both streams enabled (e.g. `trd-edge record --camera realsense`)"
            )
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        depth = profile.get_stream(rs.stream.depth).as_video_stream_profile()
        self._registered = _already_registered(depth, color)
        self.intrinsics = _intrinsics(color.get_intrinsics(), self.depth_scale)
        log.info(
            "%s streaming %dx%d, depth scale %.6g m",
            self.name,
            self.intrinsics.width,
            self.intrinsics.height,
            self.depth_scale,
        )

    def _start_paired(self) -> None:
        """Recording + max_sync_skew_ms: pair frames ourselves (edge/sources/rs_pairing.py)."""
        rs = self._rs
        assert rs is not None and self.path is not None
        try:
            paired = PairedPlayback(rs, self.path, float(self.options.max_sync_skew_ms or 0))
        except RuntimeError as exc:
            raise SourceError(f"cannot start recording {self.path}: {exc}") from exc
        self._paired = paired
        device = paired.device
        try:
            self.serial = device.get_info(rs.camera_info.serial_number)
        except RuntimeError:
            self.serial = None
        self.depth_scale = self._read_depth_scale(device)
        self._filters = build_filters(rs, self.options.filters)
        self._last_numbers = {}
        self._geometry = {}
        self.intrinsics = _intrinsics(paired.profile("color").get_intrinsics(), self.depth_scale)
        log.info("%s: depth and colour paired by timestamp within %g ms", self.name,
                 paired.max_skew_ms)

    def _stop_after_failed_start(self, pipe: Any) -> None:
        self._pipe = None
        self._playback = None
        try:
            pipe.stop()
        except RuntimeError as exc:
            log.debug("pipeline stop: %s", exc)

    def _read_depth_scale(self, device: Any) -> float:
        rs = self._rs
        assert rs is not None
        try:
            sensor = device.first_depth_sensor()
        except RuntimeError as exc:
            raise SourceError(f"{self.name} has no depth sensor ({exc})") from exc
        scale = 0.0
        try:
            scale = float(sensor.get_depth_scale())
        except RuntimeError:
            pass
        if scale <= 0.0 and sensor.supports(rs.option.depth_units):
            scale = float(sensor.get_option(rs.option.depth_units))
        if scale <= 0.0:
            raise SourceError(f"{self.name}: the depth sensor reports no depth scale/depth units")
        return scale

    def _stop_pipeline(self) -> None:
        paired, self._paired = self._paired, None
        if paired is not None:
            paired.stop()
        pipe, self._pipe = self._pipe, None
        self._playback = None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError as exc:  # already stopped / device gone
                log.debug("pipeline stop: %s", exc)

    def _close(self) -> None:
        self._stop_pipeline()

    # -- reading -----------------------------------------------------------------------------
    def _grab(self, timeout_s: float) -> Frame | None:
        if self._paired is not None:
            try:
                pair = self._paired.next_pair(timeout_s)
            except TimeoutError as exc:
                raise FrameTimeout(str(exc)) from exc
            if pair is None:
                return None
            host_ts, started = time.time(), time.perf_counter()
            frame = self._convert_pair(*pair, host_ts)
            frame.capture_ms = (time.perf_counter() - started) * 1000.0
            return frame
        if self.is_recording:
            frames = self._wait_playback(timeout_s)
            if frames is None:
                return None
        else:
            frames = self._wait_live(timeout_s)
        host_ts = time.time()
        started = time.perf_counter()
        frame = self._convert(frames, host_ts)
        frame.capture_ms = (time.perf_counter() - started) * 1000.0
        return frame

    def _wait_playback(self, timeout_s: float) -> Any | None:
        """Next frameset of the recording, or ``None`` once playback has stopped."""
        rs = self._rs
        assert rs is not None and self._pipe is not None
        deadline = time.monotonic() + max(timeout_s, _PLAYBACK_POLL_S)
        while True:
            poll_ms = int(max(min(_PLAYBACK_POLL_S, deadline - time.monotonic()), 0.01) * 1000)
            ok, frames = self._pipe.try_wait_for_frames(poll_ms)
            if ok:
                return frames
            if self._playback.current_status() == rs.playback_status.stopped:
                # Drain anything still in flight between the file reader and the syncer.
                ok, frames = self._pipe.try_wait_for_frames(100)
                return frames if ok else None
            if time.monotonic() >= deadline:
                raise FrameTimeout(f"{self.name}: no frame within {timeout_s:.1f} s")

    def _wait_live(self, timeout_s: float) -> Any:
        """Next frameset from the camera; reconnects (with back-off) while it is lost."""
        deadline = time.monotonic() + timeout_s
        opts = self.options
        while True:
            if self._pipe is not None:
                wait_s = min(opts.wait_timeout_s, max(deadline - time.monotonic(), 0.05))
                ok, frames = self._try_wait(wait_s)
                if ok:
                    return frames
                if wait_s >= opts.wait_timeout_s and self._pipe is not None:
                    self._mark_lost(f"no frame for {wait_s:.1f} s")
            if self._pipe is None:
                now = time.monotonic()
                if (
                    self._lost_since is not None
                    and opts.give_up_after_s is not None
                    and (now - self._lost_since > opts.give_up_after_s)
                ):
                    raise SourceError(
                        f"{self.name}: camera lost for more than {opts.give_up_after_s:.0f} s; "
                        + NO_DEVICE_HINT
                    )
                if now >= self._next_attempt:
                    if not self._try_reconnect():
                        self._next_attempt = time.monotonic() + self._backoff
                        self._backoff = min(self._backoff * 2.0, opts.reconnect_max_s)
                    continue
                time.sleep(max(min(self._next_attempt, deadline) - now, 0.0))
            if time.monotonic() >= deadline:
                state = "camera lost, still reconnecting" if self._pipe is None else "no frame"
                raise FrameTimeout(f"{self.name}: {state} ({timeout_s:.1f} s)")

    def _try_wait(self, wait_s: float) -> tuple[bool, Any]:
        try:
            return self._pipe.try_wait_for_frames(int(wait_s * 1000))
        except RuntimeError as exc:  # device disconnected mid-wait
            self._mark_lost(str(exc))
            return False, None

    def _mark_lost(self, why: str) -> None:
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            self._backoff = self.options.reconnect_initial_s
            self._next_attempt = time.monotonic() + self._backoff
        log.warning("%s: camera lost (%s); reconnecting with back-off", self.name, why)
        self._stop_pipeline()

    def _try_reconnect(self) -> bool:
        try:
            self._start()
        except (SourceError, RuntimeError) as exc:
            log.warning("%s: reconnect failed: %s", self.name, exc)
            return False
        lost_for = time.monotonic() - (self._lost_since or time.monotonic())
        self._lost_since = None
        self.stats.reconnects += 1
        log.warning(
            "%s: reconnected after %.1f s (reconnect #%d)",
            self.name,
            lost_for,
            self.stats.reconnects,
        )
        return True

    # -- conversion --------------------------------------------------------------------------
    def _check_counters(self, depth: Any, color: Any) -> None:
        """Count gaps as dropped; raise `FrameError` for a repeated (stale) frame."""
        numbers = {"depth": int(depth.get_frame_number()), "color": int(color.get_frame_number())}
        stale = [k for k, n in numbers.items() if self._last_numbers.get(k) == n]
        gap = 0
        for key, number in numbers.items():
            last = self._last_numbers.get(key)
            if last is not None and number > last + 1:
                gap = max(gap, number - last - 1)
        self._last_numbers.update(numbers)
        if gap:
            self.stats.dropped += gap
            log.warning(
                "%s: %d frame(s) dropped before colour frame %d", self.name, gap, numbers["color"]
            )
        if stale:
            raise FrameError(
                f"stale {' and '.join(stale)} frame {numbers[stale[0]]} repeated at colour frame "
                f"{numbers['color']} (its new frame was lost)"
            )
        # Same criterion as librealsense's timestamp matcher: frames of one pair lie within
        # half a frame period of each other; farther apart, depth belongs to another moment.
        if depth.get_frame_timestamp_domain() == color.get_frame_timestamp_domain():
            fps = color.get_profile().fps() or self.options.fps
            skew = abs(float(depth.get_timestamp()) - float(color.get_timestamp()))
            limit = self.options.max_sync_skew_ms or 500.0 / fps
            if skew >= limit:
                rule = (
                    f"max_sync_skew_ms {limit:g}" if self.options.max_sync_skew_ms
                    else f"half a frame period at {fps} fps, {limit:.1f} ms"
                )
                raise FrameError(
                    f"depth frame {numbers['depth']} and colour frame {numbers['color']} are "
                    f"{skew:.1f} ms apart (more than {rule}): not a synchronous pair; for parts "
                    "that stand still, allow it with camera option max_sync_skew_ms (e.g. "
                    f"`?max_sync_skew_ms={max(2 * skew, 1):.0f}`)"
                )

    def _convert(self, frames: Any, host_ts: float) -> Frame:
        rs = self._rs
        assert rs is not None
        depth, color = frames.get_depth_frame(), frames.get_color_frame()
        if not depth or not color:
            missing = "depth" if not depth else "colour"
            raise FrameError(f"frameset without a {missing} frame")
        self._check_counters(depth, color)
        try:
            processed = frames
            for block in self._filters:
                processed = block.process(processed)
            processed = processed.as_frameset()
            p_depth = processed.get_depth_frame()
            if self._grid is not None and self._grid_supported(p_depth, color):
                return self._convert_to_grid(p_depth, color, depth, host_ts)
            if self._registered and (p_depth.get_width(), p_depth.get_height()) == (
                color.get_width(),
                color.get_height(),
            ):
                # Depth is already in the colour camera's frame: rs.align would only add
                # rounding holes (whole empty columns, measured with identical intrinsics).
                aligned = processed
            else:
                aligned = self._align.process(processed)
            a_depth, a_color = aligned.get_depth_frame(), aligned.get_color_frame()
            if not a_depth or not a_color:
                raise FrameError("alignment produced no depth/colour frame")
            z16 = np.asanyarray(a_depth.get_data())
            image = np.asanyarray(a_color.get_data())
            if z16.shape != image.shape[:2] or image.ndim != 3 or image.shape[2] != 3:
                raise FrameError(f"aligned depth {z16.shape} does not match colour {image.shape}")
            intr = a_depth.get_profile().as_video_stream_profile().get_intrinsics()
            depth_m = z16.astype(np.float32) * np.float32(self.depth_scale)
            xyz = depth_to_xyz(depth_m, intr.fx, intr.fy, intr.ppx, intr.ppy)
            if a_color.get_profile().format() == rs.format.bgr8:
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            else:
                rgb = np.array(image, dtype=np.uint8, copy=True)
            timestamp = float(color.get_timestamp())
            domain = str(color.get_frame_timestamp_domain()).rsplit(".", 1)[-1]
        except FrameError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            raise FrameError(
                f"cannot convert colour frame {color.get_frame_number()}: {exc}"
            ) from exc
        intrinsics = _intrinsics(intr, self.depth_scale)
        self.intrinsics = intrinsics
        return Frame(
            rgb=rgb,
            xyz=xyz,
            frame_number=int(color.get_frame_number()),
            camera_timestamp_ms=timestamp,
            host_timestamp=host_ts,
            source=self.name,
            intrinsics=intrinsics,
            meta={
                "depth_frame_number": int(depth.get_frame_number()),
                "depth_timestamp_ms": float(depth.get_timestamp()),
                "timestamp_domain": domain,
                "serial": self.serial,
            },
        )

    def _stream_geometry(self, p_depth: Any, color: Any) -> tuple[Intrinsics, Extrinsics, Intrinsics]:
        """Depth intrinsics, depth→colour extrinsics and colour intrinsics, per stream profile
        (decimation changes the depth profile): read once, not per frame."""
        d_prof = p_depth.get_profile().as_video_stream_profile()
        c_prof = color.get_profile().as_video_stream_profile()
        key = (d_prof.unique_id(), p_depth.get_width(), c_prof.unique_id())
        geo = self._geometry.get(key)
        if geo is None:
            try:
                if self._paired is not None:  # two playback devices: read at start
                    extr = Extrinsics.from_rs(self._paired.depth_to_color)
                else:
                    extr = Extrinsics.from_rs(d_prof.get_extrinsics_to(c_prof))
            except RuntimeError as exc:
                raise FrameError(f"no depth-to-colour extrinsics in this stream ({exc})") from exc
            geo = (
                _intrinsics(d_prof.get_intrinsics(), self.depth_scale),
                extr,
                _intrinsics(c_prof.get_intrinsics(), self.depth_scale),
            )
            self._geometry[key] = geo
        return geo

    def _convert_pair(self, depth: Any, color: Any, host_ts: float) -> Frame:
        """A pair from `PairedPlayback`: filters on the depth frame, then registration."""
        self._check_counters(depth, color)
        try:
            p_depth = depth
            for block in self._filters:
                p_depth = block.process(p_depth)
            return self._convert_to_grid(p_depth.as_depth_frame(), color, depth, host_ts)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise FrameError(
                f"cannot convert colour frame {color.get_frame_number()}: {exc}"
            ) from exc

    def _grid_supported(self, p_depth: Any, color: Any) -> bool:
        """Whether edge.processing.registration handles these lenses (pinhole, Brown–Conrady variants);
        otherwise rs.align at full resolution, and preprocessing brings the frame to the grid."""
        d_intr, _, c_intr = self._stream_geometry(p_depth, color)
        bad = [i.model for i in (d_intr, c_intr)
               if any(i.coeffs) and i.model not in SUPPORTED_DISTORTION]
        if bad and not self._warned_lens:
            self._warned_lens = True
            log.warning("%s: lens model %s is not handled by the working-grid registration; "
                        "using rs.align at full resolution (slower)", self.name, bad[0])
        return not bad

    def _convert_to_grid(self, p_depth: Any, color: Any, depth: Any, host_ts: float) -> Frame:
        """Register (filtered) depth and area-resize colour onto the working grid; without a
        grid, register at the colour image's own resolution (what rs.align gives)."""
        rs = self._rs
        assert rs is not None
        d_intr, extr, c_intr = self._stream_geometry(p_depth, color)
        if self._grid is not None:
            size, roi = self._grid
            gw = gh = size
        else:
            size, roi, gw, gh = 0, None, c_intr.width, c_intr.height
        grid = WorkingGrid.over((c_intr.height, c_intr.width), roi, gw, gh)
        if self._zbuf is None or self._zbuf.shape != (gh, gw):
            self._zbuf = np.empty((gh, gw), np.float32)
        z16 = np.asanyarray(p_depth.get_data())
        image = np.asanyarray(color.get_data())
        if image.ndim != 3 or image.shape[2] != 3:
            raise FrameError(f"colour frame has shape {image.shape}, expected H×W×3 (rgb8/bgr8)")
        z = self._registration(z16, float(self.depth_scale or 0.001), d_intr, extr, c_intr,
                               grid, out=self._zbuf)
        g_intr = grid.intrinsics(c_intr)
        if self._grid_rays is None or self._grid_rays[0] != g_intr:
            self._grid_rays = (
                g_intr,
                ((np.arange(gw) - g_intr.cx) / g_intr.fx).astype(np.float32),
                ((np.arange(gh) - g_intr.cy) / g_intr.fy).astype(np.float32),
            )
        xyz = grid_to_xyz(z, self._grid_rays[1], self._grid_rays[2])
        # the frame is new, the buffers are not: the caller (Frame) gets a copy at grid size
        rgb = area_resize(grid.crop(image), gw, gh, self._resize_buffers).copy()
        if color.get_profile().format() == rs.format.bgr8:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
        self.intrinsics = c_intr
        meta = {
            "depth_frame_number": int(depth.get_frame_number()),
            "depth_timestamp_ms": float(depth.get_timestamp()),
            "timestamp_domain": str(color.get_frame_timestamp_domain()).rsplit(".", 1)[-1],
            "serial": self.serial,
        }
        if self._grid is not None:
            meta |= {"camera_size": (c_intr.height, c_intr.width),
                     "working_grid": {"size": size, "roi": roi}}
        return Frame(
            rgb=np.ascontiguousarray(rgb),
            xyz=xyz,
            frame_number=int(color.get_frame_number()),
            camera_timestamp_ms=float(color.get_timestamp()),
            host_timestamp=host_ts,
            source=self.name,
            intrinsics=g_intr,
            meta=meta,
        )
