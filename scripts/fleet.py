#!/usr/bin/env python3
"""Fleet load benchmark: N simulated stations on one mosquitto, an MES with a persistent session.

Each station is the real publishing code (`edge.comms.mqtt.MqttPublisher` with its own client id and
its own durable `edge.comms.outbox.Outbox`) fed with synthetic verdicts instead of a model, so that 2
cores suffice: ``--rate`` verdicts/s (QoS 1, through the outbox) and heatmaps at
``--heatmap-hz`` (QoS 0, ~30 KB). One subscriber with a persistent session (clean_start False,
session expiry 1 h) stands in for the MES. The broker (persistence on, the production
``max_queued_messages``) is restarted once mid-run.

Prints: verdicts made and delivered (unique, per station in order), duplicates, end-to-end
latency (verdict timestamp -> MES receipt) p50/p99/max, heatmaps received, the broker's CPU and
this process's CPU. A benchmark that prints numbers, not a test: it uses 127.0.0.1 only and
stops by itself after ``--minutes`` (plus at most ``--drain-s`` to collect the last verdicts).

    python3 scripts/fleet.py                      # 20 stations x 10/s, heatmaps 1 Hz, 5 min
    python3 scripts/fleet.py --stations 5 --minutes 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mes_client import persistent_subscriber  # noqa: E402

from edge.comms.local_broker import LocalBroker, find_mosquitto  # noqa: E402
from edge.comms.mqtt import MqttPublisher  # noqa: E402
from edge.comms.outbox import Outbox  # noqa: E402
from edge.comms.verdict import ModelRef, Verdict  # noqa: E402
from edge.config import load_config  # noqa: E402

MODEL = ModelRef(id="fleet", sha256="ab" * 32, variant="synthetic/none")
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Mes:
    """The MES stand-in: persistent session, records every verdict's latency and sequence."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, set[int]] = {}
        self.order_ok = True
        self.last: dict[str, int] = {}
        self.duplicates = 0
        self.latencies_ms: list[float] = []
        self.heatmaps = 0
        subs = [("trd/+/verdict", 1), ("trd/+/heatmap", 0)]
        self.client = persistent_subscriber("fleet-mes", port, subs, self._on_message)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("/heatmap"):
            self.heatmaps += 1
            return
        v = json.loads(msg.payload)
        st, seq = v["station"], v["sequence"]
        sent = datetime.fromisoformat(v["host_timestamp"].replace("Z", "+00:00")).timestamp()
        with self.lock:
            seen = self.seen.setdefault(st, set())
            if seq in seen:
                self.duplicates += 1
                return
            # First arrivals must come in order (a repeat of an older one is a duplicate).
            if seq < self.last.get(st, -1):
                self.order_ok = False
            self.last[st] = seq
            seen.add(seq)
            self.latencies_ms.append((now - sent) * 1000.0)

    def delivered(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.seen.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Station:
    """One simulated station: the real publisher and outbox, synthetic verdicts at `rate`."""

    def __init__(self, i: int, port: int, root: Path, sync: str) -> None:
        self.id = f"fleet-{i:02d}"
        cfg = load_config(None, env={}, overrides={
            "station": self.id, "mqtt.url": f"mqtt://127.0.0.1:{port}",
            "outbox.path": root / self.id / "outbox.db", "outbox.synchronous": sync,
            "mqtt.reconnect_min_s": 0.2, "mqtt.reconnect_max_s": 2.0,
            "publish.heatmap.enabled": True, "publish.heatmap.max_rate_hz": 100.0,
            "publish.metrics_period_s": 0,
        })  # fmt: skip
        self.outbox = Outbox(cfg.outbox_path(), synchronous=sync)
        self.pub = MqttPublisher(cfg, self.outbox, model=MODEL).start()
        self.made = 0

    def run(self, rate: float, heat_every: int, stop: threading.Event, image: bytes) -> None:
        t0, k = time.monotonic(), 0
        while not stop.is_set():
            wait = t0 + k / rate - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            seq = self.pub.next_sequence()
            self.pub.publish_verdict(Verdict(
                station=self.id, sequence=seq, frame_number=seq,
                host_timestamp=datetime.now(timezone.utc), image_score=0.5,
                scores={"rgb": 0.2, "3d": 0.3}, threshold=1.0, decision="ok", model=MODEL,
                latency_ms={"total": 10.0},
            ))  # fmt: skip
            self.made += 1
            if heat_every and k % heat_every == 0:
                self.pub.publish_heatmap(image, seq)
            k += 1


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stations", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="verdicts per second per station")
    ap.add_argument("--heatmap-hz", type=float, default=1.0, help="0 = no heatmaps")
    ap.add_argument("--heatmap-kb", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--outage-s", type=float, default=2.0, help="broker down this long mid-run")
    ap.add_argument("--drain-s", type=float, default=60.0, help="wait this long for stragglers")
    ap.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL", help="outbox fsync")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    # Each of N stations logs every reconnect attempt during the restart: keep only errors.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    binary = find_mosquitto()
    if binary is None:
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="trd-fleet-"))
    broker = LocalBroker(binary, data_dir=root / "broker",
                         extra_config=["max_queued_messages 100000"]).start()  # fmt: skip
    mes = Mes(broker.port)
    stations = [Station(i, broker.port, root, args.sync) for i in range(args.stations)]
    image = os.urandom(args.heatmap_kb * 1024)
    heat_every = round(args.rate / args.heatmap_hz) if args.heatmap_hz > 0 else 0
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(args.rate, heat_every, stop, image),
                                daemon=True) for s in stations]  # fmt: skip
    duration = args.minutes * 60.0
    cpu0, wall0 = os.times(), time.monotonic()
    broker_cpu = 0.0
    print(f"fleet: {args.stations} stations x {args.rate:g} verdicts/s, heatmaps "
          f"{args.heatmap_hz:g} Hz ({args.heatmap_kb} KB), {args.minutes:g} min, broker "
          f"127.0.0.1:{broker.port} restarted once at {duration / 2:.0f}s", flush=True)
    for t in threads:
        t.start()
    restarted = False
    try:
        while (elapsed := time.monotonic() - wall0) < duration:
            if not restarted and elapsed >= duration / 2:
                broker_cpu += proc_cpu_s(broker.pid or 0)
                broker.stop()
                time.sleep(args.outage_s)
                broker.start()
                restarted = True
                print(f"  {elapsed:5.0f}s broker restarted after a {args.outage_s:g}s outage",
                      flush=True)
            time.sleep(min(10.0, duration - elapsed))
            made = sum(s.made for s in stations)
            print(f"  {time.monotonic() - wall0:5.0f}s made {made} delivered {mes.delivered()} "
                  f"waiting {sum(len(s.outbox) for s in stations)}", flush=True)
        stop.set()
        for t in threads:
            t.join(5)
        run_wall = time.monotonic() - wall0
        made = sum(s.made for s in stations)
        deadline = time.monotonic() + args.drain_s
        while mes.delivered() < made and time.monotonic() < deadline:
            time.sleep(0.2)
        broker_cpu += proc_cpu_s(broker.pid or 0)
        cpu1 = os.times()
        waiting = sum(s.pub.close(timeout=2) for s in stations)
        stats = {
            "stations": args.stations, "rate": args.rate, "minutes": args.minutes,
            "made": made, "delivered": mes.delivered(), "duplicates": mes.duplicates,
            "in_order": mes.order_ok, "waiting_in_outboxes": waiting,
            "dropped": sum(s.outbox.dropped_total for s in stations),
            "refused": sum(s.outbox.refused_count for s in stations),
            "latency_p50_ms": percentile(mes.latencies_ms, 50),
            "latency_p99_ms": percentile(mes.latencies_ms, 99),
            "latency_max_ms": max(mes.latencies_ms, default=float("nan")),
            "heatmaps_received": mes.heatmaps,
            "heatmaps_sent": sum(s.pub.stats["heatmaps"] for s in stations),
            "broker_cpu_pct": 100.0 * broker_cpu / run_wall,
            "publishers_cpu_pct": 100.0 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))
            / run_wall,
            "wall_s": run_wall,
        }  # fmt: skip
    finally:
        stop.set()
        for s in stations:
            s.pub.close(timeout=0.5)
            s.outbox.close()
        mes.close()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\ndelivered/made      {stats['delivered']}/{stats['made']} "
        f"({'all' if stats['delivered'] == stats['made'] else 'MISSING'}), in order: "
        f"{stats['in_order']}, duplicates {stats['duplicates']}, dropped {stats['dropped']}, "
        f"refused {stats['refused']}\n"
        f"latency ms          p50 {stats['latency_p50_ms']:.1f}  p99 {stats['latency_p99_ms']:.1f}"
        f"  max {stats['latency_max_ms']:.0f} (verdict made -> MES, incl. the restart)\n"
        f"heatmaps            {stats['heatmaps_received']} received of "
        f"{stats['heatmaps_sent']} sent (QoS 0)\n"
        f"CPU                 broker {stats['broker_cpu_pct']:.1f} % of one core; the "
        f"{args.stations} publishers + MES {stats['publishers_cpu_pct']:.1f} %"
    )
    if args.json:
        args.json.write_text(json.dumps(stats, indent=2))
    return 0 if stats["delivered"] == stats["made"] else 1


if __name__ == "__main__":
    sys.exit(main())
