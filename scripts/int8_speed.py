"""CPU speed of a bundle's FP32 and two INT8 graphs in onnxruntime, timed in turn (issue 16).

Not a test. For each INT8 graph it prints how many convolutions onnxruntime fused into
QLinearConv (and what stayed float) after its ORT_ENABLE_ALL optimisation, then times the three
graphs frame by frame in turn, so a changing load on a shared machine hits all of them alike::

    python scripts/int8_speed.py --bundle BUNDLE --frames 10 --threads 2

The bundle must hold model.int8.onnx and model.int8.trt.onnx (`trd-edge export --int8`).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

GRAPHS = {
    "fp32": "model.onnx",
    "int8 (uint8 activations, onnxruntime graph)": "model.int8.onnx",
    "int8 (symmetric, TensorRT graph)": "model.int8.trt.onnx",
}


def _session(path: Path, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the backend
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for label, name in list(GRAPHS.items())[1:]:
            opt = Path(tmp) / "opt.onnx"
            _session(a.bundle / name, a.threads, opt)
            ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
            print(f"{label}: after optimisation QLinearConv {ops['QLinearConv']}, float Conv "
                  f"{ops['Conv']}, ConvTranspose {ops['ConvTranspose']}, Relu {ops['Relu']}")
    sessions = {label: _session(a.bundle / name, a.threads) for label, name in GRAPHS.items()}
    s = sessions["fp32"].get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    feed = {
        "rgb": rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8),
        "x3d": rng.random((1, 3, s, s)).astype(np.float32),
    }
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for sess in sessions.values():
        sess.run(None, feed)  # warm-up
    for _ in range(a.frames):
        for label, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, feed)
            times[label].append((time.perf_counter() - t) * 1e3)
    base = statistics.median(times["fp32"])
    for label, ms in times.items():
        p50 = statistics.median(ms)
        print(f"{label:<45} p50 {p50:8.1f} ms   fp32 / it {base / p50:.2f}x")


if __name__ == "__main__":
    main()
