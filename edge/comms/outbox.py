"""Durable on-disk FIFO of MQTT messages waiting for the broker's acknowledgement.

paho-mqtt keeps unacknowledged QoS 1 messages in memory only, so a crash or power cut would
lose them. Every verdict is therefore committed here *before* it is handed to paho, and deleted
only after its PUBACK arrives. On restart the publisher sends whatever is left, in order.

Storage: SQLite in WAL mode (readers never block the writer; a crash leaves the database
consistent) with ``synchronous=FULL`` by default: in WAL mode NORMAL may lose the last commits on
*power loss* (never on a process crash), and a station PC or Jetson on a production line does
lose power. NORMAL is selectable where write latency matters more.

Bound: at most ``max_messages``; when full, the OLDEST waiting message is deleted and counted
in the persistent ``dropped_total`` counter (policy "drop_oldest": the newest verdicts are the
ones a running line acts on). Expired messages (MQTT 5 message expiry) are counted apart.

Refused messages (an MQTT 5 PUBACK with a failure reason code, e.g. 0x87 "Not authorized" from
an ACL that does not let this station's user write its topic) are never deleted: `refuse` moves
them into the ``refused`` table (a dead-letter queue, with the reason code and time) and counts
them in ``refused_total``. `requeue_refused` puts them back in front of the queue with their
original ids, so they are sent again, in order, once the configuration is fixed (the publisher
does this at every start: fixing a username or ACL means restarting the station anyway).

One process owns an outbox file at a time (an flock on ``<file>.lock``, released by the kernel
when the process dies, even by SIGKILL). All methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 2  # 2: the `refused` dead-letter table (a v1 file is upgraded in place)
_COUNTERS = (
    "put_total", "acked_total", "dropped_total", "expired_total", "refused_total", "sequence",
)  # fmt: skip


class OutboxError(RuntimeError):
    """The outbox file cannot be used (locked by another process, corrupt, wrong version)."""


@dataclass(frozen=True)
class OutboxMessage:
    """One stored message. `created` is wall-clock epoch seconds (for message expiry)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefusedMessage:
    """A message the broker refused, kept in the dead-letter table."""

    message: OutboxMessage
    reason_code: int
    reason: str
    refused_at: float  # wall-clock epoch seconds


class Outbox:
    """Durable, bounded, thread-safe FIFO of MQTT messages in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike,
        max_messages: int = 100_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.RLock()
        self._last_full_warning = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_file_lock()
        try:
            self._db = self._open(synchronous)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._count = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        self._refused = self._db.execute("SELECT COUNT(*) FROM refused").fetchone()[0]

    # -- setup -----------------------------------------------------------------------------

    def _acquire_file_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise OutboxError(
                f"outbox {self.path} is in use by another process (pid {owner}); stop it or "
                "give this station its own outbox.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def _open(self, synchronous: str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                db.close()
                raise OutboxError(
                    f"outbox {self.path} was written by a newer trd-edge (format {version}); "
                    "upgrade trd-edge or move the file aside"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    topic TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    qos INTEGER NOT NULL,
                    retain INTEGER NOT NULL,
                    created REAL NOT NULL,
                    properties TEXT NOT NULL DEFAULT '{}'
                );
                CREATE TABLE IF NOT EXISTS counters (
                    name TEXT PRIMARY KEY,
                    value INTEGER NOT NULL
                );
                CREATE TABLE IF NOT EXISTS refused (
                    id INTEGER PRIMARY KEY,
                    topic TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    qos INTEGER NOT NULL,
                    retain INTEGER NOT NULL,
                    created REAL NOT NULL,
                    properties TEXT NOT NULL DEFAULT '{}',
                    reason_code INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    refused_at REAL NOT NULL
                );
                """
            )
            db.executemany(
                "INSERT OR IGNORE INTO counters(name, value) VALUES (?, 0)",
                [(n,) for n in _COUNTERS],
            )
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            return db
        except sqlite3.DatabaseError as exc:
            raise OutboxError(
                f"outbox {self.path} is not a usable SQLite database ({exc}); move it aside "
                "(its undelivered verdicts are lost) and restart"
            ) from None

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> int:
        """Store a message durably and return its id (ids only grow, never reused)."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        props = json.dumps(properties or {})
        with self._lock:
            self._check_open()
            dropped = 0
            with self._transaction():
                cur = self._db.execute(
                    "INSERT INTO messages(topic, payload, qos, retain, created, properties) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), time.time(), props),
                )
                new_id = cur.lastrowid
                overflow = self._count + 1 - self.max_messages
                if overflow > 0:
                    dropped = self._db.execute(
                        "DELETE FROM messages WHERE id IN "
                        "(SELECT id FROM messages ORDER BY id LIMIT ?)",
                        (overflow,),
                    ).rowcount
                    self._bump("dropped_total", dropped)
                self._bump("put_total", 1)
            self._count += 1 - dropped
            if dropped:
                self._warn_full(dropped)
            assert new_id is not None
            return new_id

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the caller holds ``self._lock``): BEGIN IMMEDIATE takes the
        database's write lock up front (no lock upgrade half-way); any error rolls back."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_open(self) -> None:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed")

    def _bump(self, name: str, by: int) -> None:
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (by, name))

    def _warn_full(self, dropped: int) -> None:
        now = time.monotonic()
        if now - self._last_full_warning >= 10.0:
            self._last_full_warning = now
            log.warning(
                "outbox %s is full (%d messages): dropped the oldest (policy drop_oldest); "
                "%d dropped in total",
                self.path,
                self.max_messages,
                self.dropped_total,
            )

    def _delete(self, ids: Iterable[int], counter: str) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._lock:
            self._check_open()
            with self._transaction():
                removed = 0
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    marks = ",".join("?" * len(part))
                    removed += self._db.execute(
                        f"DELETE FROM messages WHERE id IN ({marks})", part
                    ).rowcount
                self._bump(counter, removed)
            self._count -= removed
            return removed

    def ack(self, message_id: int) -> bool:
        """Delete a delivered message. False when it was already gone (acked or dropped)."""
        return self._delete([message_id], "acked_total") == 1

    def ack_many(self, message_ids: Iterable[int]) -> int:
        """Delete several delivered messages in one transaction; returns how many existed."""
        return self._delete(message_ids, "acked_total")

    def expire(self, message_id: int) -> bool:
        """Delete a message whose MQTT 5 expiry passed before it could be sent (counted)."""
        return self._delete([message_id], "expired_total") == 1

    def refuse(self, refusals: Iterable[tuple[int, int, str]]) -> int:
        """Move refused messages ``(id, reason_code, reason)`` to the dead-letter table.

        One transaction; counted in ``refused_total``. Returns how many were moved (a message
        already gone, e.g. dropped when the outbox was full, is skipped).
        """
        rows = list(refusals)
        if not rows:
            return 0
        now = time.time()
        with self._lock:
            self._check_open()
            with self._transaction():
                moved = 0
                for msg_id, code, reason in rows:
                    moved += self._db.execute(
                        "INSERT OR REPLACE INTO refused(id, topic, payload, qos, retain, created, "
                        "properties, reason_code, reason, refused_at) SELECT id, topic, payload, "
                        "qos, retain, created, properties, ?, ?, ? FROM messages WHERE id = ?",
                        (int(code), reason, now, msg_id),
                    ).rowcount
                    self._db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
                self._bump("refused_total", moved)
            self._count -= moved
            self._refused += moved
            return moved

    def refused(self, n: int = 100) -> list[RefusedMessage]:
        """Up to `n` oldest refused messages (the dead-letter table), in order."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, properties, reason_code, "
                "reason, refused_at FROM refused ORDER BY id LIMIT ?",
                (n,),
            ).fetchall()
        return [
            RefusedMessage(
                OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], json.loads(r[6])),
                r[7],
                r[8],
                r[9],
            )
            for r in rows
        ]

    def requeue_refused(self) -> int:
        """Put every refused message back into the queue (original ids, so in order)."""
        with self._lock:
            self._check_open()
            with self._transaction():
                moved = self._db.execute(
                    "INSERT OR IGNORE INTO messages(id, topic, payload, qos, retain, created, "
                    "properties) SELECT id, topic, payload, qos, retain, created, properties "
                    "FROM refused"
                ).rowcount
                self._db.execute("DELETE FROM refused")
            self._count += moved
            self._refused = 0
            return moved

    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest waiting message was stored; None when nothing waits."""
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
        return None if row is None else max(0.0, time.time() - float(row[0]))

    @property
    def refused_count(self) -> int:
        """Messages in the dead-letter table now (refused by the broker, kept)."""
        with self._lock:
            return self._refused

    def next_sequence(self) -> int:
        """The next value of a persistent per-outbox counter (0, 1, 2, ...; survives restarts).

        Verdicts take their `sequence` from here so subscribers can spot duplicates even across
        a publisher restart.
        """
        with self._lock:
            self._check_open()
            with self._transaction():
                value = self._db.execute(
                    "SELECT value FROM counters WHERE name = 'sequence'"
                ).fetchone()[0]
                self._bump("sequence", 1)
            return int(value)

    # -- reading ---------------------------------------------------------------------------

    def peek(self, n: int = 100, after_id: int = 0) -> list[OutboxMessage]:
        """Up to `n` oldest messages with id > `after_id`, in order, without removing them."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, properties FROM messages "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, n),
            ).fetchall()
        return [
            OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], json.loads(r[6]))
            for r in rows
        ]

    def __len__(self) -> int:
        with self._lock:
            return self._count

    @property
    def counters(self) -> dict[str, int]:
        """Persistent counters: put/acked/dropped/expired/refused ``_total`` and ``sequence``."""
        with self._lock:
            self._check_open()
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    @property
    def dropped_total(self) -> int:
        """Messages deleted unsent because the outbox was full (persistent)."""
        return self.counters["dropped_total"]

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and release the file lock (idempotent)."""
        with self._lock:
            if self._db is None:
                return
            self._db.close()
            self._db = None  # type: ignore[assignment]
            os.close(self._lock_fd)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Outbox({str(self.path)!r}, waiting={self._count}, refused={self._refused}, "
            f"max={self.max_messages})"
        )
