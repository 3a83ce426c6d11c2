"""Health reporting: the atomic JSON file, /healthz and /metrics over HTTP, staleness."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.comms.health import (
    HealthReporter,
    HealthSnapshot,
    check_file,
    evaluate,
    main,
    percentile,
    sd_notify,
)


def _get(port: int, route: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _running(**kw) -> HealthSnapshot:
    base = dict(
        state="running", frames=10, drops=2, errors=1, outbox_depth=3,
        broker_connected=True, last_frame_time=time.time(),
    )  # fmt: skip
    base.update(kw)
    return HealthSnapshot(**base)


def test_file_content_and_atomic_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "run" / "health.json"  # folder is created
    rep = HealthReporter(path, None)
    assert json.loads(path.read_text())["state"] == "starting"
    rep.update(_running(latencies_ms=[10.0, 20.0, 30.0, 40.0, 200.0]))
    doc = json.loads(path.read_text())
    assert doc["state"] == "running" and doc["healthy"] is True and doc["reasons"] == []
    assert (doc["frames"], doc["drops"], doc["errors"], doc["outbox_depth"]) == (10, 2, 1, 3)
    assert doc["broker_connected"] is True
    assert doc["latency_p50_ms"] == 30.0 and doc["latency_p99_ms"] == 200.0
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    rep.close()
    assert json.loads(path.read_text())["state"] == "stopped"
    assert check_file(path)  # a stopped station is not healthy


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99


def test_http_healthz_and_metrics(tmp_path: Path) -> None:
    with HealthReporter(None, 0) as rep:
        assert rep.port
        rep.update(_running(latencies_ms=[4.0, 12.0, 12.0, 700.0]))
        code, body = _get(rep.port, "/healthz")
        assert code == 200 and json.loads(body)["healthy"] is True
        code, text = _get(rep.port, "/metrics")
        assert code == 200
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        assert lines["trd_frames_total"] == "10"
        assert lines["trd_dropped_frames_total"] == "2"
        assert lines["trd_errors_total"] == "1"
        assert lines["trd_outbox_depth"] == "3"
        # 4 ms and both 12 ms fall below 20 ms, 700 ms only below 1 s
        assert lines['trd_inference_latency_seconds_bucket{le="0.005"}'] == "1"
        assert lines['trd_inference_latency_seconds_bucket{le="0.02"}'] == "3"
        assert lines['trd_inference_latency_seconds_bucket{le="0.5"}'] == "3"
        assert lines['trd_inference_latency_seconds_bucket{le="1"}'] == "4"
        assert lines['trd_inference_latency_seconds_bucket{le="+Inf"}'] == "4"
        assert lines["trd_inference_latency_seconds_count"] == "4"
        assert float(lines["trd_inference_latency_seconds_sum"]) == pytest.approx(0.728)
        assert "# TYPE trd_inference_latency_seconds histogram" in text
        assert _get(rep.port, "/nope")[0] == 404
        # an error state answers 503 with the reason
        rep.update(_running(state="error", detail="camera lost"))
        code, body = _get(rep.port, "/healthz")
        assert code == 503 and "camera lost" in json.loads(body)["reasons"][0]
    port = rep.port
    assert port is None  # closed


def test_stale_update_and_stale_frames_give_503() -> None:
    with HealthReporter(None, 0, stale_after_s=0.3) as rep:
        rep.update(_running())
        assert _get(rep.port, "/healthz")[0] == 200
        time.sleep(0.45)
        code, body = _get(rep.port, "/healthz")
        assert code == 503 and any("stale" in r for r in json.loads(body)["reasons"])
    # updates keep coming but no frame for a while: the camera is the problem
    doc = {"state": "running", "updated_at": 1000.0, "last_frame_time": 900.0}
    reasons = evaluate(doc, stale_after_s=30, now=1001.0)
    assert len(reasons) == 1 and "check the camera" in reasons[0]
    assert evaluate({"state": "degraded", "updated_at": 1000.0}, 30, now=1001.0) == []


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.json"
    assert main(["check", "--file", str(path)]) == 1
    assert "no health file" in capsys.readouterr().out
    rep = HealthReporter(path, None, stale_after_s=60)
    rep.update(_running())
    assert main(["check", "--file", str(path)]) == 0
    doc = json.loads(path.read_text())
    doc["updated_at"] -= 120
    path.write_text(json.dumps(doc))
    assert main(["check", "--file", str(path)]) == 1
    assert "stale" in capsys.readouterr().out


def test_from_env_and_port_in_use(tmp_path: Path) -> None:
    rep = HealthReporter.from_env({"TRD_EDGE_HEALTH_FILE": str(tmp_path / "x.json")})
    assert rep.path == tmp_path / "x.json" and rep.port is None
    rep.close()
    with pytest.raises(ValueError, match="TRD_EDGE_HEALTH_PORT"):
        HealthReporter.from_env({"TRD_EDGE_HEALTH_PORT": "http"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="choose another TRD_EDGE_HEALTH_PORT"):
            HealthReporter(None, s.getsockname()[1])


def test_sd_notify_sends_ready_and_watchdog(tmp_path: Path, monkeypatch) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    try:
        rep = HealthReporter(None, None)
        rep.update(_running())
        got = {server.recv(100).decode(), server.recv(100).decode()}
        assert got == {"READY=1", "WATCHDOG=1"}
        rep.update(_running(state="error"))  # failed: no watchdog ping, systemd sees why
        assert server.recv(100).decode().startswith("STATUS=failed: state is 'error'")
        rep.close()
        assert server.recv(100).decode() == "STOPPING=1"
    finally:
        server.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("WATCHDOG=1") is False


def test_check_strict_fails_a_degraded_station(tmp_path: Path, capsys) -> None:
    from edge.comms.health import DegradeLimits

    path = tmp_path / "h.json"
    rep = HealthReporter(path, None, limits=DegradeLimits(broker_away_s=10))
    rep.update(_running(outbox_capacity=100, outbox_depth=3, broker_away_s=42.0,
                        broker_connected=False))  # fmt: skip
    assert json.loads(path.read_text())["status"] == "degraded"
    assert main(["check", "--file", str(path)]) == 0  # alive: a restart would not help
    assert "degraded: broker unreachable for 42s" in capsys.readouterr().out
    assert main(["check", "--file", str(path), "--strict"]) == 1
    rep.update(_running(outbox_capacity=100, outbox_refused=2))
    assert "2 verdicts refused" in json.loads(path.read_text())["degraded"][0]
    rep.update(_running(outbox_capacity=100))
    assert json.loads(path.read_text())["status"] == "ok"
    assert main(["check", "--file", str(path), "--strict"]) == 0
    rep.close()
