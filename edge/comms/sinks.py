"""Where verdicts go: MQTT (durable outbox) and/or the console."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Protocol, TextIO

import cv2
import numpy as np

from edge.comms.mqtt import MqttPublisher
from edge.comms.verdict import DefectRegion, ModalityScores, ModelRef, Verdict
from edge.inspector import Inspection


def make_verdict(ins: Inspection, station: str, sequence: int, model: ModelRef) -> Verdict:
    """Turn an inspection into the wire message; boxes are scaled to camera pixels.

    `latency_ms` holds every stage up to the verdict itself and `total` (capture start to
    message built); the publish stage cannot time itself, so the run loop and `bench` record it
    after the hand-off.
    """
    h, w = ins.frame.size
    s = ins.fused.shape[0]
    # the maps cover view_camera (the ROI) of the full-resolution camera image
    x0, y0, x1, y1 = ins.view_camera or (0.0, 0.0, float(w), float(h))
    sx, sy = (x1 - x0) / s, (y1 - y0) / s
    regions = [
        DefectRegion(
            x=int(x0 + r.x * sx), y=int(y0 + r.y * sy),
            w=max(1, round(r.w * sx)), h=max(1, round(r.h * sy)),
            area_px=round(r.area_px * sx * sy), area_fraction=min(1.0, r.area_px / (s * s)),
            peak_score=float(r.peak),
        )
        for r in ins.regions
    ]
    latency = {k: float(v) for k, v in ins.timings_ms.items()}
    latency["total"] = (time.time() - ins.frame.host_timestamp) * 1000.0 + ins.frame.capture_ms
    gt = {k: ins.frame.meta[k] for k in ("label", "defect_type") if k in ins.frame.meta}
    extra: dict = {"ground_truth": gt} if gt else {}
    if ins.no_part:  # a "part" bundle found no part: the frame was scored (edge.inspector)
        extra["scored_on"] = "frame (no part in the foreground)"
    if ins.part_at_edge:  # the ROI may cut the part (edge.processing.preprocess, at_edge)
        extra["part_at_edge"] = (
            "the part reaches the edge of the model's view (the bundle's ROI): part of it may "
            "be outside; place parts where the training parts lay, or retrain with a wider --roi"
        )
    return Verdict(
        station=station,
        sequence=sequence,
        frame_number=max(0, int(ins.frame.frame_number)),
        camera_timestamp_ms=ins.frame.camera_timestamp_ms,
        host_timestamp=datetime.fromtimestamp(ins.frame.host_timestamp, tz=timezone.utc),
        image_score=ins.image_score,
        scores=ModalityScores.model_validate({"rgb": ins.rgb_score, "3d": ins.x3d_score}),
        threshold=ins.threshold,
        decision="defect" if ins.is_defect else "ok",
        regions=regions,
        model=model,
        latency_ms=latency,
        extra=extra or None,
    )


def heatmap_image(ins: Inspection, fmt: str = "jpeg", quality: int = 85) -> bytes:
    """The fused map as a colour overlay on the camera image (for the `heatmap` topic)."""
    h, w = ins.frame.size
    x0, y0, x1, y1 = (int(round(v)) for v in (ins.view_frame or (0, 0, w, h)))
    rgb = ins.frame.rgb[y0:y1, x0:x1]  # the part of the frame the maps cover
    m = ins.fused
    lo, hi = min(float(m.min()), ins.threshold - 1.0), max(float(m.max()), ins.threshold + 1.0)
    norm = np.clip((m - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(cv2.resize(norm, (rgb.shape[1], rgb.shape[0])), cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.5, heat, 0.5, 0)
    ext = ".png" if fmt == "png" else ".jpg"
    params = [] if fmt == "png" else [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, buf = cv2.imencode(ext, overlay, params)
    if not ok:
        raise RuntimeError("heatmap encoding failed")
    return buf.tobytes()


class Sink(Protocol):
    """Receives each verdict in order."""

    def emit(self, verdict: Verdict, ins: Inspection) -> None: ...


class MqttSink:
    """Verdicts into the publisher's durable outbox (QoS 1); optional heatmaps (QoS 0)."""

    def __init__(self, publisher: MqttPublisher, heatmaps: bool = False, fmt: str = "jpeg",
                 quality: int = 85) -> None:
        self.publisher = publisher
        self.heatmaps = heatmaps
        self.fmt, self.quality = fmt, quality

    def emit(self, verdict: Verdict, ins: Inspection) -> None:
        self.publisher.publish_verdict(verdict)
        if self.heatmaps:
            self.publisher.publish_heatmap(heatmap_image(ins, self.fmt, self.quality),
                                           verdict.sequence)


class ConsoleSink:
    """One line per verdict, for people watching a terminal (the demo)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, verdict: Verdict, ins: Inspection) -> None:
        mark = "DEFECT" if verdict.decision == "defect" else "ok    "
        truth = (verdict.extra or {}).get("ground_truth", {}).get("defect_type")
        where = (
            f" at x={verdict.regions[0].x} y={verdict.regions[0].y} "
            f"({verdict.regions[0].w}x{verdict.regions[0].h})"
            if verdict.regions
            else ""
        )
        print(
            f"#{verdict.sequence:<5} frame {verdict.frame_number:<6} {mark} "
            f"score {verdict.image_score:7.2f} / thr {verdict.threshold:.2f} "
            f"(rgb {verdict.scores.rgb:6.2f}, 3d {verdict.scores.d3:6.2f}){where}"
            + (f"  [truth: {truth}]" if truth else "")
            + f"  {verdict.latency_ms.get('total', 0.0):.0f} ms",
            file=self.stream,
            flush=True,
        )
