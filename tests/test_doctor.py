"""`trd-edge doctor`: every failure case is reported clearly with a fix, and a healthy setup
(real mosquitto with the production config, synthetic camera, toy bundle) passes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest_deploy import ProdBroker, start_prod_broker
from conftest_export import write_toy_bundle

from edge.commands.doctor import (
    add_doctor_args,
    check_disk,
    check_outbox,
    format_report,
    run_doctor,
)
from edge.comms.local_broker import free_port
from edge.comms.outbox import Outbox

USERS = {"st-a": "secret-a", "st-b": "secret-b", "mes": "secret-mes"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> ProdBroker:
    b = start_prod_broker(tmp_path_factory.mktemp("doctor-broker"), USERS)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(tmp_path_factory.mktemp("doctor") / "bundle", size=32)


def _run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    mqtt: str | None = None,
    camera: str = "synthetic",
    bundle: Path | None = None,
) -> tuple[int, dict[str, dict], str]:
    """Run the doctor as the CLI would; returns (exit code, checks by name, text report)."""
    config = tmp_path / "station.yaml"
    config.write_text(
        f"station: st-a\noutbox:\n  path: {tmp_path}/outbox/{{station}}.sqlite3\n"
        "camera:\n  synthetic:\n    size: 32\n"
    )
    parser = argparse.ArgumentParser()
    add_doctor_args(parser)
    argv = ["--config", str(config), "--camera", camera, "--timeout", "3", "--json", *extra]
    if mqtt:
        argv += ["--mqtt", mqtt]
    if bundle is not None:
        argv += ["--bundle", str(bundle)]
    code = run_doctor(parser.parse_args(argv))
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == (code == 0)
    by_name = {c["name"]: c for c in report["checks"]}
    from edge.commands.doctor import Check

    text = format_report(Check(**c) for c in report["checks"])
    return code, by_name, text


def _url(user: str, password: str, port: int, scheme: str = "mqtt", host: str = "127.0.0.1"):
    return f"{scheme}://{user}:{password}@{host}:{port}"


def test_healthy_station_passes(tmp_path, capsys, broker, bundle) -> None:
    code, checks, text = _run(
        tmp_path, capsys, mqtt=_url("st-a", USERS["st-a"], broker.port), bundle=bundle
    )
    assert code == 0, text
    for name in ("python", "packages", "config", "camera", "bundle", "broker", "broker acl"):
        assert checks[name]["status"] == "ok", text
    assert "frames 32x32" in checks["camera"]["detail"]
    assert "hashes verified" in checks["bundle"]["detail"]
    assert checks["disk"]["status"] in ("ok", "warn")
    # no GPU here: reported as a warning with a fix, not a failure
    assert checks["gpu"]["status"] in ("ok", "warn") and checks["onnxruntime"]["status"] == "ok"
    assert "FAIL" not in text


def test_tls_with_generated_ca(tmp_path, capsys, broker, bundle) -> None:
    if broker.tls_port is None:
        pytest.skip("openssl missing: no TLS listener")
    url = _url("st-a", USERS["st-a"], broker.tls_port, "mqtts", "localhost")
    code, checks, text = _run(
        tmp_path, capsys, "--skip", "camera", "gpu", "disk", mqtt=url, bundle=bundle
    )
    assert code == 1 and checks["broker"]["status"] == "fail"  # system CAs do not know ours
    assert "not trusted" in checks["broker"]["detail"] and "tls.ca" in checks["broker"]["fix"]
    tls_cfg = tmp_path / "tls.yaml"
    tls_cfg.write_text(f"station: st-a\nmqtt:\n  tls:\n    ca: {broker.ca}\n")
    parser = argparse.ArgumentParser()
    add_doctor_args(parser)
    args = parser.parse_args(
        ["--config", str(tls_cfg), "--mqtt", url, "--skip", "camera", "gpu", "disk", "bundle",
         "--json"]
    )  # fmt: skip
    assert run_doctor(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {c["name"]: c["status"] for c in out["checks"]}["broker"] == "ok"


def test_missing_bundle(tmp_path, capsys) -> None:
    code, checks, text = _run(
        tmp_path, capsys, "--skip", "broker", "camera", bundle=tmp_path / "nope"
    )
    assert code == 1
    assert checks["bundle"]["status"] == "fail" and "does not exist" in checks["bundle"]["detail"]
    assert "FIX:" in text and "trd-edge export" in checks["bundle"]["fix"]


def test_no_bundle_configured(tmp_path, capsys) -> None:
    code, checks, _ = _run(tmp_path, capsys, "--skip", "broker", "camera")
    assert code == 1 and "no model bundle configured" in checks["bundle"]["detail"]


def test_tampered_bundle(tmp_path, capsys) -> None:
    folder = write_toy_bundle(tmp_path / "b", size=32)
    onnx = folder / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    onnx.write_bytes(bytes(data))
    code, checks, _ = _run(tmp_path, capsys, "--skip", "broker", "camera", bundle=folder)
    assert code == 1
    assert "has changed since export" in checks["bundle"]["detail"]
    assert "model.onnx" in checks["bundle"]["detail"]


def test_unreachable_broker_port(tmp_path, capsys, bundle) -> None:
    port = free_port()  # nothing listens there
    code, checks, _ = _run(tmp_path, capsys, mqtt=_url("st-a", "x", port), bundle=bundle)
    assert code == 1
    assert "connection refused" in checks["broker"]["detail"]
    assert "start the broker" in checks["broker"]["fix"]


def test_wrong_credentials_and_anonymous(tmp_path, capsys, broker, bundle) -> None:
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "camera", mqtt=_url("st-a", "wrong", broker.port),
        bundle=bundle,
    )  # fmt: skip
    assert code == 1
    assert "authentication failed" in checks["broker"]["detail"]
    assert "secret" not in json.dumps(checks)  # no password in the report
    assert "add-station.sh" in checks["broker"]["fix"]
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "camera", mqtt=f"mqtt://127.0.0.1:{broker.port}",
        bundle=bundle,
    )  # fmt: skip
    assert code == 1 and "as anonymous: authentication failed" in checks["broker"]["detail"]


def test_acl_refuses_other_station_tree(tmp_path, capsys, broker, bundle) -> None:
    # st-b's credentials, configured as station st-a: it may not write trd/st-a/#
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "camera", mqtt=_url("st-b", USERS["st-b"], broker.port),
        bundle=bundle,
    )  # fmt: skip
    assert code == 1
    assert checks["broker"]["status"] == "ok"
    assert checks["broker acl"]["status"] == "fail"
    assert "refuses writes to trd/st-a/doctor" in checks["broker acl"]["detail"]


def test_plain_url_on_tls_port(tmp_path, capsys, broker, bundle) -> None:
    if broker.tls_port is None:
        pytest.skip("openssl missing: no TLS listener")
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "camera", mqtt=_url("st-a", "x", broker.tls_port),
        bundle=bundle,
    )  # fmt: skip
    assert code == 1 and "mqtts://" in checks["broker"]["fix"]


def test_missing_camera_file(tmp_path, capsys, bundle) -> None:
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "broker", camera=f"file:{tmp_path}/nope.db3", bundle=bundle
    )
    assert code == 1
    assert checks["camera"]["status"] == "fail"
    assert "recording not found" in checks["camera"]["detail"]
    assert "nope.db3" in checks["camera"]["detail"]


def test_low_disk_threshold(tmp_path, capsys, bundle) -> None:
    code, checks, _ = _run(
        tmp_path, capsys, "--skip", "broker", "camera", "--min-free-mb", "1e12", bundle=bundle
    )
    assert code == 1
    assert checks["disk"]["status"] == "fail" and "below" in checks["disk"]["detail"]
    assert check_disk(tmp_path / "o" / "x.sqlite3", min_free_mb=0.001).status == "ok"


def test_outbox_depth_reported(tmp_path) -> None:
    path = tmp_path / "outbox.sqlite3"
    assert check_outbox(path).status == "ok"
    with Outbox(path) as box:
        box.put("trd/st-a/verdict", "{}")
        box.put("trd/st-a/verdict", "{}")
        # while the station holds it, the doctor does not fight for the lock
        assert "in use" in check_outbox(path).detail
    check = check_outbox(path)
    assert check.status == "warn" and check.detail.startswith("2 verdicts waiting")


def test_text_report_has_fix_lines(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_doctor_args(parser)
    args = parser.parse_args(
        ["--bundle", str(tmp_path / "nope"), "--skip", "camera", "gpu", "broker", "disk"]
    )
    assert run_doctor(args) == 1
    out = capsys.readouterr().out
    assert "[FAIL] bundle:" in out and "FIX: copy the complete bundle" in out
    assert "1 failed" in out


def test_doctor_imports_no_torch(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edge.commands.doctor import main\n"
        f"main(['--bundle', {str(tmp_path / 'nope')!r}, '--camera', 'synthetic?size=32', "
        "'--skip', 'broker', 'disk'])\n"
        "assert 'torch' not in sys.modules, 'the doctor imported torch'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "[ OK ] camera: synthetic" in res.stdout
