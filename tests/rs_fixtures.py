"""Helpers that make RealSense `.db3` recordings from synthetic scenes (no camera needed).

Import explicitly (``from tests.rs_fixtures import ...`` or ``from rs_fixtures import ...``);
callers must skip when pyrealsense2 cannot be imported (see `rs_or_skip`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.datasets.synthetic import SceneGenerator, SyntheticScene
from edge.frames import Intrinsics

DEPTH_UNITS = 0.001


def rs_or_skip():
    """pyrealsense2, or skip the calling test with the reason it cannot be imported."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"pyrealsense2 cannot be imported ({exc})")
    return rs


@dataclass
class Recording:
    """A recording written by `make_recording` and the truth it was made from."""

    path: Path
    intrinsics: Intrinsics
    scenes: dict[int, SyntheticScene] = field(default_factory=dict)  # by frame number
    written: list[int] = field(default_factory=list)  # frame numbers with both streams
    depth_missing: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)  # frame numbers never written


def make_recording(
    path: Path,
    n: int = 6,
    size: int = 64,
    seed: int = 0,
    category: str = "puck",
    defects: tuple[str, ...] = ("good",),
    depth_missing: tuple[int, ...] = (),
    gaps: tuple[int, ...] = (),
    fps: int = 30,
) -> Recording:
    """Write ``n`` frame numbers of synthetic scenes to ``path`` (.db3) via the software device.

    ``depth_missing``: frame numbers pushed with colour only (the camera lost the depth frame);
    ``gaps``: frame numbers not pushed at all (dropped). ``defects`` cycles over the frames.
    """
    rs_or_skip()
    from edge.sources.rs_software import write_recording, xyz_to_depth

    gen = SceneGenerator(category, image_size=size, seed=seed)
    fx, fy, cx, cy = gen.intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=size, height=size, depth_scale=DEPTH_UNITS)
    rec = Recording(path=path, intrinsics=intr)
    items = []
    for number in range(n):
        scene = gen.sample(defects[number % len(defects)])
        rec.scenes[number] = scene
        if number in gaps:
            rec.gaps.append(number)
            continue
        depth = None if number in depth_missing else xyz_to_depth(scene.xyz, DEPTH_UNITS)
        if depth is None:
            rec.depth_missing.append(number)
        else:
            rec.written.append(number)
        items.append((scene.rgb, depth, number, number * 1000.0 / fps))
    write_recording(path, items, intr, depth_units=DEPTH_UNITS, fps=fps)
    return rec
