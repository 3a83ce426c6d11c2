"""Temporal averaging of still parts (edge/sources/averaging.py), camera option average_frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calibration.geometry import measure_xyz
from edge.datasets.synthetic import SceneGenerator, SyntheticScene
from edge.frames import Frame, Intrinsics
from edge.sources import open_source
from edge.sources.averaging import AveragingSource, average_frames, motion_between
from edge.sources.base import FrameSource


class _ListSource(FrameSource):
    """A finite source over prepared frames."""

    name = "list"

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self._frames = list(frames)
        self.grid = None

    def _open(self) -> None:
        pass

    def _grab(self, timeout_s: float) -> Frame | None:
        return self._frames.pop(0) if self._frames else None

    def set_working_grid(self, size, roi=None) -> bool:
        self.grid = (size, roi)
        return True


def _frames(scenes: list[SyntheticScene], start: int = 0, tag: str = "") -> list[Frame]:
    intr = Intrinsics(*scenes[0].intrinsics, width=64, height=64, depth_scale=0.001)
    return [Frame(rgb=s.rgb, xyz=s.xyz, frame_number=start + i, intrinsics=intr,
                  meta={"part": tag}) for i, s in enumerate(scenes)]


def _still(n: int, seed: int = 1, defect: str = "good") -> list[SyntheticScene]:
    return SceneGenerator("puck", 64, seed=seed, sensor="d435", distance=0.55).sample_still(
        defect, n)


def _rms(xyz: np.ndarray) -> float:
    rms = measure_xyz(xyz).depth_noise_rms_m
    assert rms is not None
    return rms


def test_noise_falls_by_sqrt_n() -> None:
    scenes = _still(16)
    with AveragingSource(_ListSource(_frames(scenes)), 8, mode="continuous") as src:
        out = list(src)
    assert len(out) == 2 and src.averaging.averaged == 2 and src.averaging.discarded == 0
    assert out[0].meta["frame_numbers"] == list(range(8)) and out[0].meta["averaged_frames"] == 8
    single = np.median([_rms(s.xyz) for s in scenes])
    averaged = np.median([_rms(f.xyz) for f in out])
    assert single / averaged == pytest.approx(math.sqrt(8), rel=0.2)


def test_frames_are_never_averaged_across_motion() -> None:
    a, b = _still(5, seed=1), _still(8, seed=2)
    frames = _frames(a, 0, "a") + _frames(b, 5, "b")
    with AveragingSource(_ListSource(frames), 4, mode="continuous") as src:
        out = list(src)
    assert [f.meta["frame_numbers"] for f in out] == [[0, 1, 2, 3], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert [f.meta["part"] for f in out] == ["a", "b", "b"]
    assert src.averaging.motion_resets == 1 and src.averaging.discarded == 1  # frame 4
    # the second output is b's own mean, nothing of a in it
    expected = average_frames(_frames(b[:4], 5))
    assert np.array_equal(out[1].xyz, expected.xyz) and np.array_equal(out[1].rgb, expected.rgb)


def test_motion_is_told_from_noise_and_exposure() -> None:
    s0, s1 = _frames(_still(2))
    assert motion_between(s0, s1) is None  # fresh noise only
    brighter = Frame(rgb=np.clip(s1.rgb * 1.15, 0, 255).astype(np.uint8), xyz=s1.xyz,
                     frame_number=2, intrinsics=s1.intrinsics)
    assert motion_between(s0, brighter) is None  # auto-exposure is not motion
    for shift in (2, 5):
        moved = Frame(rgb=np.roll(s1.rgb, shift, axis=1), xyz=np.roll(s1.xyz, shift, axis=1),
                      frame_number=3, intrinsics=s1.intrinsics)
        assert motion_between(s0, moved) is not None
    # a part of uniform colour that rises: only depth shows it
    flat_rgb = np.full_like(s1.rgb, 128)
    lifted = s1.xyz.copy()
    lifted[16:48, 16:48, 2] -= 0.01
    why = motion_between(Frame(rgb=flat_rgb, xyz=s0.xyz, frame_number=0),
                         Frame(rgb=flat_rgb, xyz=lifted, frame_number=1))
    assert why is not None and why.startswith("depth")


def test_valid_aware_mean() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    frames = []
    for z in (0.50, 0.52, 0.0, 0.0):
        xyz = np.zeros((4, 4, 3), np.float32)
        xyz[..., 2] = z
        xyz[0, 0, 2] = 0.0  # no return in any frame
        frames.append(Frame(rgb=rgb, xyz=xyz, frame_number=len(frames)))
    mean = average_frames(frames).xyz[..., 2]
    assert mean[1, 1] == pytest.approx(0.51) and mean[0, 0] == 0.0


def test_wrapper_forwards_the_camera() -> None:
    inner = _ListSource(_frames(_still(2)))
    src = AveragingSource(inner, 2)
    assert src.set_working_grid(32, None) and inner.grid == (32, None)
    assert src.grid == (32, None)  # attributes of the camera read through
    with pytest.raises(ValueError):
        AveragingSource(inner, 0)


def test_recording_averaged_through_the_camera_option(tmp_path: Path) -> None:
    """A software-device recording of a still D435-like part, read with average_frames=8:
    noise ÷ √8; a second part after it is averaged on its own."""
    from rs_fixtures import rs_or_skip

    rs_or_skip()
    from edge.sources.rs_software import write_recording, xyz_to_depth

    a, b = _still(17, seed=3), _still(9, seed=4)
    fx, fy, cx, cy = a[0].intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=64, height=64, depth_scale=0.001)
    items = [(s.rgb, xyz_to_depth(s.xyz, 0.001), i) for i, s in enumerate(a + b)]
    path = tmp_path / "still.db3"
    write_recording(path, items, intr, depth_units=0.001, fps=30)

    with open_source(f"file:{path}") as plain:
        singles = list(plain)
    with open_source(f"file:{path}?average_frames=8&average_mode=continuous") as src:
        assert isinstance(src, AveragingSource)
        out = list(src)
    # 16-17 frames of a (the syncer may drop the first) -> 2 means, b's 9 -> 1 mean
    assert len(out) == 3 and src.averaging.motion_resets == 1
    numbers = [f.meta["frame_numbers"] for f in out]
    assert all(n < 17 for n in numbers[0] + numbers[1]) and all(n >= 17 for n in numbers[2])
    single = np.median([_rms(f.xyz) for f in singles if f.frame_number < 17])
    averaged = np.median([_rms(f.xyz) for f in out[:2]])
    assert single / averaged == pytest.approx(math.sqrt(8), rel=0.25)
    assert single == pytest.approx(SceneGenerator("puck", 64, sensor="d435", distance=0.55)
                                   .sensor.expected_rms(0.55), rel=0.25)
