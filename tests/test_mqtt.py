"""Durable outbox and MQTT publishing against a real mosquitto started by the tests."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.comms.mqtt import MqttPublisher
from edge.comms.outbox import Outbox, OutboxError
from edge.comms.verdict import ModelRef, Verdict, verdict_json_schema
from edge.config import StationConfig, load_config

try:
    from tests.broker import Subscriber, free_port, start_broker, wait_until
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from broker import Subscriber, free_port, start_broker, wait_until


REPO = Path(__file__).resolve().parents[1]
MODEL = ModelRef(id="puck-rn18", sha256="cd" * 32, variant="resnet18-64-depth/onnxruntime")
FAST = {"mqtt.reconnect_min_s": 0.1, "mqtt.reconnect_max_s": 0.5}


def make_config(port: int, tmp_path: Path, **overrides) -> StationConfig:
    url = overrides.pop("url", f"mqtt://127.0.0.1:{port}")
    return load_config(
        None,
        env={},
        overrides={
            "station": "st1",
            "mqtt.url": url,
            "outbox.path": tmp_path / "outbox.db",
            **FAST,
            **overrides,
        },
    )


def make_verdict(seq: int) -> Verdict:
    return Verdict(
        station="st1",
        sequence=seq,
        frame_number=100 + seq,
        host_timestamp=datetime.now(timezone.utc),
        image_score=float(seq % 3),
        scores={"rgb": 0.5, "3d": 1.5},
        threshold=1.0,
        decision="defect" if seq % 3 else "ok",
        model=MODEL,
        latency_ms={"inference": 12.0, "total": 20.0},
    )


def publish_n(pub: MqttPublisher, n: int) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = pub.next_sequence()
        pub.publish_verdict(make_verdict(seq))
        seqs.append(seq)
    return seqs


def first_occurrences(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ------------------------------------------------------------------------------- outbox


def test_outbox_fifo_ack_and_drop_oldest_policy(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path, max_messages=5) as box:
        ids = [box.put("t/v", f"m{i}", qos=1, properties={"k": i}) for i in range(8)]
        assert ids == sorted(ids) and len(set(ids)) == 8
        assert len(box) == 5 and box.dropped_total == 3  # drop_oldest, counted
        assert [m.payload for m in box.peek(10)] == [b"m3", b"m4", b"m5", b"m6", b"m7"]
        assert [m.payload for m in box.peek(2, after_id=ids[4])] == [b"m5", b"m6"]
        assert box.peek(1)[0].properties == {"k": 3}
        assert box.ack(ids[3]) and not box.ack(ids[3]) and not box.ack(ids[0])
        assert box.ack_many(ids[4:6]) == 2 and len(box) == 2
        assert [box.next_sequence() for _ in range(3)] == [0, 1, 2]
        with pytest.raises(OutboxError, match="in use"):
            Outbox(path)  # one owner at a time
    with Outbox(path, max_messages=5) as box:  # everything persists across reopen
        assert [m.payload for m in box.peek(10)] == [b"m6", b"m7"]
        assert box.counters["dropped_total"] == 3 and box.counters["acked_total"] == 3
        assert box.next_sequence() == 3


def test_outbox_is_thread_safe(tmp_path):
    with Outbox(tmp_path / "o.db", synchronous="NORMAL") as box:
        ids: list[int] = []

        def worker(k: int) -> None:
            for i in range(100):
                ids.append(box.put("t", f"{k}-{i}"))
                if i % 10 == 0:
                    box.peek(5)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 400 and len(box) == 400
        assert [m.id for m in box.peek(1000)] == sorted(ids)


def test_outbox_survives_sigkill(tmp_path):
    path = tmp_path / "o.db"
    code = textwrap.dedent(
        f"""
        import sys
        from edge.comms.outbox import Outbox
        box = Outbox({str(path)!r})
        i = 0
        while True:
            print(box.put("t", f"m{{i}}"), flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    confirmed = [int(proc.stdout.readline()) for _ in range(50)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with Outbox(path) as box:  # the lock died with the process
        stored = {m.id for m in box.peek(100_000)}
        assert set(confirmed) <= stored  # every put that returned is on disk
        assert len(box) == len(stored) >= 50


# ------------------------------------------------------------------------------- publisher


def test_publisher_close_keeps_undelivered_in_outbox(tmp_path, caplog):
    port = free_port()  # nothing listens here
    cfg = make_config(port, tmp_path)
    with Outbox(cfg.outbox_path()) as box:
        pub = MqttPublisher(cfg, box, model=MODEL).start()
        publish_n(pub, 3)
        t0 = time.monotonic()
        assert pub.close(timeout=0.3) == 3
        assert time.monotonic() - t0 < 3.0
    with Outbox(cfg.outbox_path()) as box:
        assert [json.loads(m.payload)["sequence"] for m in box.peek(10)] == [0, 1, 2]


def test_heatmap_rate_limit_and_expiry(tmp_path):
    now = [100.0]
    cfg = make_config(
        1883,
        tmp_path,
        **{
            "publish.heatmap.enabled": True,
            "publish.heatmap.max_rate_hz": 2.0,
            "publish.heatmap.format": "png",
        },
    )
    with Outbox(cfg.outbox_path()) as box:
        pub = MqttPublisher(cfg, box, clock=lambda: now[0])  # never started: no network
        sent = []
        pub._client.publish = lambda topic, payload, **kw: sent.append((topic, kw))
        pub._connected.set()
        results = []
        for t in (100.0, 100.2, 100.49, 100.5, 100.6, 101.0):
            now[0] = t
            results.append(pub.publish_heatmap(b"\x89PNG"))
        assert results == [True, False, False, True, False, True]
        assert sent[0][0] == "trd/st1/heatmap" and sent[0][1]["qos"] == 0
        assert sent[0][1]["properties"].ContentType == "image/png"
        # A verdict older than its MQTT 5 expiry is dropped (and counted), never sent late.
        box.put("trd/st1/verdict", b"{}", properties={"expiry_s": 60})
        msg = box.peek(1)[0]
        fresh_props, expired = pub._message_props(msg)
        assert not expired and 0 < fresh_props.MessageExpiryInterval <= 60
        old = type(msg)(msg.id, msg.topic, msg.payload, 1, False, time.time() - 61, msg.properties)
        assert pub._message_props(old) == (None, True)


@pytest.mark.mqtt
def test_session_delivered_in_order_with_schema_and_status(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")  # dev dependency
    broker = start_broker(tmp_path)
    cfg = make_config(
        broker.port, tmp_path, **{"publish.heatmap.enabled": True, "publish.heatmap.format": "png"}
    )
    sub = Subscriber(broker.port, "trd/st1/#", client_id="mes")
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL, version="9.9.9").start()
            seqs = publish_n(pub, 20)
            sub.wait_for_sequences(set(seqs))
            wait_until(lambda: pub.connected, 5, "publisher connected")
            assert pub.publish_heatmap(b"\x89PNG...") and not pub.publish_heatmap(b"again")
            assert pub.publish_metrics({"frames": 20})
            wait_until(lambda: sub.on("metrics") and sub.on("heatmap"), 5, "metrics, heatmap")

            # Every verdict, in order, once, valid against the shipped schema, MQTT 5 props.
            assert sub.verdict_sequences() == seqs
            schema = verdict_json_schema()
            for msg in sub.on("verdict"):
                jsonschema.validate(msg.json(), schema)
                assert msg.properties["ContentType"] == "application/json"
                assert ["schema_version", "1.0"] in [
                    list(p) for p in msg.properties["UserProperty"]
                ]
            assert sub.on("heatmap")[0].payload == b"\x89PNG..."
            metrics = sub.on("metrics")[0].json()["counters"]
            assert metrics["frames"] == 20 and "outbox_waiting" in metrics

            # A late subscriber gets the retained status: online, with model and version.
            late = Subscriber(broker.port, "trd/st1/status", client_id="late", persistent=False)
            wait_until(lambda: late.on("status"), 5, "retained status")
            status = late.on("status")[0]
            assert status.retain and status.json()["state"] == "online"
            assert status.json()["model"]["id"] == MODEL.id and status.json()["version"] == "9.9.9"

            assert pub.close(timeout=5) == 0  # all acknowledged
            assert len(box) == 0 and box.counters["acked_total"] == 20
            wait_until(lambda: late.on("status")[-1].json()["state"] == "stopped", 5, "stopped")
            late.close()
    finally:
        sub.close()
        broker.cleanup()


@pytest.mark.mqtt
def test_mqtt_311_is_selectable(tmp_path):
    broker = start_broker(tmp_path)
    cfg = make_config(broker.port, tmp_path, **{"mqtt.protocol": "3.1.1"})
    sub = Subscriber(broker.port, "trd/st1/verdict", client_id="mes")
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            seqs = publish_n(pub, 3)
            sub.wait_for_sequences(set(seqs))
            assert pub.close(timeout=5) == 0
        assert sub.verdict_sequences() == seqs
        assert "ContentType" not in sub.on("verdict")[0].properties  # no MQTT 5 properties
    finally:
        sub.close()
        broker.cleanup()


@pytest.mark.mqtt
def test_verdict_leaves_outbox_only_after_puback(tmp_path):
    broker = start_broker(tmp_path)
    cfg = make_config(broker.port, tmp_path)
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            wait_until(lambda: pub.connected, 5, "publisher connected")
            os.kill(broker.pid, signal.SIGSTOP)  # a stalled broker: TCP up, no PUBACK
            try:
                publish_n(pub, 5)
                time.sleep(0.5)  # the sender hands them to paho; nothing acknowledges them
                assert len(box) == 5 and box.counters["acked_total"] == 0
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert pub.wait_delivered(5) and box.counters["acked_total"] == 5
            pub.close(timeout=5)
    finally:
        broker.cleanup()


@pytest.mark.mqtt
def test_broker_restart_mid_stream_loses_nothing(tmp_path):
    broker = start_broker(tmp_path)
    window = 5
    cfg = make_config(broker.port, tmp_path, **{"mqtt.inflight_window": window})
    sub = Subscriber(broker.port, "trd/st1/verdict", client_id="mes")
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            first = publish_n(pub, 10)
            sub.wait_for_sequences(set(first[:3]))
            broker.stop()  # outage while verdicts are still flowing
            assert (broker.data_dir / "mosquitto.db").is_file()  # sessions were saved
            wait_until(lambda: not pub.connected, 5, "publisher to notice the outage")
            during = publish_n(pub, 10)
            assert len(box) >= 10  # kept on disk while the broker is away
            broker.start()
            after = publish_n(pub, 10)
            everything = first + during + after
            sub.wait_for_sequences(set(everything), timeout=15)
            assert pub.wait_delivered(5) and len(box) == 0
            pub.close(timeout=5)
        got = sub.verdict_sequences()
        assert first_occurrences(got) == everything  # in order
        counts = Counter(got)
        # QoS 1 duplicates only: a message in flight at the outage may arrive twice.
        assert max(counts.values()) <= 2
        assert sum(c - 1 for c in counts.values()) <= window + 20  # our window + broker's
    finally:
        sub.close()
        broker.cleanup()


@pytest.mark.mqtt
def test_broker_down_at_start_then_delivery_full_outbox_and_no_secrets(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    broker = start_broker(tmp_path)
    # Create the subscriber's persistent session first, so it misses nothing published while
    # it is still reconnecting after the broker comes up.
    sub = Subscriber(broker.port, "trd/st1/verdict", client_id="mes")
    broker.stop()
    url = f"mqtt://bob:hunter2@127.0.0.1:{broker.port}"
    cfg = make_config(broker.port, tmp_path, url=url, **{"outbox.max_messages": 3})
    try:
        with Outbox(cfg.outbox_path(), max_messages=cfg.outbox.max_messages) as box:
            pub = MqttPublisher(cfg, box, model=MODEL)
            seqs = publish_n(pub, 5)  # broker down: outbox keeps the newest 3, counts 2 dropped
            assert len(box) == 3 and box.dropped_total == 2
            pub.start()
            expected = (
                f"broker unreachable at 127.0.0.1:{broker.port}, retrying in 0.1s; "
                "3 verdicts waiting in outbox"
            )
            wait_until(lambda: expected in caplog.text, 5, "the unreachable-broker log line")
            broker.start()
            sub.wait_for_sequences(set(seqs[2:]), timeout=15)
            pub.close(timeout=5)
        assert first_occurrences(sub.verdict_sequences()) == seqs[2:]
        assert "hunter2" not in caplog.text
    finally:
        sub.close()
        broker.cleanup()


CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timezone
    from edge.config import load_config
    from edge.comms.mqtt import MqttPublisher
    from edge.comms.outbox import Outbox
    from edge.comms.verdict import ModelRef, Verdict

    url, outbox_path, n, ack_delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    cfg = load_config(None, env={}, overrides={
        "station": "st1", "mqtt.url": url, "mqtt.inflight_window": 2,
        "mqtt.reconnect_min_s": 0.1, "mqtt.reconnect_max_s": 0.5})

    class SlowDisk(Outbox):  # acknowledgements reach the disk slowly: work stays in flight
        def ack_many(self, ids):
            time.sleep(ack_delay)
            return super().ack_many(ids)

    model = ModelRef(id="m", sha256="ef" * 32, variant="v")
    pub = MqttPublisher(cfg, SlowDisk(outbox_path), model=model)
    for _ in range(n):
        seq = pub.next_sequence()
        pub.publish_verdict(Verdict(
            station="st1", sequence=seq, frame_number=seq, image_score=0.0,
            host_timestamp=datetime.now(timezone.utc), scores={"rgb": 0.0, "3d": 0.0},
            threshold=1.0, decision="ok", model=model))
    pub.start()
    print("started", flush=True)
    if n:
        time.sleep(60)  # killed by the test long before this
    else:
        print("left", pub.close(timeout=10), flush=True)
    """
)


def run_child(url: str, outbox: Path, n: int, ack_delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(outbox), str(n), str(ack_delay)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.mqtt
def test_publisher_sigkill_last_will_and_restart_delivers_the_rest(tmp_path):
    broker = start_broker(tmp_path)
    outbox_path = tmp_path / "child-outbox.db"
    sub = Subscriber(broker.port, "trd/st1/#", client_id="mes")
    try:
        child = run_child(broker.url, outbox_path, n=40, ack_delay=0.05)
        assert child.stdout.readline().strip() == "started"
        wait_until(lambda: len(sub.verdict_sequences()) >= 4, 10, "first verdicts")
        os.kill(child.pid, signal.SIGKILL)  # mid-stream
        child.wait()
        child.stdout.close()

        # Last Will: the broker publishes the retained `offline` status for the dead process.
        wait_until(
            lambda: sub.on("status") and sub.on("status")[-1].json()["state"] == "offline",
            5,
            "Last Will offline",
        )
        with Outbox(outbox_path) as box:
            waiting = {json.loads(m.payload)["sequence"] for m in box.peek(1000)}
        assert waiting, "the kill came too late to leave work in the outbox"
        delivered_before = set(sub.verdict_sequences())

        child = run_child(broker.url, outbox_path, n=0, ack_delay=0.0)
        out, _ = child.communicate(timeout=30)
        assert "left 0" in out
        sub.wait_for_sequences(set(range(40)))
        got = sub.verdict_sequences()
        assert first_occurrences(got) == list(range(40))  # in order, nothing lost
        dups = {s for s, c in Counter(got).items() if c > 1}
        assert dups <= waiting  # only unacknowledged verdicts were sent again
        assert set(range(40)) - delivered_before <= waiting  # the rest came from the outbox
        assert sub.on("status")[-1].json()["state"] == "stopped"
        with Outbox(outbox_path) as box:
            assert len(box) == 0
    finally:
        sub.close()
        broker.cleanup()


def make_certs(d: Path) -> dict[str, Path]:
    """A throw-away CA, a server cert for 127.0.0.1 and a client cert (openssl CLI)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=trd-test-ca",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "st1")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        )
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.mqtt
def test_tls_with_ca_and_client_certificate(tmp_path):
    certs = make_certs(tmp_path / "certs")
    broker = start_broker(
        tmp_path,
        extra_config=[
            f"cafile {certs['ca.pem']}",
            f"certfile {certs['server.pem']}",
            f"keyfile {certs['server.key']}",
            "require_certificate true",  # the broker insists on our client certificate
        ],
    )
    cfg = make_config(
        broker.port,
        tmp_path,
        url=f"mqtts://127.0.0.1:{broker.port}",
        **{
            "mqtt.tls.ca": certs["ca.pem"],
            "mqtt.tls.cert": certs["client.pem"],
            "mqtt.tls.key": certs["client.key"],
        },
    )
    assert check_config_ok(cfg)
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            publish_n(pub, 3)
            assert pub.wait_delivered(10), "no PUBACK over TLS"
            assert pub.close(timeout=5) == 0
    finally:
        broker.cleanup()


def check_config_ok(cfg: StationConfig) -> bool:
    return cfg.filesystem_problems() == []


def test_start_local_broker(monkeypatch):
    from edge.comms import local_broker

    lb = local_broker.start_local_broker()
    if lb is None:
        pytest.skip(local_broker.MOSQUITTO_HINT)
    try:
        assert lb.url == f"mqtt://127.0.0.1:{lb.port}"
        assert local_broker.port_open("127.0.0.1", lb.port)
        pid = lb.pid
        assert pid is not None
    finally:
        lb.cleanup()
    assert not lb.running and not lb.data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    monkeypatch.setattr(local_broker, "find_mosquitto", lambda: None)
    assert local_broker.start_local_broker() is None
    assert "apt-get install mosquitto" in local_broker.MOSQUITTO_HINT
