"""Test helpers for MQTT: a real mosquitto per test and a recording subscriber.

Import from a test module (``from broker import ...`` or ``from tests.broker import ...``)::

    broker = start_broker(tmp_path)          # skips the test when mosquitto is missing
    sub = Subscriber(broker.port, "trd/st1/#", client_id="mes")
    ...
    broker.stop(); broker.start()            # outage, same port, persistence kept
    broker.cleanup()

The broker runs with persistence on, so persistent subscriber sessions (clean_start False,
session expiry) and retained messages survive `restart()`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.comms.local_broker import MOSQUITTO_HINT, LocalBroker, find_mosquitto, free_port

__all__ = ["LocalBroker", "Received", "Subscriber", "free_port", "start_broker", "wait_until"]


def start_broker(
    tmp_path: Path, start: bool = True, extra_config: list[str] | None = None
) -> LocalBroker:
    """A mosquitto on a free loopback port with its config/persistence under `tmp_path`.

    Skips the calling test when mosquitto is not installed. With ``start=False`` the port is
    reserved in the object but nothing listens yet (for "broker down at start" tests).
    `extra_config` lines configure the listener (e.g. TLS: cafile, certfile, keyfile).
    """
    binary = find_mosquitto()
    if binary is None:
        pytest.skip(MOSQUITTO_HINT)
    broker = LocalBroker(binary, data_dir=tmp_path / "mosquitto", extra_config=extra_config)
    return broker.start() if start else broker


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll `predicate` every 20 ms; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    dup: bool
    properties: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Subscriber:
    """A plain paho client (MQTT 5) recording every message on `topic`, in arrival order.

    ``persistent=True`` uses clean_start False with a session expiry, so QoS 1 messages
    published while it is disconnected (e.g. during a broker restart) are queued for it.
    """

    def __init__(
        self,
        port: int,
        topic: str,
        client_id: str,
        persistent: bool = True,
        host: str = "127.0.0.1",
        timeout: float = 5.0,
        username: str | None = None,
    ) -> None:
        self.topic = topic
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.1, 0.5)
        if username is not None:  # e.g. "mes" against an ACL broker
            self.client.username_pw_set(username)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 300
        self.client.connect(host, port, keepalive=10, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise AssertionError(f"subscriber {client_id} could not subscribe to {topic}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if msg.properties is not None:
            props = {k: v for k, v in msg.properties.json().items() if v not in (None, [], b"", "")}
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, msg.retain, msg.dup, props))

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with `suffix` (e.g. "verdict"), in arrival order."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def verdict_sequences(self) -> list[int]:
        """The `sequence` of every verdict received, duplicates included, in arrival order."""
        return [m.json()["sequence"] for m in self.on("verdict")]

    def wait_for_sequences(self, expected: set[int], timeout: float = 10.0) -> None:
        """Wait until every sequence number in `expected` has arrived at least once."""
        wait_until(
            lambda: expected <= set(self.verdict_sequences()),
            timeout,
            f"verdicts {sorted(expected - set(self.verdict_sequences()))[:10]}...",
        )

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
