"""`trd-edge run`: the station's main job, from camera to MQTT verdicts."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edge.allocator import keep_temporaries_on_heap
from edge.backends import create_backend
from edge.bundle import MODEL_FP32, Bundle, load_bundle
from edge.comms.health import DegradeLimits, HealthReporter
from edge.comms.local_broker import MOSQUITTO_HINT, LocalBroker, start_local_broker
from edge.comms.monitor import StationMonitor
from edge.comms.mqtt import MqttPublisher
from edge.comms.outbox import Outbox
from edge.comms.sinks import ConsoleSink, MqttSink
from edge.comms.verdict import ModelRef
from edge.config import StationConfig, cli_overrides, load_config
from edge.inspector import Inspector
from edge.runloop import LoopStats, RunLoop, latency_summary, verdict_emitter
from edge.sources import open_source, parse_spec
from edge.sources.acquisition import station_options

log = logging.getLogger(__name__)

LIVE_KINDS = ("realsense", "synthetic")

# Exit codes of `trd-edge run` (besides 0, 2 = a user-facing error, 130 = Ctrl-C before the
# loop): a supervisor or script can tell these outcomes apart without reading the log.
EXIT_WAITING = 3  # ended with verdicts still waiting in the outbox (broker unreachable)
EXIT_REFUSED = 4  # the broker refused verdicts (ACL/user): kept in the outbox's refused table
EXIT_NO_VERDICT = 5  # a finite source (recording, folder) yielded no usable frame


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `trd-edge run` (flags override the --config file and the environment)."""
    p.add_argument("--bundle", default=None, help="model bundle directory (from `trd-edge export`)")
    p.add_argument("--camera", default=None, help="realsense[:SERIAL] | file:PATH.db3 | "
                   "folder:DIR | synthetic[:CATEGORY][?defect_rate=0.2]")
    p.add_argument("--mqtt", default=None, help="mqtt://[user:pass@]HOST:PORT or mqtts://...; "
                   "'none' = console only; default: a local mosquitto is started if installed")
    p.add_argument("--station", default=None, help="station id (topic prefix trd/<station>/)")
    p.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime"], default=None)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                   help="model precision (default: the backend's; int8 needs `export --int8`)")
    p.add_argument("--max-frames", type=int, default=None, help="stop cleanly after N verdicts")
    p.add_argument("--config", default=None, help="station configuration (YAML or TOML)")
    p.add_argument("--outbox", default=None, help="outbox SQLite file")
    p.add_argument("--quiet", action="store_true", help="do not print a line per verdict")
    p.add_argument("--ui", default=None, metavar="[HOST:]PORT",
                   help="serve the live view page (read-only) on PORT of 127.0.0.1, or of HOST; "
                   "token: ui.token or TRD_EDGE_UI_TOKEN (see `ui:` in the config)")


def model_ref(bundle: Bundle, backend_desc: str) -> ModelRef:
    """Identify the model on every verdict: bundle id, ONNX hash, and what ran it."""
    m = bundle.manifest
    return ModelRef(
        id=bundle.model_id,
        sha256=m.files[MODEL_FP32].sha256,
        variant=f"{m.model.variant}/{backend_desc}",
    )


@dataclass
class Station:
    """Everything `run` assembles, so tests and `demo` can drive it too."""

    config: StationConfig
    bundle: Bundle
    inspector: Inspector
    publisher: MqttPublisher | None
    broker: LocalBroker | None
    loop: RunLoop
    outcome: list[Delivery] = field(default_factory=list)  # filled when the publisher closes
    ui: Any = None  # edge.ui.LiveUi when the live view is on

    @property
    def delivery(self) -> Delivery | None:
        """What became of the verdicts at the broker, once the publisher has closed."""
        return self.outcome[0] if self.outcome else None


@dataclass
class Delivery:
    """What became of this run's verdicts at the broker (for the summary and exit code)."""

    delivered: int
    refused: int  # refused by the broker in this run
    waiting: int  # in the outbox now (this run's and older ones)
    refused_kept: int  # in the outbox's refused table now
    outbox: str

    def line(self) -> str:
        """One line for the run summary."""
        text = f"MQTT: {self.delivered} verdicts delivered"
        if self.refused or self.refused_kept:
            text += (f", {self.refused} refused by the broker ({self.refused_kept} kept in "
                     f"{self.outbox}, table refused: fix the broker user/ACL and restart)")
        if self.waiting:
            text += (f", {self.waiting} still waiting in {self.outbox} (delivered on the next "
                     "start)")
        return text


def _close_publisher(publisher: MqttPublisher, outcome: list[Delivery]) -> None:
    left = publisher.close(timeout=10.0)
    outcome.append(Delivery(
        delivered=publisher.stats["delivered"], refused=publisher.stats["refused"],
        waiting=left, refused_kept=publisher.outbox.refused_count,
        outbox=str(publisher.outbox.path),
    ))


def _probe_broker_once(config: StationConfig) -> None:
    """Run the doctor's broker + ACL probe once in the background; log what is not ok.

    MQTT 3.1.1 brokers drop a refused publish silently, so this is the only early sign of a
    station whose user may not write its topics; with MQTT 5 it warns before the first verdict.
    """
    from edge.commands.doctor import check_broker

    def probe() -> None:
        try:
            checks = check_broker(config, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001 - a probe must never stop the station
            log.debug("start-up broker probe failed: %s", exc)
            return
        for c in checks:
            if c.status != "ok" and c.name == "broker acl":
                log.warning("start-up check: %s: %s; FIX: %s", c.name, c.detail, c.fix)

    threading.Thread(target=probe, name="broker-probe", daemon=True).start()


@contextlib.contextmanager
def assemble(config: StationConfig, max_frames: int | None = None, console: bool = True,
             mqtt_enabled: bool = True) -> Iterator[Station]:
    """Open bundle, backend, broker connection and source; close them in reverse order.

    Every part is registered for cleanup as soon as it exists, so a failure half-way (say, no
    camera) still stops the local broker and leaves the outbox consistent.
    """
    if config.bundle is None:
        raise ValueError("no model bundle: pass --bundle DIR (from `trd-edge export`) "
                         "or set `bundle:` in the config")
    keep_temporaries_on_heap()  # per-frame numpy temporaries reuse the heap (edge/allocator.py)
    with contextlib.ExitStack() as stack:
        bundle = load_bundle(config.bundle)
        precision = config.runtime.precision
        backend = create_backend(
            config.runtime.backend, bundle, **({"precision": precision} if precision else {})
        )
        stack.callback(backend.close)
        desc = backend.describe()
        ref = model_ref(bundle, f"{backend.name}-{desc.get('precision', 'fp32')}")
        inspector = Inspector(bundle, backend)

        broker: LocalBroker | None = None
        publisher: MqttPublisher | None = None
        outcome: list[Delivery] = []
        sinks: list = []
        if mqtt_enabled:
            if config.mqtt.url is None:
                broker = start_local_broker()
                if broker is None:
                    log.warning("no --mqtt broker given and none could be started: %s; "
                                "verdicts go to the console only", MOSQUITTO_HINT)
                else:
                    stack.callback(broker.stop)
                    log.info("started a local broker at %s (subscribe: mosquitto_sub -h "
                             "127.0.0.1 -p %d -t '%s#' -v)", broker.url, broker.port,
                             config.topic(""))
                    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(
                        update={"url": broker.url})})
            if config.mqtt.url is not None:
                path = config.outbox_path()
                path.parent.mkdir(parents=True, exist_ok=True)
                outbox = Outbox(path, config.outbox.max_messages, config.outbox.synchronous)
                stack.callback(outbox.close)
                publisher = MqttPublisher(config, outbox, model=ref).start()
                stack.callback(_close_publisher, publisher, outcome)
                if broker is None:  # our own local broker has no ACL to probe
                    _probe_broker_once(config)
                hm = config.publish.heatmap
                sinks.append(MqttSink(publisher, hm.enabled, hm.format, hm.jpeg_quality))
        if console:
            sinks.append(ConsoleSink())

        counter = iter(range(1 << 62))
        next_seq = publisher.next_sequence if publisher is not None else lambda: next(counter)
        kind = parse_spec(config.camera.source)[0]
        # the depth chain (filters, frames averaged) the bundle's training data had
        camera = station_options(config.camera, config.camera.source,
                                 bundle.manifest.acquisition, f"bundle {bundle.path.name}")
        source = open_source(config.camera.source, camera)
        inspector.attach(source)  # a camera registers depth at the bundle's working grid
        source = stack.enter_context(source)
        loop = RunLoop(
            source, inspector, verdict_emitter(config.station, ref, next_seq, sinks),
            live=kind in LIVE_KINDS, queue_size=config.runtime.capture_queue,
            max_frames=max_frames,
        )
        station = Station(config, bundle, inspector, publisher, broker, loop, outcome)
        limits = DegradeLimits(**config.health.model_dump())
        monitor = StationMonitor(loop, HealthReporter.from_env(limits=limits), publisher,
                                 config.publish.metrics_period_s).start()
        stack.callback(monitor.close)
        if config.ui.enabled:  # the live view reads verdicts through the loop's one hook
            from edge.ui import open_ui

            station.ui = stack.enter_context(open_ui(config.ui, station, ref.variant))
            loop.on_verdict = station.ui.live.on_verdict
        yield station


def summarise(stats: LoopStats) -> str:
    """A short summary of a run for the terminal: counts, then latency per stage."""
    d = stats.as_dict()
    lines = [
        f"{stats.processed} verdicts ({stats.defects} defect), {stats.dropped} frames dropped, "
        f"{stats.errors} errors, {stats.source_errors} unusable camera frames; "
        f"{d['fps']:.1f} frames/s"
    ]
    if stats.stage_ms:
        lines.append(f"  {'stage':<12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for stage, values in stats.stage_ms.items():
            q = latency_summary(list(values))
            lines.append(f"  {stage:<12}" + "".join(f"{q[k]:9.1f}" for k in
                                                    ("p50_ms", "p90_ms", "p99_ms", "max_ms")))
    return "\n".join(lines)


def no_verdict_reason(stats: LoopStats, spec: str, source_note: str | None = None) -> str:
    """One line: why a finite source gave no verdict, and what to do about it.
    ``source_note``: the source's own account (an averaging source that saw no still part)."""
    kind = parse_spec(spec)[0]
    if stats.captured == 0 and stats.source_errors == 0:
        if source_note:
            return f"no verdict from {spec}: {source_note}"
        if kind == "file":
            why = ("the recording yielded no depth+colour frame pair (a recording with one "
                   "stream only, or depth and colour frames too far apart in time)")
            todo = ("if the part stands still, pair frames up to N ms apart: "
                    f"--camera '{spec.split('?')[0]}?max_sync_skew_ms=300' (or "
                    "camera.realsense.max_sync_skew_ms in the config); otherwise check it with "
                    "`realsense-viewer` and record again with both streams enabled")
        else:
            why, todo = "the source ended before its first frame", "check camera.source"
    else:
        unusable = stats.source_errors + stats.errors
        why = f"all {unusable} frames it delivered were unusable"
        if stats.last_error:
            why += f" (last: {stats.last_error})"
        todo = ("see the 'skipped frame' warnings above: corrupt or truncated image files, or "
                "RGB and depth of different sizes; replace them and run again")
    return f"no verdict from {spec}: {why}; {todo}"


def _install_signal_handlers(loop: RunLoop, stopped: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the frames in flight", signal.Signals(signum).name)
        stopped.set()
        loop.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def run_run(args: argparse.Namespace) -> int:
    """`trd-edge run` handler."""
    overrides = cli_overrides(args)
    if getattr(args, "ui", None):
        from edge.ui.config import ui_overrides

        overrides.update(ui_overrides(args.ui))
    mqtt_enabled = True
    if (args.mqtt or "").lower() == "none":
        overrides["mqtt.url"], mqtt_enabled = None, False
    config = load_config(args.config, overrides=overrides)
    stopped = threading.Event()
    with assemble(config, args.max_frames, console=not args.quiet,
                  mqtt_enabled=mqtt_enabled) as station:
        _install_signal_handlers(station.loop, stopped)
        stats = station.loop.run()
        live = station.loop.live
        note = getattr(station.loop.source, "no_output_reason", lambda: None)()
        averaging = getattr(station.loop.source, "averaging", None)
    print(summarise(stats))
    if averaging is not None:  # what the camera's frames became (edge.sources.averaging)
        print(f"averaging ({station.loop.source.mode}): {averaging.as_dict()}")
    delivery = station.delivery
    if delivery is not None:
        print(delivery.line())
    if not live and stats.processed == 0 and not stopped.is_set() and args.max_frames != 0:
        print(f"trd-edge run: {no_verdict_reason(stats, config.camera.source, note)}",
              file=sys.stderr)
        return EXIT_NO_VERDICT
    if delivery is not None and delivery.refused_kept:
        print(f"trd-edge run: {delivery.refused_kept} verdicts refused by the broker are kept "
              f"in {delivery.outbox} (table refused); the log names the reason code and cause",
              file=sys.stderr)
        return EXIT_REFUSED
    if delivery is not None and delivery.waiting:
        print(f"trd-edge run: {delivery.waiting} verdicts still wait in {delivery.outbox}; they "
              "are sent when the station next runs with the broker reachable", file=sys.stderr)
        return EXIT_WAITING
    return 0
