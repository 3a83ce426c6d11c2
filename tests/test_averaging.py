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


class _Tap(FrameSource):
    """Passes another source's frames through and keeps them."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__()
        self.inner, self.name, self.frames = inner, inner.name, []

    def _open(self) -> None:
        self.inner.open()

    def _close(self) -> None:
        self.inner.close()

    def _grab(self, timeout_s: float) -> Frame | None:
        frame = self.inner.read(timeout_s)
        if frame is not None:
            self.frames.append(frame)
        return frame


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
    src = open_source(f"file:{path}?average_frames=8&average_mode=continuous")
    assert isinstance(src, AveragingSource)
    src.inner = tap = _Tap(src.inner)
    with src:
        out = list(src)
    # a's 17 frames -> 2 means, b's 9 -> 1 mean; a playback may lose its first framesets
    # (edge/sources/realsense.py), so count a's frames the camera delivered
    read_a = sum(f.frame_number < 17 for f in tap.frames)
    numbers = [f.meta["frame_numbers"] for f in out]
    assert len(out) == read_a // 8 + 1 and all(n >= 17 for n in numbers[-1])
    assert all(n < 17 for ns in numbers[:-1] for n in ns)
    single = np.median([_rms(f.xyz) for f in singles])
    averaged = np.median([_rms(f.xyz) for f in out])
    assert single / averaged == pytest.approx(math.sqrt(8), rel=0.25)
    assert single == pytest.approx(SceneGenerator("puck", 64, sensor="d435", distance=0.55)
                                   .sensor.expected_rms(0.55), rel=0.25)


# -- one mean per stop (issue 17: one verdict per part at a stop-and-go station) -------------

STILL = 20  # frames each part stands still
LEAD = 10  # frames of motion before the first stop
N = 8


def _moving(scene: SyntheticScene, shifts: tuple[int, ...]) -> list[SyntheticScene]:
    """The part sliding along x (a conveyor moving it by ``shift`` px per frame)."""
    from dataclasses import replace

    return [replace(scene, rgb=np.roll(scene.rgb, s, axis=1), xyz=np.roll(scene.xyz, s, axis=1))
            for s in shifts]


def _stop_and_go(path: Path) -> tuple[range, range]:
    """A software-device recording: part A arriving (LEAD moving frames, so that a playback
    losing its first framesets loses motion, not A's stop), A still for STILL frames, six
    frames of motion (A leaves, B arrives), part B still for STILL frames. Returns the frame
    numbers of A's and B's stops."""
    from edge.sources.rs_software import write_recording, xyz_to_depth

    a, b = _still(STILL, seed=3), _still(STILL, seed=4)
    arriving = _moving(a[0], tuple(range(-4 * LEAD, 0, 4)))
    scenes = arriving + a + _moving(a[-1], (4, 8, 12)) + _moving(b[0], (-12, -8, -4)) + b
    fx, fy, cx, cy = a[0].intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=64, height=64, depth_scale=0.001)
    items = [(s.rgb, xyz_to_depth(s.xyz, 0.001), i) for i, s in enumerate(scenes)]
    write_recording(path, items, intr, depth_units=0.001, fps=30)
    return range(LEAD, LEAD + STILL), range(LEAD + STILL + 6, LEAD + 2 * STILL + 6)


@pytest.fixture(scope="module")
def stop_and_go(tmp_path_factory) -> tuple[Path, range, range]:
    from rs_fixtures import rs_or_skip

    rs_or_skip()
    path = tmp_path_factory.mktemp("stop_and_go") / "stop-and-go.db3"
    return (path, *_stop_and_go(path))


def test_per_stop_gives_one_mean_per_stop_of_a_recording(stop_and_go) -> None:
    """Per-stop (the default): exactly one mean per part, each the mean of N consecutive still
    frames of that part alone; the rest of each stop is held back (counted)."""
    path, stop_a, stop_b = stop_and_go
    src = open_source(f"file:{path}?average_frames={N}")
    assert isinstance(src, AveragingSource) and src.mode == "per-stop"
    src.inner = tap = _Tap(src.inner)  # keeps the camera's frames to check the means against
    with src:
        out = list(src)
    singles = {f.frame_number: f for f in tap.frames}
    assert len(out) == 2
    for mean, stop in zip(out, (stop_a, stop_b), strict=True):
        numbers = mean.meta["frame_numbers"]
        assert len(numbers) == N and all(n in stop for n in numbers)
        assert numbers == list(range(numbers[0], numbers[0] + N))  # consecutive
        expected = average_frames([singles[n] for n in numbers])
        assert np.allclose(mean.xyz, expected.xyz) and np.array_equal(mean.rgb, expected.rgb)
    # the playback may lose its first framesets: count what the camera delivered
    read_a, read_b = (sum(n in stop for n in singles) for stop in (stop_a, stop_b))
    stats = src.averaging
    # the rest of each stop is held back; the six moving frames are discarded
    assert stats.held == (read_a - N) + (read_b - N)
    assert stats.short_stops == 0 and stats.discarded == 6 + sum(n < LEAD for n in singles)


def test_continuous_gives_k_over_n_means_per_stop(stop_and_go) -> None:
    """Continuous: a part standing k frames gives k // N means (the behaviour before per-stop)."""
    path, stop_a, stop_b = stop_and_go
    src = open_source(f"file:{path}?average_frames={N}&average_mode=continuous")
    src.inner = tap = _Tap(src.inner)
    with src:
        out = list(src)
    per_stop = [sum(all(n in stop for n in f.meta["frame_numbers"]) for f in out)
                for stop in (stop_a, stop_b)]
    # k // N per stop of k frames (the playback may lose its first framesets)
    read = [sum(f.frame_number in stop for f in tap.frames) for stop in (stop_a, stop_b)]
    assert read == [STILL, STILL] and per_stop == [STILL // N, STILL // N]
    assert len(out) == sum(per_stop)
    assert src.averaging.held == 0 and src.averaging.short_stops == 0  # tails are not stops


def test_per_stop_waits_for_motion_not_for_a_new_window(tmp_path: Path) -> None:
    """Frames of a part already averaged are held, however many; a part that stands still
    again after a move gets its next mean; a stop shorter than N frames gets none (counted)."""
    a, b = _still(13, seed=1), _still(11, seed=2)
    frames = (_frames(a, 0, "a") + _frames(b[:3], 13, "short")
              + _frames(_moving(b[3], (6, 12)), 16, "moving") + _frames(b[5:], 18, "b"))
    with AveragingSource(_ListSource(frames), 4) as src:
        out = list(src)
    assert [f.meta["part"] for f in out] == ["a", "b"]
    assert out[1].meta["frame_numbers"] == [18, 19, 20, 21]
    assert src.averaging.held == 9 + 2  # a's frames 4..12, b's 22..23
    assert src.averaging.short_stops == 1  # the 3 frames of b before it moved on


def test_a_waiting_source_gives_control_back_and_resumes() -> None:
    """While frames arrive but none is due, read raises SourceIdle after its timeout (a
    FrameTimeout: the caller can check its stop flag) and keeps the window it collected."""
    from edge.sources.base import FrameTimeout, SourceIdle

    class Slow(_ListSource):
        def _grab(self, timeout_s: float) -> Frame | None:
            import time

            time.sleep(0.02)
            return super()._grab(timeout_s)

    frames = _frames(_still(12, seed=1))
    with AveragingSource(Slow(frames), 8) as src:
        with pytest.raises(SourceIdle) as idle:
            src.read(timeout_s=0.05)  # a few frames in, 8 needed
        assert isinstance(idle.value, FrameTimeout) and "still frames" in str(idle.value)
        out = []
        while (frame := _read_through_idle(src)) is not None:
            out.append(frame)
    assert [f.meta["frame_numbers"] for f in out] == [list(range(8))]  # nothing was lost
    assert src.averaging.held == 4


def _read_through_idle(src: FrameSource) -> Frame | None:
    from edge.sources.base import SourceIdle

    while True:
        try:
            return src.read(timeout_s=0.05)
        except SourceIdle:
            continue
