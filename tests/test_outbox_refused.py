"""The outbox's dead-letter table: refused messages are kept, counted, and queued again in order."""

from __future__ import annotations

import sqlite3

from edge.comms.outbox import Outbox


def test_refuse_keeps_counts_and_requeues_in_order(tmp_path):
    path = tmp_path / "o.db"
    with Outbox(path) as box:
        ids = [box.put("trd/s2/verdict", f"m{i}") for i in range(5)]
        assert box.refuse([(ids[1], 0x87, "Not authorized"), (ids[3], 0x87, "Not authorized")]) == 2
        assert len(box) == 3 and box.refused_count == 2
        assert [m.id for m in box.peek(10)] == [ids[0], ids[2], ids[4]]  # never sent twice
        kept = box.refused(10)
        assert [(r.message.payload, r.reason_code) for r in kept] == [(b"m1", 0x87), (b"m3", 0x87)]
        assert box.counters["refused_total"] == 2 and box.counters["acked_total"] == 0
        assert box.refuse([(999, 0x87, "gone")]) == 0  # a message no longer there is skipped
    with Outbox(path) as box:  # kept across a restart
        assert box.refused_count == 2
        assert box.requeue_refused() == 2
        assert box.refused_count == 0 and len(box) == 5
        assert [m.payload for m in box.peek(10)] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert box.counters["refused_total"] == 2  # the history stays counted
        assert box.oldest_age_s() is not None and box.oldest_age_s() >= 0.0


def test_a_version_1_outbox_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:  # what trd-edge wrote before the refused table existed
        db.executescript(
            """
            CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,
                created REAL NOT NULL, properties TEXT NOT NULL DEFAULT '{}');
            CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO counters VALUES ('put_total', 1), ('acked_total', 0),
                ('dropped_total', 0), ('expired_total', 0), ('sequence', 7);
            INSERT INTO messages(topic, payload, qos, retain, created)
                VALUES ('trd/s/verdict', x'7b7d', 1, 0, 0.0);
            PRAGMA user_version = 1;
            """
        )
    with Outbox(path) as box:
        assert len(box) == 1 and box.refused_count == 0
        assert box.counters["refused_total"] == 0 and box.next_sequence() == 7
        assert box.refuse([(box.peek(1)[0].id, 0x97, "Quota exceeded")]) == 1
