"""Publishing verdicts over MQTT without losing any: outbox first, then paho, delete on PUBACK.

Flow of one verdict::

    publish_verdict(v) ──> Outbox.put (committed to disk) ──> sender thread ──> paho publish QoS 1
                                         ^                                           │
                                         └──── Outbox.ack_many  <── PUBACK (on_publish) ┘

- The sender thread drains the outbox IN ORDER, with at most ``mqtt.inflight_window`` messages
  handed to paho and not yet acknowledged; it hands nothing new to paho while disconnected.
- paho keeps the handed-over QoS 1 messages and resends them itself (DUP flag) after a
  reconnect; after a process restart the outbox is read from the start again. Either way a
  message may arrive twice (QoS 1: at least once), never zero times; subscribers use the
  verdict's ``sequence`` to drop repeats.
- A message is deleted from the outbox only once paho reports its PUBACK: `on_publish` wakes
  the sender, which deletes every message whose `MQTTMessageInfo.is_published()` is true (the
  info object survives reconnects, so the message-id wrap-around cannot confuse the two).
- Status: Last Will ``offline`` (retained, QoS 1) registered before connecting; ``online``
  (retained) published after every successful CONNACK; ``stopped`` on `close()`.

paho runs its network loop in its own thread (`loop_start`) and reconnects with exponential
backoff (`reconnect_delay_set`); we log each failed attempt without any secret.
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttEndpoint, StationConfig, parse_mqtt_url, redact_url
from edge.outbox import Outbox, OutboxMessage
from edge.verdict import (
    SCHEMA_VERSION,
    MetricsMessage,
    ModelRef,
    StatusMessage,
    Verdict,
    software_version,
    utc_now,
)

__all__ = ["MqttEndpoint", "MqttPublisher", "parse_mqtt_url", "redact_url"]

log = logging.getLogger(__name__)

JSON = "application/json"


class _QuietNotConnected(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR on every loop pass while it waits to
    reconnect or after a clean disconnect; that is expected here, so it becomes DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(
            "Client is not connected"
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_PAHO_LOG = logging.getLogger(__name__ + ".paho")
_PAHO_LOG.addFilter(_QuietNotConnected())


class MqttPublisher:
    """Publishes verdicts (durably), status, heatmaps and metrics for one station.

    Use as ``with MqttPublisher(cfg, outbox, model=ref) as pub: pub.publish_verdict(v)`` or
    call `start()` / `close()` yourself. `publish_verdict` works before the broker is reachable:
    the verdict waits in the outbox.
    """

    def __init__(
        self,
        config: StationConfig,
        outbox: Outbox,
        model: ModelRef | None = None,
        version: str | None = None,
        metrics_source: Callable[[], Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.model = model
        self.version = version or software_version()
        self.endpoint = config.mqtt.endpoint()
        self.metrics_source = metrics_source
        self._clock = clock
        self._v5 = config.mqtt.protocol == "5"
        self._topics = {k: config.topic(k) for k in ("verdict", "status", "heatmap", "metrics")}

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._state_lock = threading.Lock()  # guards the counters below
        self._inflight: collections.deque[tuple[int, mqtt.MQTTMessageInfo]] = collections.deque()
        self._sent_upto = 0  # highest outbox id handed to paho by this process
        self._failures = 0  # consecutive failed connection attempts (for the log message)
        self._rejected_mids: set[int] = set()  # PUBACKs with a failure reason code
        self._last_heatmap: float | None = None
        self._last_metrics = clock()
        self.stats: dict[str, int] = collections.Counter(
            delivered=0, rejected=0, expired=0, heatmaps=0, heatmaps_skipped=0, connects=0
        )
        self._sender: threading.Thread | None = None
        self._client = self._make_client()

    # -- client setup ----------------------------------------------------------------------

    def _props(self, packet: int, content_type: str = JSON, expiry: int | None = None):
        if not self._v5:
            return None
        props = Properties(packet)
        props.ContentType = content_type
        props.UserProperty = [("schema_version", SCHEMA_VERSION)]
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        return props

    def _status(self, state: str) -> bytes:
        return StatusMessage(
            state=state,
            station=self.config.station,
            model=self.model,
            version=self.version,
            timestamp=utc_now(),
        ).to_json()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        if self._v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.config.client_id(),
                protocol=mqtt.MQTTv5,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.config.client_id(),
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
        # Unlimited paho queue: our window bounds it; paho's own inflight limit paces the wire.
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        if self.endpoint.username is not None:
            pw = self.endpoint.password.get_secret_value() if self.endpoint.password else None
            client.username_pw_set(self.endpoint.username, pw)
        if self.endpoint.tls:
            client.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(
            self._topics["status"],
            self._status("offline"),
            qos=1,
            retain=True,
            properties=self._props(PacketTypes.WILLMESSAGE),
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.enable_logger(_PAHO_LOG)
        return client

    # -- paho callbacks (network thread: no disk I/O, no blocking) -------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failures += 1
            log.error(
                "broker at %s:%d refused the connection: %s; check mqtt.username/password, "
                "the client id and TLS settings; %d verdicts waiting in outbox",
                self.endpoint.host,
                self.endpoint.port,
                reason_code,
                len(self.outbox),
            )
            return
        self._failures = 0
        self.stats["connects"] += 1
        client.publish(
            self._topics["status"],
            self._status("online"),
            qos=1,
            retain=True,
            properties=self._props(PacketTypes.PUBLISH),
        )
        log.info(
            "connected to %s:%d as %s; %d verdicts waiting in outbox",
            self.endpoint.host,
            self.endpoint.port,
            self.config.client_id(),
            len(self.outbox),
        )
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # Mirrors paho's backoff (min, doubling, capped at max) to say when it tries again.
        cfg = self.config.mqtt
        delay = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(self._failures, 30))
        self._failures += 1
        log.warning(
            "broker unreachable at %s:%d, retrying in %gs; %d verdicts waiting in outbox",
            self.endpoint.host,
            self.endpoint.port,
            delay,
            len(self.outbox),
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning(
                "lost connection to broker %s:%d (%s); reconnecting; %d verdicts waiting in outbox",
                self.endpoint.host,
                self.endpoint.port,
                reason_code,
                len(self.outbox),
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker rejected message %d: %s", mid, reason_code)
            with self._state_lock:
                self._rejected_mids.add(mid)
        self._wake.set()

    # -- sender thread ---------------------------------------------------------------------

    def start(self) -> MqttPublisher:
        """Connect in the background and start draining the outbox (idempotent)."""
        if self._sender is not None:
            return self
        log.info(
            "publishing to %s (MQTT %s) under %s*; %d verdicts waiting in outbox %s",
            self.endpoint,
            self.config.mqtt.protocol,
            self.config.topic(""),
            len(self.outbox),
            self.outbox.path,
        )
        self._client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=self.config.mqtt.keepalive,
            clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        )
        self._client.loop_start()
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-sender", daemon=True)
        self._sender.start()
        return self

    def _run_sender(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._reap()
                if self._connected.is_set():
                    self._send_more()
                self._maybe_metrics()
            except Exception:  # keep the thread alive; the outbox still holds everything
                log.exception("MQTT sender error; retrying")
                self._stop.wait(1.0)
        self._reap()

    def _reap(self) -> None:
        """Delete from the outbox every message whose PUBACK has arrived."""
        done: list[int] = []
        rejected = 0
        with self._state_lock:
            keep: collections.deque = collections.deque()
            for outbox_id, info in self._inflight:
                if info.is_published():
                    done.append(outbox_id)
                    if info.mid in self._rejected_mids:
                        self._rejected_mids.discard(info.mid)
                        rejected += 1
                else:
                    keep.append((outbox_id, info))
            self._inflight = keep
        if done:
            self.outbox.ack_many(done)
            self.stats["delivered"] += len(done) - rejected
            self.stats["rejected"] += rejected

    def _send_more(self) -> None:
        room = self.config.mqtt.inflight_window - len(self._inflight)
        if room <= 0:
            return
        for msg in self.outbox.peek(room, after_id=self._sent_upto):
            if not self._connected.is_set():
                return
            props, expired = self._message_props(msg)
            if expired:
                self.outbox.expire(msg.id)
                self.stats["expired"] += 1
                self._sent_upto = msg.id
                continue
            info = self._client.publish(
                msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, properties=props
            )
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                log.error(
                    "paho refused message %d: %s; will retry", msg.id, mqtt.error_string(info.rc)
                )
                return
            with self._state_lock:
                self._inflight.append((msg.id, info))
            self._sent_upto = msg.id

    def _message_props(self, msg: OutboxMessage) -> tuple[Properties | None, bool]:
        expiry = msg.properties.get("expiry_s")
        remaining = None
        if expiry is not None:
            remaining = int(expiry - (time.time() - msg.created))
            if remaining <= 0:
                return None, True
        ctype = msg.properties.get("content_type", JSON)
        return self._props(PacketTypes.PUBLISH, ctype, remaining), False

    def _maybe_metrics(self) -> None:
        period = self.config.publish.metrics_period_s
        if (
            self.metrics_source is None
            or period <= 0
            or self._clock() - self._last_metrics < period
        ):
            return
        self._last_metrics = self._clock()
        self.publish_metrics(self.metrics_source())

    # -- public API ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the current connection."""
        return self._connected.is_set()

    def next_sequence(self) -> int:
        """The next verdict sequence number (persistent in the outbox, survives restarts)."""
        return self.outbox.next_sequence()

    def publish_verdict(self, verdict: Verdict) -> int:
        """Store the verdict in the outbox (durable on return) and wake the sender.

        Returns the outbox id. Delivery happens in the background, in order, QoS 1.
        """
        props: dict[str, Any] = {"content_type": JSON}
        if self.config.publish.verdict_expiry_s is not None:
            props["expiry_s"] = self.config.publish.verdict_expiry_s
        outbox_id = self.outbox.put(
            self._topics["verdict"], verdict.to_json(), qos=1, retain=False, properties=props
        )
        self._wake.set()
        return outbox_id

    def publish_heatmap(self, image: bytes, sequence: int | None = None) -> bool:
        """Publish an encoded heatmap (JPEG/PNG per config), QoS 0, at most `max_rate_hz`.

        Returns False when skipped: heatmaps disabled, rate limit, or not connected. Heatmaps
        are not stored in the outbox (they are a live view, not a record).
        """
        cfg = self.config.publish.heatmap
        now = self._clock()
        if not cfg.enabled:
            return False
        if self._last_heatmap is not None and now - self._last_heatmap < 1.0 / cfg.max_rate_hz:
            self.stats["heatmaps_skipped"] += 1
            return False
        if not self.connected:
            self.stats["heatmaps_skipped"] += 1
            return False
        self._last_heatmap = now
        props = self._props(PacketTypes.PUBLISH, f"image/{cfg.format}")
        if props is not None and sequence is not None:
            props.UserProperty = [("schema_version", SCHEMA_VERSION), ("sequence", str(sequence))]
        self._client.publish(self._topics["heatmap"], image, qos=0, properties=props)
        self.stats["heatmaps"] += 1
        return True

    def publish_metrics(self, counters: Mapping[str, float]) -> bool:
        """Publish counters (plus the outbox's and this publisher's) on `metrics`, QoS 0."""
        if not self.connected:
            return False
        merged: dict[str, float] = {f"outbox_{k}": v for k, v in self.outbox.counters.items()}
        merged["outbox_waiting"] = len(self.outbox)
        merged.update({f"mqtt_{k}": v for k, v in self.stats.items()})
        merged.update(counters)
        msg = MetricsMessage(station=self.config.station, timestamp=utc_now(), counters=merged)
        self._client.publish(
            self._topics["metrics"],
            msg.to_json(),
            qos=0,
            properties=self._props(PacketTypes.PUBLISH),
        )
        return True

    def wait_delivered(self, timeout: float) -> bool:
        """Block until the outbox is empty (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Drain what arrives within `timeout`, publish `stopped`, disconnect.

        Returns how many messages stay in the outbox (delivered on the next start).
        """
        if self._sender is None:
            return len(self.outbox)
        deadline = time.monotonic() + timeout
        self.wait_delivered(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        self._wake.set()
        self._sender.join(max(1.0, deadline - time.monotonic()))
        if self.connected:
            info = self._client.publish(
                self._topics["status"],
                self._status("stopped"),
                qos=1,
                retain=True,
                properties=self._props(PacketTypes.PUBLISH),
            )
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._sender = None
        left = len(self.outbox)
        if left:
            log.warning(
                "%d verdicts stay in the outbox %s for the next start", left, self.outbox.path
            )
        return left

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
