"""Issue 12: nothing refused is lost, TLS failures name their cause, health degrades, quiet logs.

Every test here runs against a real mosquitto (tests/broker.py); the ACL ones use the production
pattern of deploy/mosquitto/acl (a station writes only trd/<its username>/#, the MES reads
trd/#) with station id ``s2`` logging in as ``s1``: the install-time typo of the issue.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from edge.comms import health
from edge.comms.monitor import StationMonitor
from edge.comms.mqtt import MqttPublisher
from edge.comms.outbox import Outbox
from edge.config import StationConfig, load_config
from edge.runloop import LoopStats
from edge.sources.base import SourceStats

try:
    from tests.broker import Subscriber, free_port, start_broker, wait_until
    from tests.test_health import _get
    from tests.test_mqtt import MODEL, make_certs, publish_n
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from broker import Subscriber, free_port, start_broker, wait_until
    from test_health import _get
    from test_mqtt import MODEL, make_certs, publish_n

REPO = Path(__file__).resolve().parents[1]
FAST = {"mqtt.reconnect_min_s": 0.1, "mqtt.reconnect_max_s": 0.5}
ACL = "user mes\ntopic read trd/#\n\npattern write trd/%u/#\n"


def acl_broker(tmp_path: Path):
    """A broker that applies the production ACL (no password file: any username logs in)."""
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    return start_broker(tmp_path, extra_config=[f"acl_file {acl}"])


def station(port: int, tmp_path: Path, user: str | None, station_id: str = "s2", **kw) -> (
    StationConfig
):
    cred = f"{user}@" if user else ""
    return load_config(None, env={}, overrides={
        "station": station_id, "mqtt.url": f"mqtt://{cred}127.0.0.1:{port}",
        "outbox.path": tmp_path / "outbox.db", **FAST, **kw,
    })  # fmt: skip


def mes_client(port: int, topic: str = "trd/#") -> Subscriber:
    """The MES: user ``mes`` (may read trd/#), persistent session."""
    return Subscriber(port, topic, client_id="mes", username="mes")


# ------------------------------------------------------------------------- 1: refused


@pytest.mark.mqtt
def test_refused_verdicts_are_kept_counted_logged_and_sent_after_the_fix(tmp_path, caplog):
    broker = acl_broker(tmp_path)
    sub = mes_client(broker.port)
    try:
        cfg = station(broker.port, tmp_path, user="s1")  # s1 may write only trd/s1/#
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            seqs = publish_n(pub, 4)
            wait_until(lambda: pub.stats["refused"] == 4, 10, "4 refusals")
            # Kept, not deleted; counted apart from delivered, everywhere.
            assert len(box) == 0 and box.refused_count == 4
            assert [json.loads(r.message.payload)["sequence"] for r in box.refused(10)] == seqs
            assert {r.reason_code for r in box.refused(10)} == {0x87}
            assert box.counters["acked_total"] == 0 and box.counters["refused_total"] == 4
            assert pub.stats["delivered"] == 0
            # The refused `online` status is not a verdict: its refusal must not linger (a
            # later verdict reusing its message id would be taken for refused).
            wait_until(lambda: not pub._refusals, 2, "stale refusals pruned")
            assert pub.outbox_state()["outbox_refused"] == 4
            line = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage()
                        and "sequence" in r.getMessage())  # fmt: skip
            assert "trd/s2/verdict sequence 0" in line and "0x87 Not authorized" in line
            assert "username 's1' is not the station id 's2'" in line
            assert pub.close(timeout=2) == 0 and box.refused_count == 4
        assert sub.verdict_sequences() == []  # the MES got nothing

        # The installer fixes the username and restarts: the kept verdicts go out, in order.
        fixed = station(broker.port, tmp_path, user="s2")
        with Outbox(fixed.outbox_path()) as box:
            pub = MqttPublisher(fixed, box, model=MODEL).start()
            more = publish_n(pub, 2)
            sub.wait_for_sequences(set(seqs + more))
            assert pub.close(timeout=5) == 0
            assert box.refused_count == 0 and box.counters["acked_total"] == 6
        assert sub.verdict_sequences()[:6] == seqs + more
    finally:
        sub.close()
        broker.cleanup()


@pytest.mark.mqtt
def test_doctor_acl_probe_catches_a_311_station_the_broker_drops_silently(tmp_path):
    from edge.commands.doctor import check_broker

    broker = acl_broker(tmp_path)
    try:
        cfg = station(broker.port, tmp_path, user="s1", **{"mqtt.protocol": "3.1.1"})
        checks = {c.name: c for c in check_broker(cfg, timeout_s=5)}
        assert checks["broker"].status == "ok"
        acl = checks["broker acl"]
        assert acl.status == "fail" and "trd/s2/doctor" in acl.detail and "'s1'" in acl.fix
        # With the MES's account the probe proves the whole path: publish, and MES reads.
        good = station(broker.port, tmp_path, user="s2", **{"mqtt.protocol": "3.1.1"})
        mes_url = f"mqtt://mes@127.0.0.1:{broker.port}"
        checks = {c.name: c for c in check_broker(good, timeout_s=5, mes_url=mes_url)}
        assert checks["broker acl"].status == "ok" and "MES reads" in checks["broker acl"].detail
    finally:
        broker.cleanup()


# ------------------------------------------------------------- 1, 8: `trd-edge run` exit


def run_station(tmp_path: Path, mqtt_url: str, *extra: str) -> subprocess.CompletedProcess:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest_export import write_toy_bundle

    bundle = write_toy_bundle(tmp_path / "bundle", size=64, fp16=False)
    args = [
        "run", "--bundle", str(bundle), "--camera", "synthetic:puck?size=64&fps=20",
        "--mqtt", mqtt_url, "--station", "s2", "--outbox", str(tmp_path / "outbox.db"),
        "--max-frames", "3", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120,
    )  # fmt: skip


@pytest.mark.mqtt
def test_run_with_refused_verdicts_exits_4_and_says_so(tmp_path):
    broker = acl_broker(tmp_path)
    try:
        proc = run_station(tmp_path, f"mqtt://s1@127.0.0.1:{broker.port}")
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "0 verdicts delivered, 3 refused by the broker" in proc.stdout
        assert "3 verdicts refused by the broker are kept in" in proc.stderr
        assert "reason code 0x87 Not authorized" in proc.stderr
    finally:
        broker.cleanup()


@pytest.mark.mqtt
def test_run_311_warns_at_start_up_when_the_acl_drops_its_verdicts(tmp_path):
    broker = acl_broker(tmp_path)
    try:
        proc = run_station(tmp_path, f"mqtt://s1@127.0.0.1:{broker.port}", "--max-frames", "20")
        err = proc.stderr
        # 3.1.1 looks delivered to the station; only the start-up probe can tell.
        assert "start-up check: broker acl: the broker refuses writes to trd/s2/doctor" in err
    finally:
        broker.cleanup()


@pytest.mark.mqtt
def test_run_ending_with_verdicts_waiting_exits_3_with_count_and_path(tmp_path):
    port = free_port()  # nothing listens: the broker is away for the whole run
    proc = run_station(tmp_path, f"mqtt://127.0.0.1:{port}")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"3 verdicts still wait in {tmp_path / 'outbox.db'}" in proc.stderr
    assert "3 still waiting in" in proc.stdout


# ------------------------------------------------------------------------- 2: TLS


def _other_ca(d: Path) -> Path:
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "k.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=other"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    return d / "ca.pem"


def tls_broker(tmp_path: Path, certs: dict[str, Path]):
    return start_broker(tmp_path, extra_config=[
        f"cafile {certs['ca.pem']}", f"certfile {certs['server.pem']}",
        f"keyfile {certs['server.key']}",
    ])  # fmt: skip


@pytest.mark.mqtt
@pytest.mark.parametrize("case", ["unknown CA", "host name"])
def test_tls_failure_is_named_at_run_time_not_unreachable(tmp_path, caplog, case):
    certs = make_certs(tmp_path / "certs")
    broker = tls_broker(tmp_path, certs)
    host, ca = "127.0.0.1", certs["ca.pem"]
    if case == "unknown CA":
        ca = _other_ca(tmp_path / "other")
    else:
        host = "localhost"  # the certificate names IP 127.0.0.1 only
    cfg = load_config(None, env={}, overrides={
        "station": "st1", "mqtt.url": f"mqtts://{host}:{broker.port}", "mqtt.tls.ca": ca,
        "outbox.path": tmp_path / "o.db", **FAST,
    })  # fmt: skip
    try:
        with Outbox(cfg.outbox_path()) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            publish_n(pub, 1)
            wait_until(lambda: pub.tls_problem is not None, 10, "the TLS pre-flight")
            want = "not trusted by mqtt.tls.ca" if case == "unknown CA" else "does not name"
            assert want in pub.tls_problem
            wait_until(lambda: f"over TLS: the broker's TLS certificate {want.split()[0]}"
                       in caplog.text or want in caplog.text, 5, "the TLS log line")  # fmt: skip
            # Each later failed connect says TLS too, never just "unreachable".
            wait_until(lambda: "TLS: the broker's" in caplog.text, 10, "retry line names TLS")
            assert "broker unreachable" not in caplog.text
            pub.close(timeout=0.5)
    finally:
        broker.cleanup()


@pytest.mark.mqtt
def test_tls_expired_certificate_is_named(tmp_path):
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from edge.comms.mqtt import tls_preflight

    certs = make_certs(tmp_path / "certs")
    ca_key = serialization.load_pem_private_key((certs["ca.pem"].parent / "ca.key").read_bytes(),
                                                None)  # fmt: skip
    ca_cert = x509.load_pem_x509_certificate(certs["ca.pem"].read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    past = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(past).not_valid_after(past + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "old.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "old.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    broker = tls_broker(tmp_path, {**certs, "server.pem": tmp_path / "old.pem",
                                   "server.key": tmp_path / "old.key"})  # fmt: skip
    try:
        problem = tls_preflight("127.0.0.1", broker.port, str(certs["ca.pem"]))
        assert problem is not None and "has expired" in problem and "renew" in problem
        assert tls_preflight("127.0.0.1", free_port(), str(certs["ca.pem"])) is None
    finally:
        broker.cleanup()


# ------------------------------------------------------------------------- 3: health


@pytest.mark.mqtt
def test_health_degrades_with_broker_away_and_verdicts_dropped(tmp_path):
    broker = start_broker(tmp_path)
    sub = Subscriber(broker.port, "trd/st1/metrics", client_id="mes")
    broker.stop()
    cfg = load_config(None, env={}, overrides={
        "station": "st1", "mqtt.url": broker.url, "outbox.path": tmp_path / "o.db",
        "outbox.max_messages": 4, **FAST,
    })  # fmt: skip
    loop = types.SimpleNamespace(stats=LoopStats(), source=types.SimpleNamespace(
        stats=SourceStats()))  # fmt: skip
    loop.stats.processed, loop.stats.last_frame_time = 6, time.time()
    try:
        with Outbox(cfg.outbox_path(), max_messages=4) as box:
            pub = MqttPublisher(cfg, box, model=MODEL).start()
            rep = health.HealthReporter(None, 0, limits=health.DegradeLimits(broker_away_s=0.3))
            mon = StationMonitor(loop, rep, pub, metrics_period_s=0.2, interval_s=0.1)
            mon.tick()  # baseline: nothing dropped yet
            publish_n(pub, 6)  # 2 dropped: the outbox holds 4
            time.sleep(0.5)
            loop.stats.last_frame_time = time.time()
            mon.tick()
            code, body = _get(rep.port, "/healthz")
            doc = json.loads(body)
            assert code == 200 and doc["status"] == "degraded"  # alive: do not restart it
            text = " | ".join(doc["degraded"])
            assert "broker unreachable" in text and "2 verdicts dropped" in text
            assert "outbox 4/4 full" in text
            assert doc["outbox_depth"] == 4 and doc["verdicts_dropped"] == 2
            assert doc["outbox_oldest_age_s"] > 0.3
            assert _get(rep.port, "/readyz")[0] == 503
            _, metrics = _get(rep.port, "/metrics")
            values = dict(ln.rsplit(" ", 1) for ln in metrics.splitlines() if ln[:1] != "#")
            assert values["trd_verdicts_dropped_total"] == "2"
            assert values["trd_outbox_depth"] == "4" and values["trd_degraded"] == "1"
            assert float(values["trd_outbox_oldest_age_seconds"]) > 0.3

            broker.start()  # the broker returns: the metrics topic carries the outbox state
            assert pub.wait_delivered(10)
            mon.start()
            wait_until(lambda: sub.on("metrics"), 10, "metrics message")
            counters = sub.on("metrics")[-1].json()["counters"]
            for key in ("outbox_waiting", "outbox_oldest_age_s", "outbox_refused",
                        "outbox_dropped_total", "mqtt_refused", "mqtt_delivered"):
                assert key in counters, key
            assert counters["outbox_dropped_total"] == 2
            loop.stats.last_frame_time = time.time()
            mon.tick()
            doc = rep.document()
            assert "broker unreachable" not in " ".join(doc["degraded"])
            assert doc["status"] == "degraded"  # the drop is remembered for loss_window_s
            mon.close()
            pub.close(timeout=2)
    finally:
        sub.close()
        broker.cleanup()


# ------------------------------------------------------------------------- 7: quiet log

QUIET = textwrap.dedent(
    """
    import logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(levelname)s %(name)s: %(message)s")
    from edge.config import load_config
    from edge.comms.mqtt import MqttPublisher
    from edge.comms.outbox import Outbox
    cfg = load_config(None, env={}, overrides={"station": "st1", "mqtt.url": sys.argv[1],
        "outbox.path": sys.argv[2], "mqtt.reconnect_min_s": 0.1, "mqtt.reconnect_max_s": 0.2})
    pub = MqttPublisher(cfg, Outbox(sys.argv[2])).start()
    time.sleep(1.0)
    print("STOP", flush=True)
    sys.stdin.readline()  # the test stops the broker, then lets us wait through the outage
    time.sleep(3.0)
    pub.close(timeout=0.5)
    """
)


@pytest.mark.mqtt
def test_paho_not_connected_spam_stays_out_of_an_info_log(tmp_path):
    broker = start_broker(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", QUIET, broker.url, str(tmp_path / "o.db")], cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    try:
        while "STOP" not in proc.stdout.readline():
            pass
        broker.stop()
        out, _ = proc.communicate("\n", timeout=30)
        assert "lost connection to broker" in out  # the outage itself is logged
        assert "Client is not connected" not in out
    finally:
        broker.cleanup()
