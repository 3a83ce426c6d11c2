"""Finer depth units at the station (`camera.realsense.depth_units`, issue 17).

The option is checked against the Z16 range (65535 steps must reach `max_depth_m`), set on the
camera's depth sensor before streaming and read back. The sensor side is tested on pyrealsense2
software sensors (a real sensor object with the real option API); a live D400's own range
(1e-6–0.01 m) is what `set_depth_units` then reads — see deploy/TENSORRT_CHECK.md for the
hardware steps this cannot replace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rs_fixtures import rs_or_skip

from edge.frames import Intrinsics
from edge.sources.base import SourceError
from edge.sources.options import RealSenseOptions, apply_overrides, check_depth_units


def test_units_must_cover_the_working_range() -> None:
    assert RealSenseOptions(depth_units=0.0001).depth_units == 0.0001  # 6.55 m of range
    with pytest.raises(ValueError, match=r"reaches only 0\.655 m.*max_depth_m 2 m"):
        RealSenseOptions(depth_units=0.00001)
    # a close station may use the finer unit when it says how far it measures
    assert RealSenseOptions(depth_units=0.00001, max_depth_m=0.6).depth_units == 0.00001
    with pytest.raises(ValueError, match="at least"):
        check_depth_units(0.00001, 0.7)
    # the camera spec's query string reaches it like any other option
    opts = apply_overrides(RealSenseOptions(), {"depth_units": "0.0001", "max_depth_m": "1"})
    assert opts.depth_units == pytest.approx(0.0001) and opts.max_depth_m == 1.0
    with pytest.raises(ValueError, match="reaches only"):
        apply_overrides(RealSenseOptions(), {"depth_units": "0.00001"})


def _sensor(rs, option_range=None, read_only=False):
    dev = rs.software_device()
    sensor = dev.add_sensor("Depth")
    if option_range is not None:
        rng = rs.option_range(*option_range)
        if read_only:
            sensor.add_read_only_option(rs.option.depth_units, option_range[3])
        else:
            sensor.add_option(rs.option.depth_units, rng, True)
    return dev, sensor


def test_set_depth_units_on_a_sensor_that_allows_it() -> None:
    rs = rs_or_skip()
    from edge.sources.realsense import set_depth_units

    # (a software sensor validates values by float steps: this range accepts 0.0001 and
    # starts elsewhere, so the test sees the unit change)
    _dev, sensor = _sensor(rs, (0.0001, 0.001, 0.0009, 0.001))
    before = sensor.get_option(rs.option.depth_units)
    assert before > 0.0005
    got = set_depth_units(rs, sensor, 0.0001, "realsense")
    assert got == pytest.approx(0.0001, rel=1e-4)
    assert sensor.get_option(rs.option.depth_units) == pytest.approx(0.0001, rel=1e-4)
    with pytest.raises(SourceError, match="outside the camera's range 0.0001–0.001"):
        set_depth_units(rs, sensor, 0.00005, "realsense")


def test_set_depth_units_refuses_cameras_without_it() -> None:
    rs = rs_or_skip()
    from edge.sources.realsense import set_depth_units

    _dev, bare = _sensor(rs)
    with pytest.raises(SourceError, match="no depth_units option; remove"):
        set_depth_units(rs, bare, 0.0001, "realsense")
    _dev2, fixed = _sensor(rs, (0.001, 0.001, 0.0, 0.001), read_only=True)
    with pytest.raises(SourceError, match="read-only"):
        set_depth_units(rs, fixed, 0.0001, "realsense")


def test_a_recording_keeps_its_unit(tmp_path: Path) -> None:
    rs_or_skip()
    from edge.sources.realsense import RealSenseSource
    from edge.sources.rs_software import write_recording

    intr = Intrinsics(fx=60.0, fy=60.0, cx=16.0, cy=16.0, width=32, height=32,
                      depth_scale=0.001)
    rgb = np.zeros((32, 32, 3), np.uint8)
    depth = np.full((32, 32), 500, np.uint16)
    write_recording(tmp_path / "r.db3", [(rgb, depth, 0)], intr)
    with pytest.raises(SourceError, match="recording keeps the unit"):
        RealSenseSource(tmp_path / "r.db3", RealSenseOptions(depth_units=0.0001))
