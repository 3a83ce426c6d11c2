"""Averaging at the station (issue 17): one verdict per part per stop through `trd-edge run`,
and a camera that waits by design (a part standing after its verdict) is neither a stall of the
run loop nor a failure of health.

Real parts: pyrealsense2 software-device recordings, the toy ONNX bundle of
`conftest_export.write_toy_bundle` in a real onnxruntime session, a real mosquitto.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from broker import Subscriber, start_broker, wait_until  # noqa: E402
from conftest_export import write_toy_bundle  # noqa: E402
from test_averaging import N, _frames, _moving, _still, _stop_and_go  # noqa: E402

from edge.frames import Frame  # noqa: E402
from edge.sources.averaging import AveragingSource  # noqa: E402
from edge.sources.base import FrameSource  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_toy_bundle(tmp_path_factory.mktemp("avg") / "bundle", size=SIZE, fp16=False)


def _run(bundle: Path, camera: str, tmp_path: Path, port: int | None) -> int:
    from edge.cli import main

    mqtt = f"mqtt://127.0.0.1:{port}" if port else "none"
    return main(["run", "--bundle", str(bundle), "--camera", camera, "--mqtt", mqtt,
                 "--station", "st1", "--quiet", "--outbox", str(tmp_path / "outbox.sqlite3")])


@pytest.mark.realsense
@pytest.mark.mqtt
@pytest.mark.parametrize("mode", ["per-stop", "continuous"])
def test_run_gives_one_verdict_per_stop(tmp_path: Path, bundle: Path, mode: str, capsys) -> None:
    """Two parts, each still for 20 frames, motion between: `trd-edge run` with
    average_frames=8 publishes exactly 2 verdicts per-stop (4 = 20 // 8 per stop continuous),
    each for a frame of its own stop."""
    from rs_fixtures import rs_or_skip

    rs_or_skip()
    path = tmp_path / "stop-and-go.db3"
    stop_a, stop_b = _stop_and_go(path)
    broker = start_broker(tmp_path)
    sub = Subscriber(broker.port, "trd/st1/verdict", client_id="mes")
    try:
        rc = _run(bundle, f"file:{path}?average_frames={N}&average_mode={mode}", tmp_path,
                  broker.port)
        assert rc == 0
        out = capsys.readouterr().out
        made = int(out.split(" verdicts (")[0].split()[-1])
        per_stop = 1 if mode == "per-stop" else len(stop_a) // N
        assert made == 2 * per_stop
        assert f"averaging ({mode}): {{'averaged': {made}," in out  # the run's summary
        wait_until(lambda: len(set(sub.verdict_sequences())) >= made, 20, "all verdicts")
        time.sleep(0.3)
        frames = [m.json()["frame_number"] for m in sub.on("verdict")]
        assert len(frames) == made
        # a verdict's frame is its window's first: per-stop, each stop's first still frame
        assert sum(n in stop_a for n in frames) == per_stop
        assert sum(n in stop_b for n in frames) == per_stop
        if mode == "per-stop":
            assert frames == [stop_a[0], stop_b[0]]
    finally:
        sub.close()
        broker.cleanup()


@pytest.mark.realsense
def test_recording_that_never_stands_still_says_so(tmp_path: Path, bundle: Path, capsys) -> None:
    """A recording in which the part never stands still for N frames: exit 5 (no verdict),
    naming averaging as the reason and what to change, not a pairing problem."""
    from rs_fixtures import rs_or_skip

    rs_or_skip()
    from edge.frames import Intrinsics
    from edge.sources.rs_software import write_recording, xyz_to_depth

    a = _still(1, seed=3)[0]
    scenes = _moving(a, tuple(range(-24, 24, 4)))  # 12 frames, 4 px apart
    fx, fy, cx, cy = a.intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=SIZE, height=SIZE, depth_scale=0.001)
    path = tmp_path / "moving.db3"
    write_recording(path, [(s.rgb, xyz_to_depth(s.xyz, 0.001), i) for i, s in enumerate(scenes)],
                    intr, depth_units=0.001, fps=30)
    rc = _run(bundle, f"file:{path}?average_frames=4", tmp_path, None)
    err = capsys.readouterr().err
    assert rc == 5
    assert "never 4 consecutive still" in err and "average_frames" in err


class _StillCamera(FrameSource):
    """A live camera looking at one part that does not move (fresh sensor noise per frame,
    about 100 frames/s); counts what it delivered."""

    name = "still camera"

    def __init__(self) -> None:
        super().__init__()
        self._frames = _frames(_still(6, seed=1))
        self.delivered = 0

    def _open(self) -> None:
        pass

    def _grab(self, timeout_s: float) -> Frame | None:
        time.sleep(0.01)
        f = self._frames[self.delivered % len(self._frames)]
        self.delivered += 1
        return Frame(rgb=f.rgb, xyz=f.xyz, frame_number=self.delivered, intrinsics=f.intrinsics)


def test_run_loop_and_health_while_the_part_stands_after_its_verdict(bundle: Path) -> None:
    """Per-stop averaging on a live camera: one verdict, then the source waits (SourceIdle).
    The run loop keeps reading, stops on request although no frame is due, and health stays
    ok long after the verdict (the camera is alive); a loop that hung would fail it."""
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.comms.health import HealthReporter, HealthSnapshot
    from edge.comms.verdict import ModelRef
    from edge.inspector import Inspector
    from edge.runloop import RunLoop, verdict_emitter

    b = load_bundle(bundle)
    backend = create_backend("onnxruntime", b)
    camera = _StillCamera()
    source = AveragingSource(camera, 4)
    ref = ModelRef(id=b.model_id, sha256="0" * 64, variant="toy")
    seq = iter(range(100))
    loop = RunLoop(source, Inspector(b, backend), verdict_emitter("st1", ref, lambda: next(seq),
                                                                  []), live=True)
    done: list = []
    runner = threading.Thread(target=lambda: done.append(loop.run()), daemon=True)
    with source:
        runner.start()
        wait_until(lambda: loop.stats.processed == 1, 30, "the part's verdict")
        verdict_at = time.time()
        time.sleep(2.5)  # the part stands on: > 2 read timeouts of the capture thread
        loop.stop()
        runner.join(10)
    backend.close()
    assert not runner.is_alive(), "the run loop did not stop while the source was waiting"
    st = done[0]
    assert st.processed == 1 and st.captured == 1  # one verdict per stop
    assert camera.delivered > 100 and source.averaging.held > 90  # it kept looking
    assert st.idle_time is not None and st.idle_time > verdict_at + 1.0
    # health one second later, with a 1.5 s staleness limit: the verdict is 3.5 s old
    health = HealthReporter(None, None, stale_after_s=1.5)
    now = st.idle_time + 1.0
    snap = dict(state="running", frames=1, last_frame_time=st.last_frame_time)
    health.update(HealthSnapshot(**snap, idle_time=st.idle_time))
    assert health.healthy_reasons(now) == []
    health.update(HealthSnapshot(**snap))  # without the source's word: "no frame", failed
    assert any("no frame" in r for r in health.healthy_reasons(now))
    health.close()


def test_a_stuck_stage_is_not_hidden_by_a_waiting_source(bundle: Path) -> None:
    """The loop notes the source's idle time only while no frame is in flight: with inference
    stuck on the stop's mean (a hung accelerator, imitated by blocking `infer`), the waiting
    source must not keep health ok; once the verdict is out, it may."""
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.comms.verdict import ModelRef
    from edge.inspector import Inspector
    from edge.runloop import RunLoop, verdict_emitter

    b = load_bundle(bundle)
    backend = create_backend("onnxruntime", b)
    inspector = Inspector(b, backend)
    release = threading.Event()
    real_infer = inspector.infer

    def stuck_infer(sample):
        release.wait(30)
        return real_infer(sample)

    inspector.infer = stuck_infer
    source = AveragingSource(_StillCamera(), 4)
    ref = ModelRef(id=b.model_id, sha256="0" * 64, variant="toy")
    seq = iter(range(100))
    loop = RunLoop(source, inspector, verdict_emitter("st1", ref, lambda: next(seq), []),
                   live=True)
    runner = threading.Thread(target=loop.run, daemon=True)
    with source:
        runner.start()
        wait_until(lambda: loop.stats.captured == 1, 30, "the stop's mean")
        time.sleep(2.5)  # the source waits for motion (SourceIdle each second)
        assert source.averaging.held > 50 and loop.stats.idle_time is None
        release.set()
        wait_until(lambda: loop.stats.processed == 1, 30, "the verdict")
        wait_until(lambda: loop.stats.idle_time is not None, 5, "the idle time")
        loop.stop()
        runner.join(10)
    backend.close()
    assert not runner.is_alive()


@pytest.mark.realsense
def test_doctor_checks_the_camera_under_an_averaging_wrapper(tmp_path: Path) -> None:
    """`trd-edge doctor` reads the camera's own frames: a still part averaged per stop gives
    one frame per stop, which must not make the camera check fail."""
    from rs_fixtures import rs_or_skip

    rs_or_skip()
    from edge.commands.doctor import check_camera
    from edge.frames import Intrinsics
    from edge.sources.rs_software import write_recording, xyz_to_depth

    scenes = _still(12, seed=2)
    fx, fy, cx, cy = scenes[0].intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=SIZE, height=SIZE, depth_scale=0.001)
    path = tmp_path / "still.db3"
    write_recording(path, [(s.rgb, xyz_to_depth(s.xyz, 0.001), i) for i, s in enumerate(scenes)],
                    intr, depth_units=0.001, fps=30)
    checks = [c for c in check_camera(f"file:{path}?average_frames=8") if c.name == "camera"]
    assert checks and all(c.status == "ok" for c in checks), checks
