"""A private mosquitto on a free loopback port, for the demo and the tests.

`start_local_broker()` returns None when mosquitto is not installed; the caller then prints
verdicts to the console only and tells the user `MOSQUITTO_HINT`. The broker runs with
persistence on (retained status and queued QoS 1 messages survive a restart), listens on
127.0.0.1 only, allows anonymous clients, and is stopped by PID on `stop()` or at exit.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MOSQUITTO_HINT = (
    "mosquitto is not installed, so no local MQTT broker was started; verdicts go to the "
    "console only. Install it with `sudo apt-get install mosquitto` (Debian/Ubuntu/JetPack) "
    "or `brew install mosquitto`, or pass --mqtt mqtt://HOST:PORT to use an existing broker."
)
_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary: $PATH first, then the usual sbin folders."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _SEARCH if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalBroker:
    """A mosquitto process with its own config and persistence folder.

    `stop()` + `start()` restarts it on the same port with the same persistence, which is how
    tests simulate a broker outage. `extra_config` lines follow the listener line, so
    listener options such as ``cafile`` / ``certfile`` / ``require_certificate`` apply to it.
    """

    def __init__(
        self,
        binary: str,
        port: int | None = None,
        data_dir: str | os.PathLike | None = None,
        persistence: bool = True,
        extra_config: list[str] | None = None,
    ) -> None:
        self.binary = binary
        self.extra_config = list(extra_config or [])
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="trd-mosquitto-"))
        self.persistence = persistence
        self.process: subprocess.Popen | None = None
        self.config_path = self.data_dir / "mosquitto.conf"
        self.log_path = self.data_dir / "mosquitto.log"
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        """`mqtt://127.0.0.1:PORT`."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker, None when stopped."""
        return self.process.pid if self.running else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            *self.extra_config,
            "allow_anonymous true",
            # Started as root, mosquitto would switch to user "mosquitto", which cannot write
            # our temp folder (persistence, log) or read the test certificates: stay as we are.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            # Saved on clean shutdown (SIGTERM) anyway; the short interval also bounds the loss
            # when the broker is killed hard.
            "autosave_interval 5",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start mosquitto and wait until it accepts connections (RuntimeError if it cannot)."""
        if self.running:
            return self
        self._write_config()
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill it before we do
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        err = b""
        if self.process.poll() is None:
            self.process.kill()
        if self.process.stderr is not None:
            err = self.process.stderr.read() or b""
        self.process.wait()
        log_tail = (
            self.log_path.read_text(errors="replace")[-800:] if self.log_path.exists() else ""
        )
        raise RuntimeError(
            f"mosquitto did not start on {self.host}:{self.port} within {timeout:.0f}s "
            f"(exit code {self.process.returncode}): {err.decode(errors='replace').strip()} "
            f"{log_tail.strip()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the broker by PID (it saves its persistence db), SIGKILL if it hangs."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL the broker (no persistence save): a crash, not a shutdown."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 10.0) -> LocalBroker:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop and remove the temporary folder (if this object created it)."""
        self.stop()
        atexit.unregister(self.stop)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"LocalBroker({self.url}, pid={self.pid})"


def start_local_broker(
    port: int | None = None, data_dir: str | os.PathLike | None = None
) -> LocalBroker | None:
    """Start a private mosquitto (persistence on) on a free loopback port.

    Returns None when mosquitto is not installed (print `MOSQUITTO_HINT` then). The broker
    stops at interpreter exit; call `cleanup()` to stop it earlier and remove its folder.
    """
    binary = find_mosquitto()
    if binary is None:
        return None
    return LocalBroker(binary, port=port, data_dir=data_dir).start()
