"""Helpers for the deployment tests: the production mosquitto config on temp paths and ports.

`start_prod_broker` renders ``deploy/mosquitto/mosquitto.conf`` (container paths replaced by
temp folders, listeners moved to free loopback ports), copies the ACL unchanged, creates users
with ``deploy/mosquitto/add-station.sh`` and certificates with ``gen-certs.sh``, and starts a
real mosquitto. Skips the test when mosquitto / mosquitto_passwd are not installed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.comms.local_broker import find_mosquitto, free_port, port_open

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


@dataclass
class ProdBroker:
    """A running mosquitto with the production config."""

    process: subprocess.Popen
    port: int  # plain listener (loopback)
    tls_port: int | None  # TLS listener, None without openssl
    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "certs" / "broker" / "ca.crt"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def render_config(text: str, root: Path, port: int, tls_port: int | None) -> str:
    """The production config with temp paths and ports (and the TLS block only with certs)."""
    text = text.replace("/mosquitto/config/", f"{root}/config/")
    text = text.replace("/mosquitto/data/", f"{root}/data/")
    text = text.replace("/mosquitto/certs/", f"{root}/certs/broker/")
    text = text.replace("log_dest stdout", f"log_dest file {root}/mosquitto.log")
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    if tls_port is None:
        head, _, rest = text.partition("listener 8883")
        text = head + rest[rest.index("listener ") :]
    else:
        text = text.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    # As root, mosquitto would switch to user "mosquitto", which cannot read our temp files.
    return text + f"\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"


def start_prod_broker(tmp_path: Path, users: dict[str, str]) -> ProdBroker:
    """Start mosquitto with deploy/mosquitto's config, ACL and the given users."""
    binary = find_mosquitto()
    if binary is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")
    root = tmp_path / "broker"
    (root / "config").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(DEPLOY / "mosquitto" / "acl", root / "config" / "acl")
    for user, password in users.items():
        subprocess.run(
            [str(DEPLOY / "mosquitto" / "add-station.sh"), str(root / "config" / "passwd"),
             user, password],
            check=True, capture_output=True,
        )  # fmt: skip
    tls_port = None
    if shutil.which("openssl"):
        subprocess.run(
            [str(DEPLOY / "mosquitto" / "gen-certs.sh"), str(root / "certs"), "localhost",
             "127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        tls_port = free_port()
    port = free_port()
    conf = root / "mosquitto.conf"
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    conf.write_text(render_config(text, root, port, tls_port))
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    broker = ProdBroker(proc, port, tls_port, root)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if port_open("127.0.0.1", port) and (tls_port is None or port_open("127.0.0.1", tls_port)):
            return broker
        time.sleep(0.05)
    broker.stop()
    log = (root / "mosquitto.log").read_text() if (root / "mosquitto.log").exists() else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    raise RuntimeError(f"production mosquitto config did not start: {err} {log[-1500:]}")
