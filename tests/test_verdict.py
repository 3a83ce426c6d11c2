"""Verdict / status / metrics messages and the shipped JSON Schema."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edge.comms.verdict import (
    SCHEMA_FILE,
    MetricsMessage,
    StatusMessage,
    Verdict,
    message_json_schema,
    print_schema,
    schema_text,
    verdict_json_schema,
)


def make_verdict(**changes) -> Verdict:
    fields = dict(
        station="st1",
        sequence=7,
        frame_number=42,
        camera_timestamp_ms=1234.5,
        host_timestamp=datetime(2026, 11, 27, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        image_score=3.2,
        scores={"rgb": 1.5, "3d": 2.5},
        threshold=2.0,
        decision="defect",
        regions=[dict(x=3, y=4, w=10, h=6, area_px=40, area_fraction=40 / 4096, peak_score=5.0)],
        model=dict(id="puck-rn18", sha256="ab" * 32, variant="resnet18-64-depth/onnxruntime"),
        latency_ms={"capture": 1.0, "inference": 20.0, "total": 25.0},
    )
    fields.update(changes)
    return Verdict(**fields)


def test_verdict_round_trips_and_matches_its_schema():
    jsonschema = pytest.importorskip("jsonschema")  # dev dependency
    v = make_verdict()
    wire = json.loads(v.to_json())
    jsonschema.validate(wire, verdict_json_schema())
    assert wire["scores"] == {"rgb": 1.5, "3d": 2.5}  # the alias is what goes on the wire
    # Host timestamps are normalised to UTC, ISO-8601.
    assert wire["host_timestamp"].startswith("2026-11-27T08:00:00")
    assert datetime.fromisoformat(wire["host_timestamp"]).utcoffset() == timedelta(0)
    assert Verdict.model_validate_json(v.to_json()) == v


def test_schema_rejects_what_the_model_rejects():
    jsonschema = pytest.importorskip("jsonschema")  # dev dependency
    schema = verdict_json_schema()
    good = json.loads(make_verdict().to_json())
    for key, bad in [
        ("decision", "maybe"),
        (
            "regions",
            [
                {
                    "x": -1,
                    "y": 0,
                    "w": 1,
                    "h": 1,
                    "area_px": 1,
                    "area_fraction": 0.1,
                    "peak_score": 1,
                }
            ],
        ),
        ("surprise", 1),
    ]:
        doc = dict(good, **{key: bad})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)
        with pytest.raises(ValidationError):
            Verdict.model_validate(doc)
    for required in ("station", "sequence", "decision", "model", "scores"):
        doc = {k: v for k, v in good.items() if k != required}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


def test_bad_values_are_rejected():
    with pytest.raises(ValidationError, match="timezone"):
        make_verdict(host_timestamp=datetime(2026, 1, 1))  # naive: ambiguous on the wire
    with pytest.raises(ValidationError):
        make_verdict(image_score=float("nan"))  # NaN is not JSON
    with pytest.raises(ValidationError, match="latencies"):
        make_verdict(latency_ms={"inference": -1.0})
    with pytest.raises(ValidationError):
        make_verdict(model=dict(id="m", sha256="not-a-hash", variant="x"))


def test_shipped_schema_file_equals_generated():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(verdict_json_schema()), (
        "edge/schemas/verdict.schema.json is stale: run `python -m edge.comms.verdict`"
    )


def test_print_schema_outputs_the_schema(capsys):
    assert print_schema(argparse.Namespace()) == 0
    assert json.loads(capsys.readouterr().out) == verdict_json_schema()
    assert print_schema(argparse.Namespace(message="status")) == 0
    status_schema = json.loads(capsys.readouterr().out)
    assert set(status_schema["properties"]["state"]["enum"]) == {"online", "offline", "stopped"}
    with pytest.raises(ValueError, match="unknown message kind"):
        message_json_schema("nope")


def test_status_and_metrics_messages_validate():
    jsonschema = pytest.importorskip("jsonschema")  # dev dependency
    now = datetime.now(timezone.utc)
    status = StatusMessage(state="online", station="st1", version="0.1.0", timestamp=now)
    jsonschema.validate(json.loads(status.to_json()), message_json_schema("status"))
    with pytest.raises(ValidationError):
        StatusMessage(state="sleeping", station="st1", version="0.1.0", timestamp=now)
    metrics = MetricsMessage(station="st1", timestamp=now, counters={"frames": 3})
    jsonschema.validate(json.loads(metrics.to_json()), message_json_schema("metrics"))
