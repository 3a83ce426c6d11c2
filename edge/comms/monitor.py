"""Periodic station telemetry: the health file/endpoint and the MQTT `metrics` topic."""

from __future__ import annotations

import threading

from edge.comms.health import HealthReporter, HealthSnapshot
from edge.comms.mqtt import MqttPublisher
from edge.runloop import RunLoop


class StationMonitor:
    """Once a second: update health; every `metrics_period_s`: publish counters."""

    def __init__(
        self,
        loop: RunLoop,
        health: HealthReporter | None,
        publisher: MqttPublisher | None,
        metrics_period_s: float = 10.0,
        interval_s: float = 1.0,
    ) -> None:
        self.loop, self.health, self.publisher = loop, health, publisher
        self.metrics_period_s, self.interval_s = metrics_period_s, interval_s
        self._stop = threading.Event()
        self._seen = 0
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> StationMonitor:
        self.tick("starting")
        self._thread.start()
        return self

    def tick(self, state: str = "running") -> None:
        """Push one health snapshot (latencies since the previous tick)."""
        if self.health is None:
            return
        st = self.loop.stats
        lat = list(st.latencies_ms)
        new = min(max(st.processed - self._seen, 0), len(lat))
        self._seen = st.processed
        pub = self.publisher
        # The source's own counter is live; LoopStats.source_errors is filled at the end.
        source_errors = max(st.source_errors, self.loop.source.stats.errors)
        verdicts: dict = {}
        if pub is not None:
            state_now, counters = pub.outbox_state(), pub.outbox.counters
            verdicts = dict(
                outbox_depth=int(state_now["outbox_waiting"]),
                outbox_capacity=int(state_now["outbox_capacity"]),
                outbox_oldest_age_s=state_now["outbox_oldest_age_s"],
                outbox_refused=int(state_now["outbox_refused"]),
                broker_away_s=state_now["broker_away_s"],
                broker_connected=pub.connected,
                verdicts_delivered=counters.get("acked_total", 0),
                verdicts_dropped=counters.get("dropped_total", 0),
                verdicts_refused=counters.get("refused_total", 0),
                tls_problem=pub.tls_problem or "",
            )
        self.health.update(
            HealthSnapshot(
                state=state, frames=st.processed, drops=st.dropped,
                errors=st.errors + source_errors,
                last_frame_time=st.last_frame_time, idle_time=st.idle_time,
                latencies_ms=lat[len(lat) - new:] if new else [],
                **verdicts,
            )
        )

    def _run(self) -> None:
        waited = 0.0
        while not self._stop.wait(self.interval_s):
            self.tick()
            waited += self.interval_s
            if self.publisher is not None and waited >= self.metrics_period_s:
                waited = 0.0
                self.publisher.publish_metrics(self.loop.stats.as_dict())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.tick("stopped")
        if self.health is not None:
            self.health.close()
