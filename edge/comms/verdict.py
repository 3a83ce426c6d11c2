"""Messages a station publishes: the per-frame verdict, its status and its metrics.

These pydantic models are the wire contract with the MES. The verdict's JSON Schema is generated
from `Verdict` and shipped as `edge/schemas/verdict.schema.json` (a test keeps the two equal);
`trd-edge schema` prints it. Bump `SCHEMA_VERSION` on any change a subscriber could notice.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://trd-edge.invalid/schemas/verdict.schema.json"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "verdict.schema.json"
# The latency stages the run loop reports (other keys are allowed, e.g. a backend's own split).
LATENCY_STAGES = ("capture", "preprocess", "inference", "postprocess", "publish", "total")


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime (what `host_timestamp` expects)."""
    return datetime.now(timezone.utc)


def software_version() -> str:
    """The installed trd-edge version, for status messages ("unknown" when not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("trd-edge")
    except PackageNotFoundError:
        return "unknown"


class _Wire(BaseModel):
    """Strict base for wire messages: unknown keys are errors, NaN/inf are not valid JSON."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, populate_by_name=True, serialize_by_alias=True
    )

    def to_json(self) -> bytes:
        """The UTF-8 JSON payload exactly as published."""
        return self.model_dump_json(by_alias=True).encode("utf-8")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


class DefectRegion(_Wire):
    """One connected region above the threshold, as a box in original-image pixels."""

    x: int = Field(ge=0, description="left edge of the bounding box, original-image pixels")
    y: int = Field(ge=0, description="top edge of the bounding box, original-image pixels")
    w: int = Field(ge=1, description="box width in original-image pixels")
    h: int = Field(ge=1, description="box height in original-image pixels")
    area_px: int = Field(ge=0, description="pixels of the region itself (not of its box)")
    area_fraction: float = Field(ge=0.0, le=1.0, description="area_px / image area")
    peak_score: float = Field(description="highest fused anomaly score inside the region")


class ModelRef(_Wire):
    """Which model produced a verdict."""

    id: str = Field(min_length=1, description="model bundle id")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the ONNX graph the bundle ships"
    )
    variant: str = Field(description="what ran, e.g. 'wide_resnet50_2-256-depth/onnxruntime-fp32'")


class ModalityScores(_Wire):
    """Image-level score per modality, after normalisation with the bundle's statistics."""

    rgb: float = Field(description="RGB branch image score")
    d3: float = Field(alias="3d", description="3D branch (depth or normal image) image score")


class Verdict(_Wire):
    """The decision for one camera frame, published on `<prefix>verdict` with QoS 1.

    `sequence` grows by one per verdict of a station (also across restarts, see
    `Outbox.next_sequence`): a subscriber drops a message whose (station, sequence) it has seen,
    which is how QoS 1 redeliveries are told apart from new verdicts.
    """

    schema_version: Literal["1.0"] = Field(
        default=SCHEMA_VERSION, description="version of this message format"
    )
    station: str = Field(min_length=1, description="station id")
    sequence: int = Field(ge=0, description="monotonic per station; duplicates share it")
    frame_number: int = Field(ge=0, description="camera frame number")
    camera_timestamp_ms: float | None = Field(
        default=None, description="camera timestamp in ms (device clock), null when unknown"
    )
    host_timestamp: AwareDatetime = Field(
        description="host time of capture, ISO-8601 in UTC", examples=["2026-11-27T09:30:00Z"]
    )
    image_score: float = Field(description="fused image-level anomaly score")
    scores: ModalityScores = Field(description="image score per modality")
    threshold: float = Field(description="decision threshold on image_score")
    decision: Literal["ok", "defect"] = Field(description="'defect' when the part is rejected")
    regions: list[DefectRegion] = Field(
        default_factory=list, description="defect regions, largest first"
    )
    model: ModelRef = Field(description="the model that produced this verdict")
    latency_ms: dict[str, float] = Field(
        default_factory=dict,
        description="milliseconds per stage: " + ", ".join(LATENCY_STAGES),
    )
    extra: dict[str, Any] | None = Field(default=None, description="free-form additions")

    @field_validator("host_timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return _to_utc(value)

    @field_validator("latency_ms")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"latencies must be >= 0 ms, got {bad}")
        return value


class StatusMessage(_Wire):
    """Retained on `<prefix>status`: `online` after connect, `offline` as Last Will,
    `stopped` after a clean shutdown."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    state: Literal["online", "offline", "stopped"]
    station: str
    model: ModelRef | None = Field(default=None, description="loaded model, if any")
    version: str = Field(description="trd-edge software version")
    timestamp: AwareDatetime = Field(
        description="when the message was made (for `offline`: when the will was registered)"
    )

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


class MetricsMessage(_Wire):
    """Periodic counters on `<prefix>metrics` (QoS 0, not retained)."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    station: str
    timestamp: AwareDatetime
    counters: dict[str, float] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return _to_utc(value)


_MESSAGES: dict[str, type[_Wire]] = {
    "verdict": Verdict,
    "status": StatusMessage,
    "metrics": MetricsMessage,
}


def message_json_schema(kind: str = "verdict") -> dict:
    """JSON Schema (draft 2020-12) of one message kind: verdict, status or metrics."""
    if kind not in _MESSAGES:
        raise ValueError(f"unknown message kind {kind!r}; choose one of {sorted(_MESSAGES)}")
    schema = _MESSAGES[kind].model_json_schema(by_alias=True, mode="serialization")
    head = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if kind == "verdict":
        head["$id"] = SCHEMA_ID
    return {**head, **schema}


def verdict_json_schema() -> dict:
    """JSON Schema of `Verdict` as shipped in `edge/schemas/verdict.schema.json`."""
    return message_json_schema("verdict")


def schema_text(schema: dict) -> str:
    """The canonical text form of a schema (stable key order, trailing newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_verdict_schema(path: Path = SCHEMA_FILE) -> Path:
    """Regenerate the shipped schema file (run after changing `Verdict`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(verdict_json_schema()), encoding="utf-8")
    return path


def print_schema(args: argparse.Namespace | None = None) -> int:
    """`trd-edge schema [--message verdict|status|metrics]`: print a JSON Schema to stdout."""
    kind = getattr(args, "message", None) or "verdict"
    print(schema_text(message_json_schema(kind)), end="")
    return 0


if __name__ == "__main__":  # python -m edge.comms.verdict  -> regenerate the shipped schema
    print(write_verdict_schema())
