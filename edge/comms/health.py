"""Station health for supervisors: an atomic JSON file and an optional tiny HTTP endpoint.

A supervisor (systemd, Docker/compose ``healthcheck``, Kubernetes, a PLC gateway) polls one of:

- the **health file** (``TRD_EDGE_HEALTH_FILE``, e.g. ``/run/trd-edge/health.json``), rewritten
  atomically (temp file + rename) on every `HealthReporter.update`, so a reader never sees half a
  file; ``python -m edge.comms.health check --file F`` exits 0 when healthy, 1 otherwise;
- ``GET /healthz`` on ``TRD_EDGE_HEALTH_PORT`` (200 unless failed / 503 failed, JSON body with
  reasons): the liveness probe, restart on failure;
- ``GET /readyz``: 200 only when ``ok`` (503 when degraded or failed): readiness / alerting;
- ``GET /metrics``: Prometheus text format (counters, outbox gauges, latency histogram).

Three levels (``status`` in the document; docs/mqtt-health.md has the supervisor recipes):

- ``failed``: restarting the station is the remedy (or a person must come): state ``error`` or
  ``stopped``, no update for ``stale_after_s`` (the process hangs), or running without a frame
  for ``stale_after_s`` (the camera is gone; a camera that averages still parts and waits by
  design, ``idle_time``, counts as a frame while nothing is in flight). ``/healthz`` answers
  503, the systemd watchdog is no longer fed, ``check`` exits 1.
- ``degraded``: it runs but verdicts are at risk and a person should look; a restart would not
  help (verdicts are kept in the outbox): the broker unreachable for longer than
  ``broker_away_s``, the outbox fuller than ``outbox_fraction``, verdicts refused by the broker
  and kept, a verdict dropped (outbox full) or an unusable camera frame within the last
  ``loss_window_s``, or the run loop reporting state ``degraded``. ``/healthz`` still answers
  200, ``/readyz`` 503; ``check --strict`` exits 1; systemd shows it as ``STATUS=``.
- ``ok``: neither.

Only the standard library is used (``http.server`` in a daemon thread): no extra dependency,
and nothing here imports torch. When systemd starts the station with ``Type=notify`` and
``WatchdogSec=``, each healthy update also sends ``READY=1`` / ``WATCHDOG=1`` to
``$NOTIFY_SOCKET`` (see ``deploy/systemd/``).

Wiring in a run loop::

    health = HealthReporter.from_env()               # or HealthReporter(path, port)
    ...per verdict:   new latencies collected in a list
    ...every second:  health.update(HealthSnapshot(state="running", frames=..., drops=...,
                          errors=..., outbox_depth=len(outbox), broker_connected=pub.connected,
                          last_frame_time=time.time(), latencies_ms=new_latencies))
    health.close()
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

State = Literal["starting", "running", "degraded", "stopping", "stopped", "error"]
HEALTHY_STATES = frozenset({"starting", "running", "degraded"})
ENV_FILE = "TRD_EDGE_HEALTH_FILE"
ENV_PORT = "TRD_EDGE_HEALTH_PORT"
ENV_BIND = "TRD_EDGE_HEALTH_BIND"

# Upper bounds (seconds) of the latency histogram: a TRD frame takes ~10 ms on an Orin with
# TensorRT FP16 and ~0.1-1 s on CPU onnxruntime, so the buckets span both.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class DegradeLimits:
    """When a running station counts as `degraded` (from `StationConfig.health`)."""

    broker_away_s: float = 60.0
    outbox_fraction: float = 0.5
    loss_window_s: float = 900.0


@dataclass
class HealthSnapshot:
    """What the run loop knows right now. Frame counters are totals since the process started;
    the verdict counters come from the outbox and are persistent (since it was created)."""

    state: State = "running"
    frames: int = 0  # frames turned into verdicts
    drops: int = 0  # frames dropped because inference fell behind (counted policy)
    errors: int = 0  # unusable frames and failed inferences
    outbox_depth: int = 0  # verdicts waiting for the broker's acknowledgement
    broker_connected: bool = False
    last_frame_time: float | None = None  # epoch seconds of the newest processed frame
    # epoch seconds the source last waited by design with no frame in flight (an averaging
    # camera after a part's verdict or while parts move): alive, though without verdicts
    idle_time: float | None = None
    latencies_ms: Sequence[float] = ()  # end-to-end latency of frames finished since last update
    detail: str = ""  # free text shown in the file (e.g. the last error)
    outbox_capacity: int = 0  # outbox.max_messages (0: no outbox)
    outbox_oldest_age_s: float = 0.0  # age of the oldest waiting verdict
    broker_away_s: float = 0.0  # how long the broker has been unreachable (0 while connected)
    verdicts_delivered: int = 0  # acknowledged by the broker (since the outbox was created)
    verdicts_dropped: int = 0  # deleted unsent because the outbox was full (persistent)
    verdicts_refused: int = 0  # refused by the broker (persistent counter)
    outbox_refused: int = 0  # refused verdicts kept in the outbox now (dead-letter table)
    tls_problem: str = ""  # last TLS pre-flight failure: cause and fix


@dataclass
class _Histogram:
    """Cumulative Prometheus-style histogram of latencies in seconds."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: int = 0
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.bounds, seconds)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += 1
        self.sum_s += seconds

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, nearest rank) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON via a temp file in the same folder + ``os.replace`` (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # a supervisor running as another user must be able to read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def evaluate(doc: Mapping[str, Any], stale_after_s: float, now: float | None = None) -> list[str]:
    """Reasons a health document is unhealthy ([] = healthy). `now` is epoch seconds."""
    now = time.time() if now is None else now
    reasons: list[str] = []
    state = doc.get("state")
    if state not in HEALTHY_STATES:
        reasons.append(f"state is {state!r}" + (f": {doc['detail']}" if doc.get("detail") else ""))
    updated = doc.get("updated_at")
    if not isinstance(updated, (int, float)):
        reasons.append("no updated_at: the station never reported")
    elif now - updated > stale_after_s:
        reasons.append(f"stale: last update {now - updated:.0f}s ago (limit {stale_after_s:g}s)")
    # a source waiting by design (nothing in flight) is as alive as one that delivered a frame
    seen = [float(t) for t in (doc.get("last_frame_time"), doc.get("idle_time")) if t is not None]
    last_frame = max(seen) if seen else None
    if state == "running":
        if last_frame is None:
            reasons.append("running but no frame processed yet")
        elif now - float(last_frame) > stale_after_s:
            reasons.append(
                f"no frame for {now - last_frame:.0f}s (limit {stale_after_s:g}s): "
                "check the camera"
            )
    return reasons


def degraded_reasons(
    doc: Mapping[str, Any], limits: DegradeLimits, recent_loss: Mapping[str, int] | None = None
) -> list[str]:
    """Why a (not failed) station is degraded ([] = ok). `recent_loss`: counter name -> how much
    it grew within ``limits.loss_window_s`` (``verdicts_dropped``, ``errors``)."""
    reasons: list[str] = []
    if doc.get("state") == "degraded":
        reasons.append("the run loop reports degraded" + (
            f": {doc['detail']}" if doc.get("detail") else ""))  # fmt: skip
    away = float(doc.get("broker_away_s") or 0.0)
    if doc.get("outbox_capacity") and away > limits.broker_away_s:
        tls = doc.get("tls_problem")
        reasons.append(
            f"broker unreachable for {away:.0f}s (limit {limits.broker_away_s:g}s)"
            + (f": TLS: {tls}" if tls else "")
        )
    capacity = int(doc.get("outbox_capacity") or 0)
    depth = int(doc.get("outbox_depth") or 0)
    if capacity and depth > limits.outbox_fraction * capacity:
        reasons.append(
            f"outbox {depth}/{capacity} full (limit {limits.outbox_fraction:.0%}); oldest "
            f"verdict waits {float(doc.get('outbox_oldest_age_s') or 0):.0f}s"
        )
    kept = int(doc.get("outbox_refused") or 0)
    if kept:
        reasons.append(
            f"{kept} verdicts refused by the broker are kept in the outbox (fix the broker "
            "user/ACL, then restart to send them)"
        )
    recent = recent_loss or {}
    window = f"in the last {limits.loss_window_s:g}s"
    if recent.get("verdicts_dropped"):
        reasons.append(f"{recent['verdicts_dropped']} verdicts dropped (outbox full) {window}")
    if recent.get("errors"):
        reasons.append(f"{recent['errors']} unusable frames or failed inferences {window}")
    return reasons


def sd_notify(message: str) -> bool:
    """Send `message` to systemd's ``$NOTIFY_SOCKET`` (no-op returning False when unset)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify(%s) failed: %s", message, exc)
        return False


class HealthReporter:
    """Publishes `HealthSnapshot`s to a JSON file and/or an HTTP endpoint.

    ``path=None`` writes no file; ``http_port=None`` starts no server (``0`` picks a free port,
    see `port`). ``stale_after_s``: no update (or, while running, no frame) for this long makes
    the station unhealthy. Thread-safe; `close` stops the server and marks the file ``stopped``.
    """

    def __init__(
        self,
        path: Path | None,
        http_port: int | None,
        *,
        bind: str = "127.0.0.1",
        stale_after_s: float = 30.0,
        window: int = 1000,
        limits: DegradeLimits | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.stale_after_s = stale_after_s
        self.limits = limits or DegradeLimits()
        # counter -> (last value seen, [(time, increase), ...] within the loss window)
        self._losses: dict[str, tuple[int, collections.deque[tuple[float, int]]]] = {}
        self._last_status = "ok"
        self._lock = threading.Lock()
        self._snapshot = HealthSnapshot(state="starting")
        self._updated_at = time.time()
        self._started_at = self._updated_at
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._hist = _Histogram()
        self._ready_sent = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if http_port is not None:
            self._start_http(bind, http_port)
        self._write_file()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> HealthReporter:
        """Reporter configured by ``TRD_EDGE_HEALTH_FILE`` / ``_PORT`` / ``_BIND`` (all optional)."""
        env = os.environ if env is None else env
        path = env.get(ENV_FILE) or None
        port_text = env.get(ENV_PORT) or None
        port: int | None = None
        if port_text is not None:
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"{ENV_PORT}={port_text!r} is not a port number") from None
            if not 0 <= port <= 65535:
                raise ValueError(f"{ENV_PORT}={port} is not a port number (0-65535)")
        kwargs.setdefault("bind", env.get(ENV_BIND) or "127.0.0.1")
        return cls(Path(path) if path else None, port, **kwargs)

    # -- updates ---------------------------------------------------------------------------

    def update(self, snapshot: HealthSnapshot) -> None:
        """Record the run loop's state; rewrites the file and pings the systemd watchdog."""
        with self._lock:
            self._snapshot = snapshot
            self._updated_at = time.time()
            for ms in snapshot.latencies_ms:
                self._recent.append(float(ms))
                self._hist.observe(float(ms) / 1000.0)
            self._track_losses(snapshot, self._updated_at)
        self._write_file()
        doc = self.document()
        if doc["healthy"]:
            if not self._ready_sent:
                self._ready_sent = sd_notify("READY=1")
            sd_notify("WATCHDOG=1")
        if doc["status"] != self._last_status:
            # Shown by `systemctl status`; a degraded station keeps feeding the watchdog.
            text = "; ".join(doc["degraded"] or doc["reasons"]) or "ok"
            if doc["status"] == "ok":
                log.info("health: ok again")
            elif snapshot.state in ("stopping", "stopped"):
                log.info("health: station %s", snapshot.state)  # a deliberate end, no alarm
            else:
                log.warning("health: %s: %s", doc["status"], text)
            sd_notify(f"STATUS={doc['status']}: {text}"[:1000])
            self._last_status = doc["status"]

    def _track_losses(self, snap: HealthSnapshot, now: float) -> None:
        """Remember when loss counters grew, so `degraded` lasts `loss_window_s` after a loss."""
        for name in ("verdicts_dropped", "errors"):
            value = int(getattr(snap, name))
            last, events = self._losses.get(name, (value, collections.deque()))
            if value > last:
                events.append((now, value - last))
            self._losses[name] = (value, events)

    def _recent_losses(self, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, (_, events) in self._losses.items():
            while events and now - events[0][0] > self.limits.loss_window_s:
                events.popleft()
            out[name] = sum(n for _, n in events)
        return out

    def document(self, now: float | None = None) -> dict[str, Any]:
        """The health JSON (what the file and ``/healthz`` contain)."""
        with self._lock:
            snap = self._snapshot
            recent = list(self._recent)
            updated = self._updated_at
            losses = self._recent_losses(time.time() if now is None else now)
        doc: dict[str, Any] = asdict(snap)
        doc.pop("latencies_ms")
        doc.update(
            updated_at=updated,
            started_at=self._started_at,
            pid=os.getpid(),
            latency_p50_ms=percentile(recent, 50),
            latency_p99_ms=percentile(recent, 99),
            stale_after_s=self.stale_after_s,
        )
        reasons = evaluate(doc, self.stale_after_s, now)
        degraded = [] if reasons else degraded_reasons(doc, self.limits, losses)
        doc["healthy"] = not reasons  # /healthz: not failed (degraded still answers 200)
        doc["reasons"] = reasons
        doc["degraded"] = degraded
        doc["status"] = "failed" if reasons else ("degraded" if degraded else "ok")
        return doc

    def healthy_reasons(self, now: float | None = None) -> list[str]:
        """Why the station is unhealthy now ([] = healthy)."""
        return self.document(now)["reasons"]

    def metrics_text(self) -> str:
        """Prometheus text exposition (version 0.0.4) of the counters and latency histogram."""
        with self._lock:
            snap = self._snapshot
            cumulative = self._hist.cumulative()
            bounds, total, sum_s = self._hist.bounds, self._hist.total, self._hist.sum_s
        doc = self.document()
        healthy = int(doc["healthy"])
        lines = [
            "# HELP trd_frames_total Frames turned into verdicts.",
            "# TYPE trd_frames_total counter",
            f"trd_frames_total {snap.frames}",
            "# HELP trd_dropped_frames_total Frames dropped because inference fell behind.",
            "# TYPE trd_dropped_frames_total counter",
            f"trd_dropped_frames_total {snap.drops}",
            "# HELP trd_errors_total Unusable frames and failed inferences.",
            "# TYPE trd_errors_total counter",
            f"trd_errors_total {snap.errors}",
            "# HELP trd_outbox_depth Verdicts waiting for the broker's acknowledgement.",
            "# TYPE trd_outbox_depth gauge",
            f"trd_outbox_depth {snap.outbox_depth}",
            "# HELP trd_outbox_capacity Verdicts the outbox holds before dropping the oldest.",
            "# TYPE trd_outbox_capacity gauge",
            f"trd_outbox_capacity {snap.outbox_capacity}",
            "# HELP trd_outbox_oldest_age_seconds Age of the oldest verdict waiting.",
            "# TYPE trd_outbox_oldest_age_seconds gauge",
            f"trd_outbox_oldest_age_seconds {snap.outbox_oldest_age_s:g}",
            "# HELP trd_outbox_refused Refused verdicts kept in the outbox (dead-letter table).",
            "# TYPE trd_outbox_refused gauge",
            f"trd_outbox_refused {snap.outbox_refused}",
            "# HELP trd_verdicts_delivered_total Verdicts acknowledged by the broker.",
            "# TYPE trd_verdicts_delivered_total counter",
            f"trd_verdicts_delivered_total {snap.verdicts_delivered}",
            "# HELP trd_verdicts_dropped_total Verdicts deleted unsent: the outbox was full.",
            "# TYPE trd_verdicts_dropped_total counter",
            f"trd_verdicts_dropped_total {snap.verdicts_dropped}",
            "# HELP trd_verdicts_refused_total Verdicts the broker refused (PUBACK >= 0x80).",
            "# TYPE trd_verdicts_refused_total counter",
            f"trd_verdicts_refused_total {snap.verdicts_refused}",
            "# HELP trd_broker_away_seconds How long the broker has been unreachable.",
            "# TYPE trd_broker_away_seconds gauge",
            f"trd_broker_away_seconds {snap.broker_away_s:g}",
            "# HELP trd_broker_connected 1 when connected to the MQTT broker.",
            "# TYPE trd_broker_connected gauge",
            f"trd_broker_connected {int(snap.broker_connected)}",
            "# HELP trd_healthy 1 when /healthz would answer 200 (not failed).",
            "# TYPE trd_healthy gauge",
            f"trd_healthy {healthy}",
            "# HELP trd_degraded 1 when running but degraded (see /healthz 'degraded').",
            "# TYPE trd_degraded gauge",
            f"trd_degraded {int(doc['status'] == 'degraded')}",
            "# HELP trd_inference_latency_seconds End-to-end latency per frame.",
            "# TYPE trd_inference_latency_seconds histogram",
        ]
        for bound, count in zip(bounds, cumulative, strict=True):
            lines.append(f'trd_inference_latency_seconds_bucket{{le="{bound:g}"}} {count}')
        lines += [
            f'trd_inference_latency_seconds_bucket{{le="+Inf"}} {total}',
            f"trd_inference_latency_seconds_sum {sum_s:.6f}",
            f"trd_inference_latency_seconds_count {total}",
        ]
        return "\n".join(lines) + "\n"

    # -- outputs ---------------------------------------------------------------------------

    def _write_file(self) -> None:
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, self.document())
        except OSError as exc:  # health must never stop the station
            log.warning(
                "cannot write health file %s: %s (check its folder exists and is "
                "writable, e.g. RuntimeDirectory= in the systemd unit)",
                self.path,
                exc,
            )

    def _start_http(self, bind: str, port: int) -> None:
        reporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                route = self.path.split("?", 1)[0]
                if route in ("/healthz", "/readyz"):
                    doc = reporter.document()
                    good = doc["healthy"] if route == "/healthz" else doc["status"] == "ok"
                    self._reply(200 if good else 503, json.dumps(doc), "application/json")
                elif route == "/metrics":
                    self._reply(200, reporter.metrics_text(), "text/plain; version=0.0.4")
                else:
                    self._reply(404, "not found: use /healthz, /readyz or /metrics\n", "text/plain")

            def _reply(self, code: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", f"{ctype}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: Any) -> None:  # polled often: keep quiet
                log.debug("health http: " + fmt, *args)

        try:
            self._server = ThreadingHTTPServer((bind, port), Handler)
        except OSError as exc:
            raise OSError(
                f"cannot serve health on {bind}:{port}: {exc}; choose another "
                f"{ENV_PORT} or stop the process using it"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )
        self._thread.start()
        log.info("health endpoint on http://%s:%d/healthz and /metrics", bind, self.port)

    @property
    def port(self) -> int | None:
        """The HTTP port actually bound (useful with port 0), None without a server."""
        return self._server.server_address[1] if self._server else None

    def close(self) -> None:
        """Stop the HTTP server and mark the file ``stopped`` (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            if self._snapshot.state != "stopped":
                self._snapshot = HealthSnapshot(
                    **{**asdict(self._snapshot), "state": "stopped", "latencies_ms": ()}
                )
                self._updated_at = time.time()
        self._write_file()
        sd_notify("STOPPING=1")

    def __enter__(self) -> HealthReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- check command


def check_file(
    path: Path, stale_after_s: float | None = None, strict: bool = False
) -> list[str]:
    """Reasons the station whose health file is `path` is failed ([] = not failed); with
    `strict` also the reasons it is degraded (as the station wrote them)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"no health file at {path}: is the station running with {ENV_FILE}={path}?"]
    except (OSError, json.JSONDecodeError) as exc:
        return [f"health file {path} is unreadable: {exc}"]
    if not isinstance(doc, dict):
        return [f"health file {path} does not hold a JSON object"]
    limit = stale_after_s if stale_after_s is not None else float(doc.get("stale_after_s", 30.0))
    reasons = evaluate(doc, limit)
    if strict and not reasons:
        reasons = [f"degraded: {r}" for r in doc.get("degraded") or []]
    return reasons


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.comms.health check --file F [--max-age S] [--strict]``: exit 0 when not
    failed (with --strict: only when ok), 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m edge.comms.health")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="check a station's health file (for container healthchecks)")
    p.add_argument("--file", default=os.environ.get(ENV_FILE), help=f"default: ${ENV_FILE}")
    p.add_argument("--max-age", type=float, default=None, help="stale after this many seconds")
    p.add_argument("--strict", action="store_true", help="a degraded station fails the check too")
    args = parser.parse_args(argv)
    if not args.file:
        print(f"give --file or set {ENV_FILE}", file=sys.stderr)
        return 2
    reasons = check_file(Path(args.file), args.max_age, args.strict)
    if reasons:
        print("unhealthy: " + "; ".join(reasons))
        return 1
    degraded = _file_degraded(Path(args.file))
    print("healthy" + (" but degraded: " + "; ".join(degraded) if degraded else ""))
    return 0


def _file_degraded(path: Path) -> list[str]:
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("degraded") or [])
    except (OSError, ValueError, AttributeError):
        return []


if __name__ == "__main__":
    sys.exit(main())
