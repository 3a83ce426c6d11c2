"""Depth images through librealsense's own post-processing filters, in memory.

`DepthFilterChain` builds an ``rs.software_device`` with one depth sensor (Z16, the given
intrinsics, read-only ``depth_units`` and ``stereo_baseline`` options), pushes each depth image
as a frame of that sensor and runs it through the blocks `edge.sources.realsense.build_filters`
makes, the same function and order the station uses (depth → disparity → spatial → temporal →
depth → hole filling). No filter is re-implemented here: the numbers are librealsense's.

Why the stereo baseline: librealsense's ``disparity_transform`` converts only frames whose
sensor is a stereo depth sensor (``disparity_info::update_info_from_frame``); a software sensor
counts as one when it has both ``depth_units`` and ``stereo_baseline`` options. Without the
baseline the transform passes the frame on unchanged and the spatial/temporal filters work on
Z16 depth, where ``delta`` means depth units instead of 1/32 disparity px: a real D400 camera
filters in disparity (checked with pyrealsense2 2.59: with the option the transform yields a
``disparity32`` frame of value ``32·f·B/z``, without it the frame stays Z16).

The synthetic image is not the camera's pixel grid (`edge.datasets.sensors.StereoSensor.scale`
grid px per camera px), so the baseline given to the software sensor is chosen to make its
disparities those of the real camera in camera pixels (``B·f_camera/f_grid``): the filters'
``delta`` thresholds see the camera's disparity steps. Their neighbourhoods (the spatial
filter's recursion, hole filling's neighbours) act on grid pixels, which are roughly camera
pixels at the sizes used (at 128 px and 0.55 m a grid pixel is 0.76 D435 camera pixels).

Decimation changes the resolution (the station registers the smaller depth image back onto its
grid); it is refused here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.frames import Intrinsics
from edge.sources.options import FilterOptions
from edge.sources.realsense import build_filters, require_pyrealsense2

__all__ = ["DepthFilterChain"]

_WAIT_MS = 2000


class DepthFilterChain:
    """Z16 depth images through librealsense's filters (see the module docstring).

    Use as a context manager; call `new_part` before the frames of each part (fresh filter
    blocks: the temporal filter's history starts empty, as after a station's restart) and
    `__call__` per frame, in the order the camera would deliver them.
    """

    def __init__(
        self, filters: FilterOptions, intrinsics: Intrinsics, depth_units: float,
        stereo_baseline_mm: float, fps: int = 30,
    ) -> None:
        if filters.decimation > 1:
            raise ValueError(
                f"decimation {filters.decimation} changes the depth resolution; the sensor "
                "model's data cannot repeat the station's registration of the smaller image "
                "(leave decimation out of --filters)"
            )
        if depth_units <= 0 or stereo_baseline_mm <= 0:
            raise ValueError("depth_units and stereo_baseline_mm must be positive")
        self.filters = filters
        self.depth_units = float(depth_units)
        self._rs = rs = require_pyrealsense2()
        self._size = (int(intrinsics.height), int(intrinsics.width))
        self._fps = int(fps)
        intr = rs.intrinsics()
        intr.width, intr.height = int(intrinsics.width), int(intrinsics.height)
        intr.fx, intr.fy = float(intrinsics.fx), float(intrinsics.fy)
        intr.ppx, intr.ppy = float(intrinsics.cx), float(intrinsics.cy)
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        self._device = rs.software_device()
        sensor = self._device.add_sensor("Depth")
        sensor.add_read_only_option(rs.option.depth_units, self.depth_units)
        sensor.add_read_only_option(rs.option.stereo_baseline, float(stereo_baseline_mm))
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.depth, 0, 0
        stream.width, stream.height, stream.fps = intr.width, intr.height, self._fps
        stream.bpp, stream.fmt, stream.intrinsics = 2, rs.format.z16, intr
        self._profile = sensor.add_video_stream(stream, True).as_video_stream_profile()
        self._sensor = sensor
        self._queue = rs.frame_queue(4, keep_frames=True)
        sensor.open(self._profile)
        sensor.start(self._queue)
        self._number = 0
        self._blocks: list[Any] = build_filters(rs, filters)

    def new_part(self) -> None:
        """Start a new part: new filter blocks, so no temporal history carries over."""
        self._blocks = build_filters(self._rs, self.filters)

    def __call__(self, z16: np.ndarray) -> np.ndarray:
        """The filtered depth (uint16 H×W, same units) of one Z16 frame."""
        rs = self._rs
        if z16.shape != self._size or z16.dtype != np.uint16:
            raise ValueError(f"depth must be {self._size} uint16, got {z16.shape} {z16.dtype}")
        self._number += 1
        pixels = np.ascontiguousarray(z16)
        frame = rs.software_video_frame()
        frame.pixels, frame.stride, frame.bpp = pixels, self._size[1] * 2, 2
        frame.timestamp = self._number * 1000.0 / self._fps
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number, frame.profile = self._number, self._profile
        frame.depth_units = self.depth_units
        self._sensor.on_video_frame(frame)
        out = self._queue.wait_for_frame(_WAIT_MS)
        for block in self._blocks:
            out = block.process(out)
        if out.get_profile().format() != rs.format.z16:
            raise RuntimeError(f"the filter chain ended in {out.get_profile().format()}, not Z16")
        return np.array(np.asanyarray(out.get_data()), dtype=np.uint16, copy=True)

    def close(self) -> None:
        """Stop and close the software sensor."""
        if self._sensor is not None:
            self._sensor.stop()
            self._sensor.close()
            self._sensor = None

    def __enter__(self) -> DepthFilterChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
