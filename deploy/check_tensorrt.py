"""Check the TensorRT path on real hardware: build, inspect, parity, latency.

Run on the target (Jetson Orin with JetPack 6, or an x86 GPU box with TensorRT 10/11 and
cuda-python) from the repository root::

    python deploy/check_tensorrt.py --bundle BUNDLE_DIR [--frames 50] [--force] [--json OUT]
        [--precision fp16|int8]

Steps: (1) build (or reuse) the strongly typed FP16 engine with ``trd-edge build-engine``'s
code, print its layer-precision report and refuse a non-FP16 engine; (2) run TensorRT FP16,
onnxruntime FP32 (CPU, the reference) and onnxruntime FP16 on the same synthetic frames and
print max/mean |Δmap|, max |Δscore| and flipped verdicts per pair (``trd-edge verify``'s
tolerances); (3) time per-frame latency of each backend with TensorRT's h2d/compute/d2h split.
Exit 0 when the engine is FP16 and every pair agrees. No torch needed. ``--precision int8``
does the same for the INT8 engine built from ``model.int8.trt.onnx`` (explicit quantisation;
export with ``--int8``), refused unless its convolutions run in INT8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from edge.backends.tensorrt_backend import TensorRTBackend  # noqa: E402
from edge.backends.tensorrt_build import EngineRefused, build_engine  # noqa: E402
from edge.bundle import load_bundle, model_inputs  # noqa: E402
from export.verify import format_report, load_frames, verify  # noqa: E402


def _latency(backend, frames, n: int) -> dict:
    total, parts = [], {"h2d_ms": [], "compute_ms": [], "d2h_ms": []}
    for i in range(n):
        rgb, x3d = model_inputs(backend.io, frames.samples[i % len(frames.samples)])
        t = time.perf_counter()
        backend.infer(rgb, x3d)
        total.append((time.perf_counter() - t) * 1e3)
        for k in parts:
            parts[k].append(getattr(backend.last_timing, k))
    return {"median_ms": statistics.median(total), "p95_ms": sorted(total)[int(0.95 * (n - 1))]} | {
        k: statistics.median(v) for k, v in parts.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--frames", type=int, default=50, help="frames for latency")
    p.add_argument("--parity-frames", type=int, default=8)
    p.add_argument("--force", action="store_true", help="rebuild the engine")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--precision", choices=["fp16", "int8"], default="fp16")
    args = p.parse_args(argv)
    trt_label = f"tensorrt-{args.precision}"

    bundle = load_bundle(args.bundle)
    print("== build")
    try:
        res = build_engine(bundle, precision=args.precision, force=args.force)
    except EngineRefused as exc:
        print(f"FAIL: engine refused: {exc}")
        return 3
    print(f"engine {res.key} ({'reused' if res.reused else f'built in {res.seconds:.0f} s'})")
    print(f"layer report: {json.dumps(res.report.as_dict())}")

    print("== parity")
    frames = load_frames(bundle, None, args.parity_frames)
    rep = verify(bundle, backends=["onnxruntime", trt_label], frames=frames)
    print(format_report(rep))

    print("== latency (per frame)")
    results = {}
    backends = {
        trt_label: lambda: TensorRTBackend(bundle, precision=args.precision),
        "onnxruntime-fp32-cpu": lambda: OnnxRuntimeBackend(bundle, precision="fp32"),
    }
    for name, make in backends.items():
        be = make()
        n = args.frames if name.startswith("tensorrt") else min(args.frames, 5)
        results[name] = _latency(be, frames, n) | {"describe": be.describe()}
        be.close()
        r = results[name]
        print(
            f"{name:<22} median {r['median_ms']:8.2f} ms  p95 {r['p95_ms']:8.2f} ms  "
            f"(h2d {r['h2d_ms']:.2f} / compute {r['compute_ms']:.2f} / d2h {r['d2h_ms']:.2f})"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "pairs": [p.as_dict() for p in rep.pairs],
                    "latency": results,
                    "engine": res.key,
                    "layers": res.report.as_dict(),
                },
                indent=2,
                default=str,
            )
        )
    ok = rep.agree
    print("PASS" if ok else "FAIL: backends disagree")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
