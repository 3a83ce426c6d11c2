"""Write genuine RealSense recordings without a camera (pyrealsense2's software device).

`write_recording` builds an ``rs.software_device`` with a depth sensor (Z16, read-only
``depth_units`` option) and a colour sensor (RGB8), registers identity extrinsics between them,
pushes every frame with ``on_video_frame`` (frame numbers and timestamps included) and records
the device with ``rs.recorder`` into a ``.db3`` file (pyrealsense2 >= 2.58 writes only .db3).
The file plays back through ``rs.pipeline`` exactly like a camera recording, so tests and demos
exercise the live code path (`edge.sources.realsense`).

Known playback behaviour: the pipeline's syncer may drop the first depth/colour pair of a
recording, and (measured on 2.59, ~3 % of playbacks) occasionally more of the first framesets.
A reader should expect ``n`` or ``n - 1`` framesets from ``n`` written pairs and tolerate a
rare shorter start. Frames are pushed at ``fps`` by default, like a camera: recordings pushed
flat out played back with more frames lost or paired with stale depth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import Intrinsics
from edge.processing.registration import Extrinsics
from edge.sources.pacing import Pacer
from edge.sources.realsense import require_pyrealsense2

__all__ = ["DEFAULT_SERIAL", "intrinsics_from_xyz", "write_recording", "xyz_to_depth"]

DEFAULT_SERIAL = "trd-edge-software"
_Z16_MAX = np.iinfo(np.uint16).max


def xyz_to_depth(xyz: np.ndarray, depth_units: float = 0.001) -> np.ndarray:
    """Z16 depth (``H×W`` uint16, raw units) from an organised cloud's z channel.

    ``z / depth_units`` rounded to the nearest unit; points with no return (z <= 0, NaN) become
    0, and depths beyond the Z16 range raise ``ValueError`` (pick coarser ``depth_units``).
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be an organised H×W×3 cloud, got shape {xyz.shape}")
    if depth_units <= 0:
        raise ValueError(f"depth_units must be positive, got {depth_units}")
    z = np.nan_to_num(xyz[..., 2].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    raw = np.rint(np.where(z > 0, z, 0.0) / depth_units)
    if raw.max(initial=0) > _Z16_MAX:
        raise ValueError(
            f"depth {z.max():.3f} m exceeds the Z16 range at depth_units={depth_units} "
            f"({_Z16_MAX * depth_units:.3f} m); use larger depth_units"
        )
    return raw.astype(np.uint16)


def intrinsics_from_xyz(xyz: np.ndarray, depth_scale: float | None = 0.001) -> Intrinsics:
    """Fit pinhole intrinsics to an organised cloud (``u = fx·x/z + cx``, ``v = fy·y/z + cy``).

    Exact for clouds that came from a pinhole camera (synthetic scenes, deprojected depth);
    a least-squares estimate for MVTec 3D-AD scans. Raises ``ValueError`` when the cloud has
    too few valid points or no perspective (e.g. an orthographic cloud with constant x/z).
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be an organised H×W×3 cloud, got shape {xyz.shape}")
    h, w = xyz.shape[:2]
    z = xyz[..., 2].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    if valid.sum() < 10:
        raise ValueError("xyz has fewer than 10 valid points; cannot fit intrinsics")
    vv, uu = np.nonzero(valid)
    xn = xyz[..., 0].astype(np.float64)[valid] / z[valid]
    yn = xyz[..., 1].astype(np.float64)[valid] / z[valid]

    def fit(t: np.ndarray, pix: np.ndarray, axis: str) -> tuple[float, float]:
        if np.ptp(t) <= 1e-9:
            raise ValueError(f"xyz has no spread in {axis}/z; it is not a perspective cloud")
        a = np.stack([t, np.ones_like(t)], axis=1)
        (f, c), *_ = np.linalg.lstsq(a, pix.astype(np.float64), rcond=None)
        if f <= 0:
            raise ValueError(f"fitted focal length along {axis} is not positive ({f:.3g})")
        return float(f), float(c)

    fx, cx = fit(xn, uu, "x")
    fy, cy = fit(yn, vv, "y")
    return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=w, height=h, depth_scale=depth_scale)


def _rs_intrinsics(rs: Any, intr: Intrinsics) -> Any:
    out = rs.intrinsics()
    out.width, out.height = int(intr.width), int(intr.height)
    out.fx, out.fy, out.ppx, out.ppy = (
        float(intr.fx),
        float(intr.fy),
        float(intr.cx),
        float(intr.cy),
    )
    out.model = rs.distortion.none
    out.coeffs = [0.0] * 5
    return out


def _video_stream(rs: Any, kind: Any, uid: int, fmt: Any, bpp: int, fps: int, intr: Any) -> Any:
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid = kind, 0, uid
    vs.width, vs.height, vs.fps = intr.width, intr.height, fps
    vs.bpp, vs.fmt, vs.intrinsics = bpp, fmt, intr
    return vs


def _unpack(item: Sequence[Any], index: int, fps: int) -> tuple[Any, Any, int, float, float]:
    if not 2 <= len(item) <= 5:
        raise ValueError(
            f"frame {index}: expected (rgb, depth[, frame_number[, timestamp_ms[, "
            f"color_timestamp_ms]]]), got {len(item)} items"
        )
    rgb, depth = item[0], item[1]
    number = int(item[2]) if len(item) > 2 and item[2] is not None else index
    stamp = float(item[3]) if len(item) > 3 and item[3] is not None else number * 1000.0 / fps
    c_stamp = float(item[4]) if len(item) > 4 and item[4] is not None else stamp
    return rgb, depth, number, stamp, c_stamp


class _Delivered:
    """Waits until the recorder has seen each pushed frame before the next one is pushed.

    The recorder stamps each message with the host time at which the frame passes through the
    sensor's callback chain, and playback replays messages in that order. Pushed without
    waiting, a whole run of depth frames was sometimes stamped before the matching colour
    frames (measured: ~1 playback in 40 then paired every colour frame with the last depth
    frame). Waiting for each frame keeps the file ordered like a camera's d0 c0 d1 c1 ...
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._last: dict[str, int] = {}

    def callback(self, stream: str) -> Callable[[Any], None]:
        def on_frame(frame: Any) -> None:
            with self._cond:
                self._last[stream] = int(frame.get_frame_number())
                self._cond.notify_all()

        return on_frame

    def wait(self, stream: str, number: int, timeout_s: float = 2.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._last.get(stream) == number, timeout_s):
                raise RuntimeError(
                    f"software device: {stream} frame {number} was not delivered within "
                    f"{timeout_s} s; the recording would be incomplete"
                )


def write_recording(
    path: str | Path,
    frames: Iterable[Sequence[Any]],
    intrinsics: Intrinsics,
    depth_units: float = 0.001,
    fps: int = 30,
    serial: str = DEFAULT_SERIAL,
    pace: bool = True,
    color_intrinsics: Intrinsics | None = None,
    depth_to_color: Extrinsics | None = None,
    with_color: bool = True,
    stereo_baseline_mm: float | None = None,
) -> int:
    """Record RGB-D frames into a RealSense ``.db3`` file; returns the number of frames pushed.

    Args:
        path: output file, must end in ``.db3``.
        frames: items ``(rgb, depth)``, ``(rgb, depth, frame_number)`` or
            ``(rgb, depth, frame_number, timestamp_ms[, color_timestamp_ms])`` (the colour
            frame's own timestamp, to record depth/colour skew): ``rgb`` H×W×3 uint8 RGB, ``depth``
            H×W uint16 in ``depth_units``. Frame numbers default to the item index and
            timestamps to ``frame_number / fps``. Pass ``None`` for ``rgb`` or ``depth`` to
            simulate a camera that lost that stream's frame (the pair then plays back with the
            previous frame of that stream); skip frame numbers to simulate dropped frames.
        intrinsics: of the depth stream, and of colour too unless ``color_intrinsics`` is
            given; width/height must match the frames.
        color_intrinsics: the colour stream's own intrinsics (another resolution, another
            lens), as a D435 delivers depth 1280×720 with colour 1920×1080.
        depth_to_color: extrinsics from the depth to the colour sensor; default identity
            (depth already registered to colour, as for a synthetic scene).
        with_color: False records a depth stream only (as some recordings of the RealSense
            tools are); ``rgb`` items are then ignored.
        depth_units: metres per depth unit, written as the depth sensor's read-only option.
        stereo_baseline_mm: written as the read-only ``stereo_baseline`` option: the playback's
            depth sensor is then a stereo sensor, as a D400 camera's, and librealsense's
            depth-to-disparity transform (before the spatial/temporal filters) converts its
            frames; None (default) leaves them in depth (edge.sources.rs_depth_filter).
        fps: nominal stream rate written into the stream profiles.
        serial: serial number the recorded device reports.
        pace: push frames at ``fps`` (real time, like a camera; recommended) instead of as fast
            as possible.

    Note: on playback the pipeline's syncer may drop the first pair (see the module docstring).
    Written frames are validated; the first wrong one raises ``ValueError`` (the file then
    holds the frames before it).
    """
    rs = require_pyrealsense2()
    path = Path(path)
    if path.suffix.lower() != ".db3":
        raise ValueError(f"{path}: pyrealsense2 >= 2.58 records .db3 files only")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    w, h = int(intrinsics.width), int(intrinsics.height)
    c_intrinsics = color_intrinsics or intrinsics
    cw, ch = int(c_intrinsics.width), int(c_intrinsics.height)
    rs_intr = _rs_intrinsics(rs, intrinsics)
    rs_c_intr = _rs_intrinsics(rs, c_intrinsics)

    device = rs.software_device()
    device.register_info(rs.camera_info.name, "trd-edge software camera")
    device.register_info(rs.camera_info.serial_number, serial)
    depth_sensor = device.add_sensor("Depth")
    color_sensor = device.add_sensor("Color")
    depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_units))
    if stereo_baseline_mm is not None:
        depth_sensor.add_read_only_option(rs.option.stereo_baseline, float(stereo_baseline_mm))
    depth_profile = depth_sensor.add_video_stream(
        _video_stream(rs, rs.stream.depth, 0, rs.format.z16, 2, fps, rs_intr), True
    ).as_video_stream_profile()
    color_profile = color_sensor.add_video_stream(
        _video_stream(rs, rs.stream.color, 1, rs.format.rgb8, 3, fps, rs_c_intr), True
    ).as_video_stream_profile()
    # Identity rotation (a default-constructed rs.extrinsics is all zeros, which makes
    # rs.align project every pixel onto one point).
    d2c = depth_to_color or Extrinsics.identity()
    extr = rs.extrinsics()
    extr.rotation = [float(v) for v in np.asarray(d2c.rotation).T.ravel()]  # column-major
    extr.translation = [float(v) for v in d2c.translation]
    depth_profile.register_extrinsics_to(color_profile, extr)
    device.create_matcher(rs.matchers.default)

    recorder = rs.recorder(str(path), device)
    sensors = [depth_sensor, color_sensor] if with_color else [depth_sensor]
    depth_sensor.open(depth_profile)
    if with_color:
        color_sensor.open(color_profile)
    delivered = _Delivered()
    depth_sensor.start(delivered.callback("depth"))
    if with_color:
        color_sensor.start(delivered.callback("color"))
    count = 0
    try:
        pacer = Pacer(fps if pace else None)
        for index, item in enumerate(frames):
            rgb, depth, number, stamp, c_stamp = _unpack(item, index, fps)
            pacer.wait(float("inf"))
            if depth is not None:
                depth = np.ascontiguousarray(depth)
                if depth.shape != (h, w) or depth.dtype != np.uint16:
                    raise ValueError(
                        f"frame {index}: depth must be {h}x{w} uint16 (Z16), got "
                        f"{depth.shape} {depth.dtype}"
                    )
                sw = rs.software_video_frame()
                sw.pixels, sw.stride, sw.bpp = depth, w * 2, 2
                sw.timestamp, sw.domain = stamp, rs.timestamp_domain.hardware_clock
                sw.frame_number, sw.profile = number, depth_profile
                sw.depth_units = float(depth_units)
                depth_sensor.on_video_frame(sw)
                delivered.wait("depth", number)
            if rgb is not None and with_color:
                rgb = np.ascontiguousarray(rgb)
                if rgb.shape != (ch, cw, 3) or rgb.dtype != np.uint8:
                    raise ValueError(
                        f"frame {index}: rgb must be {ch}x{cw}x3 uint8, got {rgb.shape} "
                        f"{rgb.dtype}"
                    )
                sw = rs.software_video_frame()
                sw.pixels, sw.stride, sw.bpp = rgb, cw * 3, 3
                sw.timestamp, sw.domain = c_stamp, rs.timestamp_domain.hardware_clock
                sw.frame_number, sw.profile = number, color_profile
                color_sensor.on_video_frame(sw)
                delivered.wait("color", number)
            count += 1
    finally:
        for sensor in sensors:
            sensor.stop()
            sensor.close()
        # The recorder finalises the file when it is destroyed.
        del recorder
    return count
