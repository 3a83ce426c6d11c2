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
- A PUBACK with a failure reason code (MQTT 5, >= 0x80, e.g. 0x87 "Not authorized" when the
  ACL does not let this user write the topic) is a *refusal*, not a delivery: the message moves
  to the outbox's dead-letter table (`Outbox.refuse`), is counted apart (``stats["refused"]``,
  metrics, health, exit code) and one log line names topic, sequence, reason code and the likely
  cause. Refused messages are queued again at the next start. MQTT 3.1.1 has no such reason
  code: a broker drops a refused publish and acknowledges it as if delivered (see
  docs/mqtt-health.md; `trd-edge run` runs the doctor's ACL probe once at start-up for that).
- TLS: paho reports a failed handshake only as "connect failed" (`on_connect_fail`), so a
  wrong CA would look like an unreachable broker. The sender thread therefore runs a TLS
  handshake of its own (`tls_preflight`, Python's ssl) at start-up and again after every
  ``mqtt.tls_check_after_failures`` failed connects, and logs the cause and the fix
  (`tls_problem` holds it for health).
- Status: Last Will ``offline`` (retained, QoS 1) registered before connecting; ``online``
  (retained) published after every successful CONNACK; ``stopped`` on `close()`.

paho runs its network loop in its own thread (`loop_start`) and reconnects with exponential
backoff (`reconnect_delay_set`); we log each failed attempt without any secret.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.comms.outbox import Outbox, OutboxMessage
from edge.comms.verdict import (
    SCHEMA_VERSION,
    MetricsMessage,
    ModelRef,
    StatusMessage,
    Verdict,
    software_version,
    utc_now,
)
from edge.config import MqttEndpoint, StationConfig, parse_mqtt_url, redact_url

__all__ = [
    "MqttEndpoint",
    "MqttPublisher",
    "parse_mqtt_url",
    "redact_url",
    "refusal_cause",
    "tls_preflight",
]

log = logging.getLogger(__name__)

JSON = "application/json"


class _QuietNotConnected(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR on every loop pass while it waits to
    reconnect or after a clean disconnect; that is expected here, so it becomes DEBUG.

    The logger's level check ran before this filter, at ERROR, so relabelling alone would still
    print the record under a handler without a level of its own (``basicConfig(level=INFO)``):
    the DEBUG level check has to happen here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Client is not connected"):
            if not _PAHO_LOG.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_PAHO_LOG = logging.getLogger(__name__ + ".paho")
_PAHO_LOG.addFilter(_QuietNotConnected())


# Likely causes of an MQTT 5 PUBACK failure reason code, for the log line.
_REFUSAL_HINTS = {
    0x80: "unspecified error: see the broker's log",
    0x83: "the broker's own rule (implementation specific): see the broker's log",
    0x90: "the topic name is invalid: check mqtt.topic_prefix",
    0x91: "packet identifier in use (broker/client state mismatch): restart the station",
    0x97: "the broker's quota is exceeded (max_queued_messages / message rate limits)",
    0x99: "the broker refused the payload format",
}


def refusal_cause(code: int, topic: str, username: str | None, station: str) -> str:
    """A sentence naming the likely cause of a refused publish and what to change."""
    if code == 0x87:  # Not authorized: the ACL
        if username is None:
            return (
                f"the broker's ACL does not let an anonymous client write {topic}: give the "
                f"station a broker user named {station!r} (deploy/mosquitto/add-station.sh)"
            )
        if username != station:
            return (
                f"username {username!r} is not the station id {station!r}: the ACL (pattern "
                f"write trd/%u/#) lets {username!r} write only its own tree; set mqtt.username "
                f"to {station!r} or fix the broker's acl_file"
            )
        return (
            f"the broker's ACL does not let user {username!r} write {topic}: check its acl_file "
            "(deploy/mosquitto/acl: pattern write trd/%u/#) against mqtt.topic_prefix"
        )
    return _REFUSAL_HINTS.get(code, "see the broker's log")


def tls_preflight(
    host: str,
    port: int,
    ca: str | None,
    cert: str | None = None,
    key: str | None = None,
    insecure: bool = False,
    timeout: float = 5.0,
) -> str | None:
    """A TLS handshake with Python's ssl, as paho would do it: None when it succeeds (or the
    broker cannot be reached at all: that is not a TLS problem), else the cause and the fix.
    """
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        return f"TLS files unusable ({exc}): fix mqtt.tls.ca / cert / key (PEM, readable)"
    if insecure:
        ctx.check_hostname = False
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        return _verify_problem(exc, host, ca)
    except ssl.SSLError as exc:
        return (
            f"TLS handshake with {host}:{port} failed ({exc.reason or exc}): is this the broker's "
            "TLS port (8883)? mqtts:// needs a TLS listener"
        )
    except (ConnectionResetError, ConnectionAbortedError):
        return (
            f"{host}:{port} closed the connection during the TLS handshake: a plain (non-TLS) "
            "port? use mqtt:// there, or the broker's TLS port"
        )
    except OSError:
        return None  # refused / unreachable / timeout: reported as "broker unreachable"


def _verify_problem(exc: ssl.SSLCertVerificationError, host: str, ca: str | None) -> str:
    code, msg = exc.verify_code, exc.verify_message or str(exc)
    ca_text = f"mqtt.tls.ca ({ca})" if ca else "the system CAs (mqtt.tls.ca not set)"
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return (
            f"the broker's TLS certificate has expired ({msg}): renew it on the broker "
            "(deploy/mosquitto/gen-certs.sh) and check this station's clock (date; NTP)"
        )
    if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
        return f"the broker's TLS certificate is not valid yet ({msg}): check the clock (NTP)"
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return (
            f"the broker's TLS certificate does not name {host!r} ({msg}): connect with a host "
            "name or IP listed in its subjectAltName (or re-issue it with that name)"
        )
    return (
        f"the broker's TLS certificate is not trusted by {ca_text} ({msg}): set mqtt.tls.ca to "
        "the CA that signed it (deploy/mosquitto/gen-certs.sh: ca.crt)"
    )


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
        self._inflight: collections.deque[tuple[OutboxMessage, mqtt.MQTTMessageInfo]] = (
            collections.deque()
        )
        self._sent_upto = 0  # highest outbox id handed to paho by this process
        self._failures = 0  # consecutive failed connection attempts (for the log message)
        self._refusals: dict[int, int] = {}  # mid -> PUBACK failure reason code (>= 0x80)
        self._last_refusal_log = -1e9
        self._refusals_unlogged = 0
        self._tls_check_due = self.endpoint.tls  # pre-flight at start-up, then after failures
        self.tls_problem: str | None = None  # last TLS pre-flight failure (cause and fix)
        self.disconnected_since: float | None = clock()  # monotonic; None while connected
        self._last_heatmap: float | None = None
        self._last_metrics = clock()
        self.stats: dict[str, int] = collections.Counter(
            delivered=0, refused=0, expired=0, heatmaps=0, heatmaps_skipped=0, connects=0
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
        self.tls_problem = None
        self.disconnected_since = None
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
        every = cfg.tls_check_after_failures
        if self.endpoint.tls and every and self._failures % every == 0:
            self._tls_check_due = True  # done by the sender thread: never block paho's
            self._wake.set()
        if self.tls_problem:
            log.warning(
                "broker %s:%d: TLS: %s; retrying in %gs; %d verdicts waiting in outbox",
                self.endpoint.host,
                self.endpoint.port,
                self.tls_problem,
                delay,
                len(self.outbox),
            )
            return
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
        if was:
            self.disconnected_since = self._clock()
        if was and not self._stop.is_set():
            log.warning(
                "lost connection to broker %s:%d (%s); reconnecting; %d verdicts waiting in outbox",
                self.endpoint.host,
                self.endpoint.port,
                reason_code,
                len(self.outbox),
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho calls this before it marks the message info published, so `_reap` always sees
        # the reason code of a message it finds published.
        if reason_code.is_failure:
            with self._state_lock:
                self._refusals[mid] = int(reason_code.value)
        self._wake.set()

    # -- sender thread ---------------------------------------------------------------------

    def start(self) -> MqttPublisher:
        """Connect in the background and start draining the outbox (idempotent)."""
        if self._sender is not None:
            return self
        again = self.outbox.requeue_refused()
        if again:
            log.warning(
                "%d verdicts the broker refused before are queued again (in order) in %s",
                again,
                self.outbox.path,
            )
        log.info(
            "publishing to %s (MQTT %s) under %s*; %d verdicts waiting in outbox %s",
            self.endpoint,
            self.config.mqtt.protocol,
            self.config.topic(""),
            len(self.outbox),
            self.outbox.path,
        )
        if not self.endpoint.tls:
            self._connect()
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-sender", daemon=True)
        self._sender.start()
        return self

    def _connect(self) -> None:
        self._client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=self.config.mqtt.keepalive,
            clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        )
        self._client.loop_start()

    def _run_sender(self) -> None:
        if self.endpoint.tls:
            # TLS: the pre-flight handshake first, so the first failure is already named (paho's
            # own attempt would only say "connect failed"); off the caller's thread.
            self._tls_check()
            self._connect()
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                if self._tls_check_due:
                    self._tls_check()
                self._reap()
                if self._connected.is_set():
                    self._send_more()
                self._maybe_metrics()
            except Exception:  # keep the thread alive; the outbox still holds everything
                log.exception("MQTT sender error; retrying")
                self._stop.wait(1.0)
        self._reap()

    def _tls_check(self) -> None:
        """Run the TLS pre-flight handshake (sender thread) and log what it finds, once."""
        self._tls_check_due = False
        tls = self.config.mqtt.tls
        problem = tls_preflight(
            self.endpoint.host,
            self.endpoint.port,
            str(tls.ca) if tls.ca else None,
            str(tls.cert) if tls.cert else None,
            str(tls.key) if tls.key else None,
            tls.insecure,
        )
        if problem and problem != self.tls_problem:
            log.error(
                "cannot connect to broker %s:%d over TLS: %s; %d verdicts waiting in outbox",
                self.endpoint.host,
                self.endpoint.port,
                problem,
                len(self.outbox),
            )
        self.tls_problem = problem

    def _reap(self) -> None:
        """Settle every message whose PUBACK has arrived: delete it, or keep it as refused."""
        done: list[int] = []
        refused: list[tuple[OutboxMessage, int]] = []
        with self._state_lock:
            keep: collections.deque = collections.deque()
            for msg, info in self._inflight:
                if info.is_published():
                    code = self._refusals.pop(info.mid, None)
                    if code is None:
                        done.append(msg.id)
                    else:
                        refused.append((msg, code))
                else:
                    keep.append((msg, info))
            self._inflight = keep
            # Refusals of what is not a tracked verdict (status, metrics) must not linger: after
            # the message ids wrap around they would mark a later verdict refused.
            live = {info.mid for _, info in keep}
            for mid in [m for m in self._refusals if m not in live]:
                del self._refusals[mid]
        if done:
            self.outbox.ack_many(done)
            self.stats["delivered"] += len(done)
        if refused:
            self.outbox.refuse((m.id, code, _reason_name(code)) for m, code in refused)
            self.stats["refused"] += len(refused)
            self._log_refusals(refused)

    def _log_refusals(self, refused: list[tuple[OutboxMessage, int]]) -> None:
        # One line per refusal would be one per verdict (10/s) while the ACL is wrong: log the
        # first of each 10 s and count the rest into the next line.
        now = self._clock()
        if now - self._last_refusal_log < 10.0:
            self._refusals_unlogged += len(refused)
            return
        msg, code = refused[0]
        more = self._refusals_unlogged + len(refused) - 1
        self._last_refusal_log, self._refusals_unlogged = now, 0
        log.error(
            "broker refused %s sequence %s: reason code 0x%02X %s; likely cause: %s; kept in "
            "the outbox's refused table (%d there, delivered again after a restart)%s",
            msg.topic,
            _sequence_of(msg),
            code,
            _reason_name(code),
            refusal_cause(code, msg.topic, self.endpoint.username, self.config.station),
            self.outbox.refused_count,
            f"; {more} more refused since the last report" if more else "",
        )

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
                self._inflight.append((msg, info))
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
        merged.update(self.outbox_state())
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

    def outbox_state(self) -> dict[str, float]:
        """Gauges for health and metrics: waiting, oldest age, refused (kept), broker away."""
        age = self.outbox.oldest_age_s()
        away = self.disconnected_since
        return {
            "outbox_waiting": len(self.outbox),
            "outbox_capacity": self.outbox.max_messages,
            "outbox_oldest_age_s": round(age, 3) if age is not None else 0.0,
            "outbox_refused": self.outbox.refused_count,
            "broker_away_s": round(self._clock() - away, 3) if away is not None else 0.0,
        }

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

        Returns how many messages stay waiting in the outbox (delivered on the next start);
        refused ones are counted apart (`Outbox.refused_count`).
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
        if self.outbox.refused_count:
            log.error(
                "%d verdicts were refused by the broker and are kept in %s (table refused); "
                "fix the broker user/ACL, then restart to send them again",
                self.outbox.refused_count,
                self.outbox.path,
            )
        return left

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason_name(code: int) -> str:
    """MQTT 5 PUBACK reason code name ("Not authorized"), or its hex value when unknown."""
    try:
        return ReasonCode(PacketTypes.PUBACK, identifier=code).getName()
    except (KeyError, ValueError):
        return f"reason 0x{code:02X}"


def _sequence_of(msg: OutboxMessage) -> str:
    """The verdict's ``sequence`` from the stored JSON payload ("?" for other messages)."""
    try:
        return str(json.loads(msg.payload)["sequence"])
    except (ValueError, KeyError, TypeError):
        return "?"
