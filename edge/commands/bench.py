"""``trd-edge bench``: per-stage latency of the station pipeline, per backend (torch-free).

    trd-edge bench --bundle DIR [--backend onnxruntime --backend onnxruntime-fp16 ...]
        [--camera SOURCE] [--frames N] [--warmup N] [--json OUT] [--compare BUNDLE2]
        [--peak-tflops X] [--publish auto|mqtt|outbox] [--ui]

Each frame goes through the very code a station runs (`edge.inspector.Inspector`, the verdict
builder and a verdict sink), one frame at a time, and every stage is timed:

capture (the source's own work on a frame: filters, registration, colour resize) → preprocess
→ h2d → inference → d2h (the backend's own split; 0 on CPU where copies are not separate) →
postprocess (normalise, fuse, smooth, score, regions) → publish (hand-off to the sink: a durable
outbox write, with a local mosquitto behind it when one can be started — the output says which).

``overhead`` is every stage but inference, per frame: the CPU work around the model that a
station pays on every frame; ``overhead_per_inference`` is the ratio of the medians (above 1,
the model waits for the CPU). ``source_wait`` (the camera's frame period, or a recording's
decoder in librealsense's threads) is reported apart: it is not work of the station. OpenCV
runs the stages on ``--stage-threads`` threads (default 1, as on a Jetson whose cores also
serve capture, MQTT and the OS).

``end_to_end`` is the wall time from the start of the read to the end of the hand-off;
``model_only`` is the backend call alone (h2d + inference + d2h). ``fps`` is frames divided by
the summed end-to-end time (single-threaded: the run loop overlaps stages, so a station
can do better). The model's FLOPs are counted from the ONNX graph (Conv, ConvTranspose,
MatMul and Gemm multiply-accumulates from shapes; 1 MAC = 2 FLOPs) and, when the device's peak
is known or given (``--peak-tflops``), the fraction of peak that the model-only median reaches
is reported. ``--ui`` also hands every verdict to the live view (edge/ui/) with a page open,
as ``trd-edge run --ui`` does, and reports that hand-off per frame (``ui hand-off``). With two backends or ``--compare BUNDLE2`` the ratios of the medians are printed:
absolute times on shared machines are noisy, ratios from one invocation less so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.inspector import STAGES, Inspector
from edge.runloop import latency_summary

__all__ = [
    "BenchResult",
    "add_bench_args",
    "bench_backend",
    "count_onnx_macs",
    "latency_summary",
    "machine_info",
    "parse_backend_spec",
    "run_bench",
]

log = logging.getLogger(__name__)

BACKEND_SPECS = (
    "auto",
    "onnxruntime",
    "onnxruntime-fp16",
    "onnxruntime-fp32",
    "onnxruntime-int8",
    "tensorrt",
    "tensorrt-fp16",
    "tensorrt-fp32",
    "tensorrt-int8",
)
# Dense datasheet peaks (TFLOPS) by GPU name fragment: fp16 = tensor cores, fp32 = CUDA cores.
# NVIDIA H100 datasheet (SXM5: 989 FP16 dense / 67 FP32; PCIe: 756 / 51); H200 = H100 SXM.
KNOWN_PEAKS_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp16": 756.0, "fp32": 51.0},
    "H100": {"fp16": 989.0, "fp32": 67.0},
    "H200": {"fp16": 989.0, "fp32": 67.0},
}


# --------------------------------------------------------------------------- backends


def parse_backend_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"onnxruntime-fp16"`` → ``("onnxruntime", {"precision": "fp16"})``; ``:DEVICE`` suffix
    sets the onnxruntime device (``onnxruntime:cuda``). Raises ValueError for unknown specs."""
    text = spec.strip().lower()
    head, _, device = text.partition(":")
    name, _, precision = head.partition("-")
    if name not in ("auto", "onnxruntime", "tensorrt") or precision not in (
        "", "fp16", "fp32", "int8"
    ):
        raise ValueError(
            f"unknown backend {spec!r}; use one of {', '.join(BACKEND_SPECS)} "
            "(optionally :cpu|:cuda|:tensorrt for onnxruntime's device)"
        )
    opts: dict[str, Any] = {}
    if precision:
        opts["precision"] = precision
    if device:
        opts["device"] = device
    return name, opts


# --------------------------------------------------------------------------- FLOPs


def _shape_of(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return None if any(d <= 0 for d in dims) else dims


def count_onnx_macs(path: str | os.PathLike) -> dict[str, Any]:
    """Multiply-accumulates per run of an ONNX graph, from its shapes (needs ``onnx``).

    Conv: ``prod(output) · Cin/groups · prod(kernel)``; ConvTranspose: ``prod(input) ·
    Cout/groups · prod(kernel)``; MatMul: ``prod(output) · K``; Gemm: ``M · N · K``. Other ops
    (BatchNorm, activations, the cosine head, resizes) are not counted, as in trd-model.md §11.
    Large weight payloads are dropped before shape inference: only their dims matter.
    Returns ``{"macs", "flops", "by_op": {op: macs}, "uncounted_nodes": n}``.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(os.fspath(path), load_external_data=False)
    for init in model.graph.initializer:
        if init.raw_data and len(init.raw_data) > 4096:
            init.ClearField("raw_data")  # dims stay; saves GBs for the full-size graph
    inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        s = _shape_of(vi)
        if s is not None:
            shapes[vi.name] = s
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    by_op: dict[str, int] = {}
    missing = 0
    for node in g.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        ins = [shapes.get(n) for n in node.input[:2]]
        out = shapes.get(node.output[0])
        if ins[0] is None or ins[1] is None or out is None:
            missing += 1
            continue
        x, w = ins
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            macs = math.prod(out) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            macs = math.prod(x) * math.prod(w[1:])
        elif node.op_type == "MatMul":
            macs = math.prod(out) * x[-1]
        else:
            k = x[0] if attrs.get("transA", 0) else x[-1]
            macs = math.prod(out) * k
        by_op[node.op_type] = by_op.get(node.op_type, 0) + int(macs)
    total = sum(by_op.values())
    return {"macs": total, "flops": 2 * total, "by_op": by_op, "uncounted_nodes": missing}


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def _gpus() -> list[dict[str, str]]:
    gpus: list[dict[str, str]] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if parts and parts[0]:
                    gpus.append(
                        {
                            "name": parts[0],
                            "memory": parts[1] if len(parts) > 1 else "",
                            "driver": parts[2] if len(parts) > 2 else "",
                        }
                    )
    model = Path("/proc/device-tree/model")
    if not gpus and model.is_file():  # Jetson: the module name identifies the integrated GPU
        with contextlib.suppress(OSError):
            name = model.read_text(errors="replace").strip("\x00\n ")
            if "jetson" in name.lower() or "orin" in name.lower():
                gpus.append({"name": name, "memory": "shared", "driver": ""})
    return gpus


def machine_info() -> dict[str, Any]:
    """Host, CPU model and cores, GPUs and the versions of the runtime packages."""
    import cv2

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": _gpus(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    return info


def _known_peak(gpus: list[dict[str, str]], precision: str) -> float | None:
    for gpu in gpus:
        for key, peaks in KNOWN_PEAKS_TFLOPS.items():
            if key.lower() in gpu["name"].lower():
                return peaks.get(precision)
    return None


# --------------------------------------------------------------------------- statistics


# --------------------------------------------------------------------------- publish stage


@dataclass
class PublishStage:
    """The verdict hand-off being timed: an outbox write, optionally with a live broker."""

    mode: str  # description printed and stored in the JSON
    sink: Any
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()


@contextlib.contextmanager
def publish_stage(kind: str, workdir: Path, model_ref) -> Iterator[PublishStage]:
    """``kind`` "auto" (MQTT if mosquitto can be started, else outbox), "mqtt" or "outbox"."""
    from edge.comms.outbox import Outbox
    from edge.config import load_config

    stage: PublishStage | None = None
    try:
        broker = None
        if kind in ("auto", "mqtt"):
            from edge.comms.local_broker import MOSQUITTO_HINT, start_local_broker

            broker = start_local_broker(data_dir=workdir / "broker")
            if broker is None and kind == "mqtt":
                raise RuntimeError(f"--publish mqtt: no mosquitto available ({MOSQUITTO_HINT})")
        config = load_config(
            None,
            env={},
            overrides={
                "station": "bench",
                "mqtt.url": broker.url if broker else None,
                "outbox.path": str(workdir / "outbox.sqlite3"),
            },
        )
        outbox = Outbox(config.outbox_path(), config.outbox.max_messages, config.outbox.synchronous)
        if broker is not None:
            from edge.comms.mqtt import MqttPublisher
            from edge.comms.sinks import MqttSink

            publisher = MqttPublisher(config, outbox, model=model_ref).start()
            stage = PublishStage(
                f"MQTT sink → durable outbox (SQLite synchronous={config.outbox.synchronous}) "
                f"→ local mosquitto {broker.url}, QoS 1",
                MqttSink(publisher),
                [broker.cleanup, outbox.close, lambda: publisher.close(timeout=5.0)],
            )
        else:
            stage = PublishStage(
                f"durable outbox alone (SQLite synchronous={config.outbox.synchronous}); no "
                "broker (mosquitto not available or --publish outbox)",
                _OutboxSink(outbox, config.topic("verdict")),
                [outbox.close],
            )
        yield stage
    finally:
        if stage is not None:
            stage.close()


class _OutboxSink:
    """What the MQTT sink does before the network: the verdict committed to the outbox."""

    def __init__(self, outbox, topic: str) -> None:
        self.outbox, self.topic = outbox, topic

    def emit(self, verdict, ins) -> None:
        self.outbox.put(
            self.topic,
            verdict.to_json(),
            qos=1,
            retain=False,
            properties={"content_type": "application/json"},
        )


# --------------------------------------------------------------------------- one run


@dataclass
class BenchResult:
    """Per-stage milliseconds of one backend on one bundle."""

    label: str
    bundle: str
    model_id: str
    variant: str
    backend: dict[str, Any]
    precision: str
    stages_ms: dict[str, list[float]]
    end_to_end_ms: list[float]
    model_only_ms: list[float]
    source_wait_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    macs: dict[str, Any] | None = None
    peak_tflops: float | None = None
    ui_ms: list[float] = field(default_factory=list)  # `--ui`: the live view's hand-off

    @property
    def frames(self) -> int:
        return len(self.end_to_end_ms)

    @property
    def overhead_ms(self) -> list[float]:
        """Per frame: every stage but inference (capture, preprocess, copies, postprocess,
        publish) — the CPU work around the model that the station pays on every frame."""
        others = [v for k, v in self.stages_ms.items() if k != "inference"]
        return [float(sum(parts)) for parts in zip(*others, strict=True)] if others else []

    @property
    def overhead_ratio(self) -> float | None:
        """Median overhead / median inference (>1: the model waits for the CPU)."""
        inf = self.stages_ms.get("inference") or []
        if not inf or not self.overhead_ms:
            return None
        med = float(np.median(inf))
        return float(np.median(self.overhead_ms)) / med if med > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of one backend (see the module docstring)."""
        e2e = float(np.sum(self.end_to_end_ms))
        mo = latency_summary(self.model_only_ms)
        out: dict[str, Any] = {
            "bundle": self.bundle,
            "model_id": self.model_id,
            "variant": self.variant,
            "backend": self.backend,
            "precision": self.precision,
            "frames": self.frames,
            "stages": {k: latency_summary(v) for k, v in self.stages_ms.items()},
            "overhead": latency_summary(self.overhead_ms),
            "overhead_per_inference": self.overhead_ratio,
            "source_wait": latency_summary(self.source_wait_ms) if self.source_wait_ms else None,
            "end_to_end": latency_summary(self.end_to_end_ms),
            "model_only": mo,
            "fps": self.frames / (e2e / 1e3) if e2e > 0 else None,
            "model_fps": 1e3 / float(np.mean(self.model_only_ms)) if self.model_only_ms else None,
            "notes": self.notes,
            "ui_handoff": latency_summary(self.ui_ms) if self.ui_ms else None,
        }
        if self.macs is not None:
            flops = self.macs["flops"]
            out["macs_per_frame"] = self.macs["macs"]
            out["flops_per_frame"] = flops
            out["flops_by_op"] = {k: 2 * v for k, v in self.macs["by_op"].items()}
            achieved = flops / (mo["p50_ms"] / 1e3) / 1e12 if mo["p50_ms"] > 0 else None
            out["achieved_tflops"] = achieved
            out["peak_tflops"] = self.peak_tflops
            out["fraction_of_peak"] = (
                achieved / self.peak_tflops if achieved and self.peak_tflops else None
            )
        return out


def _inspector(bundle, backend) -> tuple[Inspector, list[str]]:
    from edge.processing.scoring import ScoreStats

    notes: list[str] = []
    stats = bundle.score_stats()
    thr = bundle.manifest.scoring.threshold
    if stats is None:
        stats = ScoreStats(
            rgb_mean=0.0,
            rgb_std=1.0,
            x3d_mean=0.0,
            x3d_std=1.0,
            n_maps=0,
            source="bench placeholder",
        )
        notes.append("bundle has no score statistics: placeholder normalisation (timing only)")
    if thr is None:
        thr = 1e9  # finite (verdicts refuse inf) and out of reach: no defect regions
        notes.append(
            "bundle has no threshold: placeholder 1e9, defect regions never extracted (timing only)"
        )
    return Inspector(bundle, backend, stats=stats, threshold=thr), notes


def bench_backend(
    bundle_dir: str | os.PathLike,
    backend_spec: str,
    camera: str,
    frames: int,
    warmup: int,
    publish,
    station: str = "bench",
    ui=None,
) -> BenchResult:
    """Time ``frames`` frames (after ``warmup``) of ``camera`` through one backend.

    ``ui``: an `edge.ui.LiveUi`; each verdict is also handed to it as the run loop does
    (`LiveView.on_verdict`), and that hand-off is timed apart (``ui_ms``).
    """
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.commands.run_cmd import model_ref
    from edge.comms.sinks import make_verdict
    from edge.sources import FrameTimeout, SourceIdle, open_source

    bundle = load_bundle(bundle_dir)
    name, opts = parse_backend_spec(backend_spec)
    backend = create_backend(name, bundle, **opts)
    try:
        desc = backend.describe()
        precision = str(desc.get("precision", backend.precision))
        ref = model_ref(bundle, f"{backend.name}-{precision}")
        inspector, notes = _inspector(bundle, backend)
        stages: dict[str, list[float]] = {s: [] for s in STAGES}
        e2e: list[float] = []
        model_only: list[float] = []
        source_wait: list[float] = []
        ui_ms_all: list[float] = []
        seq = 0
        idle_said = False
        from edge.sources import SourceOptions
        from edge.sources.acquisition import station_options

        source = open_source(camera, station_options(
            SourceOptions(), camera, bundle.manifest.acquisition, f"bundle {bundle.path.name}"))
        if inspector.attach(source):
            notes.append(f"camera registers depth at the working grid {inspector.working_grid}")
        with source:
            for i in range(warmup + frames):
                t0 = time.perf_counter()
                while True:
                    try:
                        frame = source.read(timeout_s=10.0)
                        break
                    except SourceIdle:  # averaging per stop: this part has had its frame
                        if not idle_said:
                            idle_said = True
                            log.info("waiting for the next part (averaging: one frame per "
                                     "stop); bench a still part with ?average_mode=continuous")
                    except FrameTimeout as exc:
                        raise RuntimeError(f"--camera {camera}: {exc}") from exc
                if frame is None:
                    notes.append(f"source ended after {i} frames ({max(0, i - warmup)} timed)")
                    break
                # capture = the station's own work on the frame (filters, registration,
                # colour resize: Frame.capture_ms); the wait for the camera's next frame or the
                # recording's decoder runs in librealsense's threads and is reported apart
                read_ms = (time.perf_counter() - t0) * 1e3
                capture_ms = float(frame.capture_ms) if frame.capture_ms else read_ms
                sample, pre_ms = inspector.prepare(frame)
                m_rgb, m_3d, t = inspector.infer(sample)
                ins = inspector.postprocess(
                    frame, m_rgb, m_3d, {"capture": capture_ms, "preprocess": pre_ms, **t},
                    sample,
                )
                t_pub = time.perf_counter()
                verdict = make_verdict(ins, station, seq, ref)
                publish.sink.emit(verdict, ins)
                t_end = time.perf_counter()
                if ui is not None:  # the run loop's on_verdict hook, after the sinks
                    ui.live.on_verdict(verdict, ins)
                    ui_ms = (time.perf_counter() - t_end) * 1e3
                seq += 1
                if i < warmup:
                    continue
                timings = dict(ins.timings_ms)
                timings["publish"] = (t_end - t_pub) * 1e3
                for s in STAGES:
                    stages[s].append(float(timings.get(s, 0.0)))
                source_wait.append(max(read_ms - capture_ms, 0.0))
                e2e.append((t_end - t0) * 1e3)
                if ui is not None:
                    ui_ms_all.append(ui_ms)
                model_only.append(float(backend.last_timing.total_ms))
        if not e2e:
            raise RuntimeError(
                f"--camera {camera} delivered no frame after the {warmup} warm-up frames; "
                "use a longer recording or fewer --warmup frames"
            )
        return BenchResult(
            label=f"{backend.name}-{precision}",
            bundle=str(bundle.path),
            model_id=bundle.model_id,
            variant=bundle.manifest.model.variant,
            backend=desc,
            precision=precision,
            stages_ms=stages,
            end_to_end_ms=e2e,
            model_only_ms=model_only,
            source_wait_ms=source_wait,
            ui_ms=ui_ms_all,
            notes=notes,
        )
    finally:
        backend.close()


# --------------------------------------------------------------------------- output


def format_table(result: BenchResult) -> str:
    """Per-stage table (ms) of one run, plus throughput and FLOPs."""
    d = result.as_dict()
    lines = [
        f"{result.label}  ({result.variant}, model {result.model_id}, {result.frames} frames)",
        f"  {'stage':<13}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   ms",
    ]
    rows = [
        *((s, d["stages"][s]) for s in STAGES),
        ("overhead", d["overhead"]),
        ("end_to_end", d["end_to_end"]),
        ("model_only", d["model_only"]),
    ]
    for name, st in rows:
        lines.append(
            f"  {name:<13}{st['p50_ms']:>9.2f}{st['p90_ms']:>9.2f}"
            f"{st['p99_ms']:>9.2f}{st['max_ms']:>9.2f}"
        )
    if d.get("source_wait"):
        w = d["source_wait"]
        lines.append(
            f"  {'(source wait)':<13}{w['p50_ms']:>9.2f}{w['p90_ms']:>9.2f}"
            f"{w['p99_ms']:>9.2f}{w['max_ms']:>9.2f}   not CPU work of the station: the "
            "camera's frame period or the recording's decoder"
        )
    ratio = d["overhead_per_inference"]
    lines.append(
        "  overhead = every stage but inference"
        + (f"; overhead / inference {ratio:.2f} (p50s)" if ratio is not None else "")
    )
    lines.append(
        f"  throughput   {d['fps']:.2f} frames/s end to end (sequential), "
        f"{d['model_fps']:.2f} frames/s model only"
    )
    if "flops_per_frame" in d:
        frac = d["fraction_of_peak"]
        lines.append(
            f"  model        {d['flops_per_frame'] / 1e9:.2f} GFLOPs/frame, "
            f"{d['achieved_tflops'] * 1e3:.1f} GFLOP/s at the model-only median"
            + (
                f", {frac:.1%} of a {d['peak_tflops']:g} TFLOPS peak"
                if frac
                else " (peak unknown: pass --peak-tflops)"
            )
        )
    if result.ui_ms:
        u = d["ui_handoff"]
        lines.append(
            f"  {'ui hand-off':<13}{u['p50_ms']:>9.3f}{u['p90_ms']:>9.3f}{u['p99_ms']:>9.3f}"
            f"{u['max_ms']:>9.3f}   the live view's cost on the loop's thread per frame "
            "(pictures are encoded in its own thread)"
        )
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def comparisons(results: list[BenchResult]) -> list[dict[str, Any]]:
    """Ratios of medians of every run against the first (>1: slower than the first)."""
    if len(results) < 2:
        return []
    base = results[0]
    out = []
    for r in results[1:]:
        out.append(
            {
                "baseline": base.label,
                "other": r.label,
                "end_to_end_p50_ratio": float(
                    np.median(r.end_to_end_ms) / np.median(base.end_to_end_ms)
                ),
                "model_only_p50_ratio": float(
                    np.median(r.model_only_ms) / np.median(base.model_only_ms)
                ),
            }
        )
    return out


def _unique_labels(results: list[BenchResult], several_bundles: bool) -> None:
    seen: dict[str, int] = {}
    for r in results:
        if several_bundles:
            r.label = f"{Path(r.bundle).name}/{r.label}"
        n = seen.get(r.label, 0)
        seen[r.label] = n + 1
        if n:
            r.label = f"{r.label}#{n + 1}"


# --------------------------------------------------------------------------- CLI


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trd-edge bench``."""
    parser.add_argument("--bundle", required=True, help="model bundle folder")
    parser.add_argument(
        "--backend",
        action="append",
        default=None,
        help=f"{' | '.join(BACKEND_SPECS)}; repeat to compare (default auto)",
    )
    parser.add_argument(
        "--camera",
        default=None,
        help="frame source (default: synthetic camera at the model's size)",
    )
    parser.add_argument("--frames", type=int, default=30, help="timed frames per backend")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    parser.add_argument("--json", dest="json_out", default=None, help="write the results here")
    parser.add_argument(
        "--compare",
        metavar="BUNDLE2",
        default=None,
        help="also run this bundle with the same backends and print the ratios",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak for the run's precision, for the fraction of "
        "peak (known GPUs are looked up)",
    )
    parser.add_argument(
        "--stage-threads",
        type=int,
        default=1,
        help="OpenCV threads for the stages around the model (default 1: a Jetson's CPU cores "
        "are shared with capture, MQTT and the OS; 0 = OpenCV's default)",
    )
    parser.add_argument(
        "--publish",
        choices=["auto", "mqtt", "outbox"],
        default="auto",
        help="publish stage: auto = MQTT via a local mosquitto when available",
    )
    parser.add_argument(
        "--ui",
        action="store_true",
        help="also hand every verdict to the live view (edge/ui/, with a page open on a "
        "loopback port) and time that hand-off per frame",
    )


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``trd-edge bench``: print a table per backend, ratios, optional JSON."""
    from edge.backends import BackendError
    from edge.bundle import load_bundle
    from edge.commands.run_cmd import model_ref

    if args.frames < 1 or args.warmup < 0:
        raise ValueError("--frames must be >= 1 and --warmup >= 0")
    from edge.allocator import keep_temporaries_on_heap

    keep_temporaries_on_heap()  # as `trd-edge run` does: frame temporaries reuse the heap
    stage_threads = getattr(args, "stage_threads", 1)
    if stage_threads:
        import cv2

        cv2.setNumThreads(int(stage_threads))
    specs = args.backend or ["auto"]
    for spec in specs:
        parse_backend_spec(spec)  # fail before anything starts
    bundles = [args.bundle] + ([args.compare] if args.compare else [])
    first = load_bundle(args.bundle)
    camera = args.camera or f"synthetic?size={max(64, first.image_size)}&defect_rate=0.2"
    machine = machine_info()
    macs_cache: dict[str, dict | None] = {}
    results: list[BenchResult] = []
    failures: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="trd-bench-") as tmp,
        publish_stage(args.publish, Path(tmp), model_ref(first, "bench")) as publish,
        _ui_view(getattr(args, "ui", False)) as view,
    ):
        print(f"publish stage: {publish.mode}")
        if view:
            print(f"live view: {view[0].url} with a page open (pictures at most "
                  f"{view[0].state.min_interval ** -1:g}/s, encoded in the UI's own thread)")
        print(
            f"camera: {camera}; {args.frames} frames after {args.warmup} warm-up; "
            f"OpenCV threads for the stages: {stage_threads or 'default'}; "
            f"machine: {machine['cpu_model']} ({machine['cpu_cores_usable']} cores)"
            + (f", GPU {machine['gpus'][0]['name']}" if machine["gpus"] else ", no GPU")
        )
        for bdir in bundles:
            b = load_bundle(bdir)
            key = str(b.path)
            if key not in macs_cache:
                try:
                    macs_cache[key] = count_onnx_macs(b.file_path("model"))
                except ImportError:
                    macs_cache[key] = None
                    log.warning("onnx is not installed: FLOPs not counted (pip install onnx)")
            for spec in specs:
                try:
                    r = bench_backend(bdir, spec, camera, args.frames, args.warmup, publish,
                                      ui=view[0] if view else None)
                except BackendError as exc:  # e.g. TensorRT or a GPU provider absent here
                    failures[f"{Path(bdir).name}:{spec}"] = str(exc)
                    print(f"{spec} on {bdir}: skipped: {exc}")
                    continue
                r.macs = macs_cache[key]
                r.peak_tflops = args.peak_tflops or _known_peak(machine["gpus"], r.precision)
                results.append(r)
        if view:
            ui, page = view
            render = sorted(ui.state.render_ms)
            ui_note = (f"live view: {ui.state.rendered} verdicts drawn ("
                       + (f"p50 {render[len(render) // 2]:.1f} ms each, " if render else "")
                       + f"UI thread), page fetched {page.pictures} pictures, "
                       f"{page.bytes / 1e3:.0f} kB")
            for r in results:
                r.notes.append(ui_note)
    _unique_labels(results, several_bundles=len(bundles) > 1)
    for r in results:
        print()
        print(format_table(r))
    comps = comparisons(results)
    for c in comps:
        print(
            f"\nratio {c['other']} / {c['baseline']}: end to end "
            f"{c['end_to_end_p50_ratio']:.2f}x, model only {c['model_only_p50_ratio']:.2f}x "
            "(medians; >1 = slower)"
        )
    if args.json_out:
        doc = {
            "tool": "trd-edge bench",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(["trd-edge", *sys.argv[1:]]) if sys.argv else "",
            "machine": machine,
            "camera": camera,
            "frames": args.frames,
            "warmup": args.warmup,
            "stage_threads": stage_threads,
            "publish": publish.mode,
            "backends": {r.label: r.as_dict() for r in results},
            "comparison": comps,
            "failed": failures,
        }
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(doc, indent=2, allow_nan=False, default=_json_default) + "\n",
            encoding="utf-8",
        )
        print(f"\nwrote {out}")
    return 0 if results else 1


@contextlib.contextmanager
def _ui_view(enabled: bool) -> Iterator[tuple | None]:
    """``--ui``: a live view with one page open (`edge.ui.client.bench_view`), else None."""
    if not enabled:
        yield None
        return
    from edge.ui.client import bench_view

    with bench_view() as view:
        yield view


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
