"""The station's run loop: capture → preprocess → infer + postprocess → publish.

Three threads joined by small bounded queues. numpy/OpenCV and the inference runtimes release
the GIL, so preprocessing frame n+1 overlaps inference on frame n.

Back-pressure (explicit and counted):
- live sources (RealSense, synthetic): when the preprocess queue is full, the OLDEST waiting
  frame is dropped and counted (`dropped`); capture never waits for the model, so the
  verdict always refers to a recent part;
- finite sources (recordings, folders): capture waits instead, so every recorded frame gets a
  verdict.
Shutdown (SIGINT/SIGTERM or `--max-frames`): capture stops, frames already captured are
processed and their verdicts handed to the sinks (the MQTT sink writes them to the durable
outbox), then the caller closes the publisher.
A source that waits by design (`SourceIdle`: an averaging camera after a part's verdict, or
while parts move) is not a fault: no warning, and while no frame is in flight the loop notes
the time (`LoopStats.idle_time`) so health sees a live station without verdicts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.comms.sinks import make_verdict
from edge.comms.verdict import ModelRef, Verdict
from edge.frames import Frame
from edge.inspector import Inspection, Inspector
from edge.sources.base import FrameSource, FrameTimeout, SourceError, SourceIdle

log = logging.getLogger(__name__)

_END = object()  # sentinel: the stage before has finished


def latency_summary(ms: list[float] | np.ndarray) -> dict[str, float]:
    """``{"p50_ms", "p90_ms", "p99_ms", "max_ms"}`` of a list of milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"p50_ms": math.nan, "p90_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(a.max()),
    }


@dataclass
class LoopStats:
    """Counters of one run (also fed to health and metrics)."""

    captured: int = 0
    dropped: int = 0
    processed: int = 0
    defects: int = 0
    errors: int = 0
    source_errors: int = 0
    started: float = field(default_factory=time.monotonic)
    # recent end-to-end latencies (bounded: a station runs for months)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    last_frame_time: float | None = None
    # epoch s: the source last waited by design (SourceIdle) with no frame in flight
    idle_time: float | None = None
    last_error: str = ""  # why the latest unusable frame was skipped (for the exit message)
    stage_ms: dict[str, deque] = field(default_factory=dict)

    def record(self, latency_ms: dict[str, float]) -> None:
        """Keep one verdict's per-stage latencies (bounded history per stage)."""
        for k, v in latency_ms.items():
            self.stage_ms.setdefault(k, deque(maxlen=10_000)).append(v)

    def as_dict(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "frames_captured": self.captured,
            "frames_dropped": self.dropped,
            "frames_processed": self.processed,
            "defects": self.defects,
            "errors": self.errors,
            "source_errors": self.source_errors,
            "fps": self.processed / elapsed,
        }


class RunLoop:
    """Drives frames from a source through an inspector into verdict sinks."""

    def __init__(
        self,
        source: FrameSource,
        inspector: Inspector,
        emit: Callable[[Inspection, float], Verdict],
        *,
        live: bool,
        queue_size: int = 2,
        max_frames: int | None = None,
        on_verdict: Callable[[Verdict, Inspection], None] | None = None,
    ) -> None:
        self.source = source
        self.inspector = inspector
        self.emit = emit
        self.live = live
        self.max_frames = max_frames
        self.on_verdict = on_verdict
        self.stop_event = threading.Event()
        self.stats = LoopStats()
        self._q_pre: queue.Queue = queue.Queue(maxsize=queue_size)
        self._q_inf: queue.Queue = queue.Queue(maxsize=queue_size)
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self.stop_event.set()

    # -- stages ------------------------------------------------------------------------------
    def _put_live(self, item: Frame) -> None:
        while True:
            try:
                self._q_pre.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q_pre.get_nowait()
                    self.stats.dropped += 1
                except queue.Empty:
                    pass

    def _put_blocking(self, q: queue.Queue, item: object) -> bool:
        while not self.stop_event.is_set() or item is _END:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _capture(self) -> None:
        # A finite source captures exactly max_frames; a live one keeps going until the main
        # loop has published max_frames verdicts (frames dropped on the way do not count).
        budget = None if self.live else self.max_frames
        try:
            while not self.stop_event.is_set():
                if budget is not None and self.stats.captured >= budget:
                    break
                try:
                    frame = self.source.read(timeout_s=1.0)
                except SourceIdle:
                    if self._nothing_in_flight():  # else a stuck stage must still show in health
                        self.stats.idle_time = time.time()
                    continue
                except FrameTimeout as exc:
                    log.warning("%s", exc)
                    continue
                if frame is None:
                    break
                self.stats.captured += 1
                if self.live:
                    self._put_live(frame)
                elif not self._put_blocking(self._q_pre, frame):
                    break
        except SourceError as exc:
            self._failure = exc
            log.error("frame source failed: %s", exc)
        finally:
            self.stats.source_errors = self.source.stats.errors
            self._put_blocking(self._q_pre, _END)

    def _nothing_in_flight(self) -> bool:
        st = self.stats
        return st.captured <= st.processed + st.dropped + st.errors

    def _preprocess(self) -> None:
        while True:
            frame = self._q_pre.get()
            if frame is _END:
                self._put_blocking(self._q_inf, _END)
                return
            try:
                sample, ms = self.inspector.prepare(frame)
            except ValueError as exc:  # an unusable frame: count it, keep going
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.warning("frame %s skipped: %s", frame.frame_number, exc)
                continue
            self._put_blocking(self._q_inf, (frame, sample, ms))

    def _drain(self) -> None:
        """After an early stop, empty the queues so the stage threads can see the end."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            for q in (self._q_pre, self._q_inf):
                with contextlib.suppress(queue.Empty):
                    while True:
                        q.get_nowait()
            time.sleep(0.01)

    def run(self) -> LoopStats:
        """Run until the source ends, `max_frames` verdicts are out, or `stop()` is called."""
        self.stats.started = time.monotonic()
        self._threads = threads = [
            threading.Thread(target=self._capture, name="capture", daemon=True),
            threading.Thread(target=self._preprocess, name="preprocess", daemon=True),
        ]
        for t in threads:
            t.start()
        while True:
            item = self._q_inf.get()
            if item is _END:
                break
            frame, sample, pre_ms = item
            try:
                m_rgb, m_3d, t = self.inspector.infer(sample)
                ins = self.inspector.postprocess(
                    frame, m_rgb, m_3d, {"capture": frame.capture_ms, "preprocess": pre_ms, **t},
                    sample,
                )
                t0 = time.perf_counter()
                verdict = self.emit(ins, t0)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the line
                self.stats.errors += 1
                log.exception("frame %s failed: %s", frame.frame_number, exc)
                continue
            self.stats.processed += 1
            self.stats.defects += verdict.decision == "defect"
            self.stats.latencies_ms.append(verdict.latency_ms.get("total", 0.0))
            self.stats.record(verdict.latency_ms)
            self.stats.last_frame_time = frame.host_timestamp
            if self.on_verdict:
                self.on_verdict(verdict, ins)
            if self.max_frames is not None and self.stats.processed >= self.max_frames:
                self.stop_event.set()
                break
        self.stop_event.set()
        self._drain()
        for t in threads:
            t.join(timeout=5.0)
        if self._failure is not None and self.stats.processed == 0:
            raise self._failure
        return self.stats


def verdict_emitter(
    station: str,
    model: ModelRef,
    next_sequence: Callable[[], int],
    sinks: list,
) -> Callable[[Inspection, float], Verdict]:
    """Build the verdict for an inspection and hand it to every sink, timing the hand-off."""

    def emit(ins: Inspection, t0: float) -> Verdict:
        seq = next_sequence()
        draft = make_verdict(ins, station, seq, model)
        for sink in sinks:
            sink.emit(draft, ins)
        publish_ms = (time.perf_counter() - t0) * 1000.0
        draft.latency_ms["publish"] = publish_ms
        return draft

    return emit
