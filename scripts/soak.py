#!/usr/bin/env python3
"""Soak benchmark: `trd-edge run` on the synthetic camera for a long time, the broker restarted
every few minutes; samples resources and proves delivered == made at the end.

The station runs as its own process (``python -m edge.cli run``, the real run loop, outbox and
publisher) with a toy ONNX bundle (milliseconds per frame: it is the station that is soaked, not
the model) or ``--bundle``. A local mosquitto (persistence on) on 127.0.0.1 is restarted every
``--restart-min`` minutes; a persistent-session subscriber stands in for the MES. Every
``--sample-s`` seconds: the station's RSS, open file descriptors, threads, outbox size (read-only
SQLite) and frames/s (its health file). At the end the station gets SIGTERM and must deliver
everything: prints the slopes after ``--warmup-min`` (RSS MB/h, fds/h, threads/h, outbox/h)
and delivered/made. A benchmark that prints numbers, not a test; it stops by itself.

    python3 scripts/soak.py                    # 30 min, 2 frames/s, restart every 5 min
    python3 scripts/soak.py --minutes 10 --warmup-min 2 --restart-min 2 --csv soak.csv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mes_client import persistent_subscriber  # noqa: E402

from edge.comms.local_broker import LocalBroker, find_mosquitto  # noqa: E402


def proc_status(pid: int) -> dict[str, float]:
    """RSS (MB), threads and open fds of a process from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def outbox_counts(path: Path) -> tuple[int, int]:
    """(waiting, sequence counter) read without taking the station's lock."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            waiting = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
            seq = db.execute("SELECT value FROM counters WHERE name='sequence'").fetchone()
        return int(waiting), int(seq[0]) if seq else 0
    except sqlite3.Error:
        return 0, 0


class Mes:
    """Persistent-session subscriber counting unique verdict sequence numbers."""

    def __init__(self, port: int, topic: str) -> None:
        self.seqs: set[int] = set()
        self.duplicates = 0
        self.lock = threading.Lock()
        self.client = persistent_subscriber("soak-mes", port, [(topic, 1)], self._on_message)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        seq = json.loads(msg.payload)["sequence"]
        with self.lock:
            if seq in self.seqs:
                self.duplicates += 1
            self.seqs.add(seq)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def slope_per_h(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope in units per hour (nan with fewer than 3 samples)."""
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 3600.0, np.asarray(values, dtype=float), 1)[0])


def toy_bundle(folder: Path) -> Path:
    """The tests' toy ONNX bundle (64 px, a real onnxruntime session, ~1 ms per frame)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest_export import write_toy_bundle

    return write_toy_bundle(folder, size=64, fp16=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=2.0, help="synthetic camera frame rate")
    ap.add_argument("--restart-min", type=float, default=5.0, help="broker restart period")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--warmup-min", type=float, default=5.0, help="left out of the slopes")
    ap.add_argument("--bundle", type=Path, default=None, help="default: a toy 64 px bundle")
    ap.add_argument("--csv", type=Path, default=None, help="write every sample here")
    args = ap.parse_args(argv)

    binary = find_mosquitto()
    if binary is None:
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="trd-soak-"))
    warmup = min(args.warmup_min, args.minutes / 3.0)
    if warmup < args.warmup_min:
        print(f"note: a {args.minutes:g} min run: warm-up shortened to {warmup:.1f} min")
    bundle = args.bundle or toy_bundle(root / "bundle")
    broker = LocalBroker(binary, data_dir=root / "broker",
                         extra_config=["max_queued_messages 100000"]).start()  # fmt: skip
    mes = Mes(broker.port, "trd/soak/verdict")
    outbox, health = root / "outbox.db", root / "health.json"
    cmd = [
        sys.executable, "-m", "edge.cli", "run", "--bundle", str(bundle),
        "--camera", f"synthetic:puck?size=64&fps={args.fps:g}", "--mqtt", broker.url,
        "--station", "soak", "--outbox", str(outbox), "--quiet",
    ]  # fmt: skip
    log_path = root / "station.log"
    station = subprocess.Popen(
        cmd, cwd=root, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO), TRD_EDGE_HEALTH_FILE=str(health)),
    )  # fmt: skip
    print(f"soak: {args.minutes:g} min at {args.fps:g} frames/s, broker restart every "
          f"{args.restart_min:g} min, sample every {args.sample_s:g}s; station pid "
          f"{station.pid}, files in {root}", flush=True)
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    next_restart = t0 + args.restart_min * 60.0
    restarts, last_frames, last_t = 0, 0, t0
    rc: int | None = None
    try:
        while (now := time.monotonic()) - t0 < args.minutes * 60.0:
            time.sleep(min(args.sample_s, args.minutes * 60.0 - (now - t0)))
            if station.poll() is not None:
                print(f"the station exited early with {station.returncode}; see {log_path}")
                return 1
            now = time.monotonic()
            if now >= next_restart:
                broker.restart()
                restarts += 1
                next_restart += args.restart_min * 60.0
            try:
                frames = int(json.loads(health.read_text()).get("frames", 0))
            except (OSError, ValueError):
                frames = last_frames
            waiting, made = outbox_counts(outbox)
            s = {"t_s": now - t0, **proc_status(station.pid), "outbox": waiting,
                 "fps": (frames - last_frames) / max(now - last_t, 1e-9), "made": made,
                 "delivered": len(mes.seqs)}  # fmt: skip
            last_frames, last_t = frames, now
            samples.append(s)
            print(f"  {s['t_s']:6.0f}s rss {s['rss_mb']:6.1f} MB fds {s['fds']:3d} threads "
                  f"{s['threads']:3d} outbox {waiting:4d} fps {s['fps']:4.1f} made {made} "
                  f"delivered {s['delivered']}", flush=True)
        station.send_signal(signal.SIGTERM)
        rc = station.wait(timeout=60)
        _, made = outbox_counts(outbox)
        deadline = time.monotonic() + 30.0
        while len(mes.seqs) < made and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if station.poll() is None:
            station.kill()
            station.wait()
        mes.close()
        broker.cleanup()
    late = [s for s in samples if s["t_s"] >= warmup * 60.0]
    t = [s["t_s"] for s in late]
    delivered = len(mes.seqs)
    print(
        f"\nafter the {warmup:.1f} min warm-up ({len(late)} samples, {restarts} broker "
        f"restarts in all):\n"
        f"  RSS      {late[0]['rss_mb'] if late else float('nan'):.1f} -> "
        f"{late[-1]['rss_mb'] if late else float('nan'):.1f} MB, slope "
        f"{slope_per_h(t, [s['rss_mb'] for s in late]):+.2f} MB/h\n"
        f"  fds      slope {slope_per_h(t, [s['fds'] for s in late]):+.2f}/h "
        f"(min {min((s['fds'] for s in late), default=0)}, max "
        f"{max((s['fds'] for s in late), default=0)})\n"
        f"  threads  slope {slope_per_h(t, [s['threads'] for s in late]):+.2f}/h "
        f"(min {min((s['threads'] for s in late), default=0)}, max "
        f"{max((s['threads'] for s in late), default=0)})\n"
        f"  outbox   slope {slope_per_h(t, [s['outbox'] for s in late]):+.2f}/h, max "
        f"{max((s['outbox'] for s in late), default=0)}\n"
        f"  frames/s mean {np.mean([s['fps'] for s in late]) if late else float('nan'):.2f}\n"
        f"delivered/made {delivered}/{made} ({'all' if delivered == made else 'MISSING'}), "
        f"duplicates {mes.duplicates}, station exit code {rc}"
    )
    if args.csv:
        keys = list(samples[0]) if samples else []
        args.csv.write_text(",".join(keys) + "\n" + "".join(
            ",".join(f"{s[k]:.3f}" for k in keys) + "\n" for s in samples))  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return 0 if delivered == made and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
