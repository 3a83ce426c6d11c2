"""`trd-edge run`: the station's main job, from camera to MQTT verdicts."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from edge.backends import create_backend
from edge.bundle import MODEL_FP32, Bundle, load_bundle
from edge.config import StationConfig, cli_overrides, load_config
from edge.health import HealthReporter
from edge.inspector import Inspector
from edge.local_broker import MOSQUITTO_HINT, LocalBroker, start_local_broker
from edge.monitor import StationMonitor
from edge.mqtt import MqttPublisher
from edge.outbox import Outbox
from edge.runloop import LoopStats, RunLoop, latency_summary, verdict_emitter
from edge.sinks import ConsoleSink, MqttSink
from edge.sources import open_source, parse_spec
from edge.verdict import ModelRef

log = logging.getLogger(__name__)

LIVE_KINDS = ("realsense", "synthetic")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `trd-edge run` (flags override the --config file and the environment)."""
    p.add_argument("--bundle", default=None, help="model bundle directory (from `trd-edge export`)")
    p.add_argument("--camera", default=None, help="realsense[:SERIAL] | file:PATH.db3 | "
                   "folder:DIR | synthetic[:CATEGORY][?defect_rate=0.2]")
    p.add_argument("--mqtt", default=None, help="mqtt://[user:pass@]HOST:PORT or mqtts://...; "
                   "'none' = console only; default: a local mosquitto is started if installed")
    p.add_argument("--station", default=None, help="station id (topic prefix trd/<station>/)")
    p.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime"], default=None)
    p.add_argument("--max-frames", type=int, default=None, help="stop cleanly after N verdicts")
    p.add_argument("--config", default=None, help="station configuration (YAML or TOML)")
    p.add_argument("--outbox", default=None, help="outbox SQLite file")
    p.add_argument("--quiet", action="store_true", help="do not print a line per verdict")


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


def _close_publisher(publisher: MqttPublisher, config: StationConfig) -> None:
    left = publisher.close(timeout=10.0)
    if left:
        log.warning("%d verdicts stay in the outbox %s; they are delivered on the next start",
                    left, config.outbox_path())


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
    with contextlib.ExitStack() as stack:
        bundle = load_bundle(config.bundle)
        backend = create_backend(config.runtime.backend, bundle)
        stack.callback(backend.close)
        desc = backend.describe()
        ref = model_ref(bundle, f"{backend.name}-{desc.get('precision', 'fp32')}")
        inspector = Inspector(bundle, backend)

        broker: LocalBroker | None = None
        publisher: MqttPublisher | None = None
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
                stack.callback(_close_publisher, publisher, config)
                hm = config.publish.heatmap
                sinks.append(MqttSink(publisher, hm.enabled, hm.format, hm.jpeg_quality))
        if console:
            sinks.append(ConsoleSink())

        counter = iter(range(1 << 62))
        next_seq = publisher.next_sequence if publisher is not None else lambda: next(counter)
        kind = parse_spec(config.camera.source)[0]
        source = stack.enter_context(open_source(config.camera.source, config.camera))
        loop = RunLoop(
            source, inspector, verdict_emitter(config.station, ref, next_seq, sinks),
            live=kind in LIVE_KINDS, queue_size=config.runtime.capture_queue,
            max_frames=max_frames,
        )
        monitor = StationMonitor(loop, HealthReporter.from_env(), publisher,
                                 config.publish.metrics_period_s).start()
        stack.callback(monitor.close)
        yield Station(config, bundle, inspector, publisher, broker, loop)


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


def _install_signal_handlers(loop: RunLoop) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the frames in flight", signal.Signals(signum).name)
        loop.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def run_run(args: argparse.Namespace) -> int:
    """`trd-edge run` handler."""
    overrides = cli_overrides(args)
    mqtt_enabled = True
    if (args.mqtt or "").lower() == "none":
        overrides["mqtt.url"], mqtt_enabled = None, False
    config = load_config(args.config, overrides=overrides)
    with assemble(config, args.max_frames, console=not args.quiet,
                  mqtt_enabled=mqtt_enabled) as station:
        _install_signal_handlers(station.loop)
        stats = station.loop.run()
    print(summarise(stats))
    return 0
