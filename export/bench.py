"""Per-frame latency: torch eager vs onnxruntime on the same exported model and machine.

Not a test. Random weights are fine for timing (the graph is the same)::

    python -m export.bench --backbone resnet18 --image-size 256 --frames 10
    python -m export.bench --backbone wide_resnet50_2 --image-size 256 --frames 3
    python -m export.bench --backbone wide_resnet50_2 --device cuda --frames 50 --cuda-graphs

On CPU it prints torch eager FP32 vs onnxruntime FP32 (same thread count) and the ratio. With
``--device cuda`` it times torch CUDA FP32 and FP16 (FP16 body, FP32 head; optionally captured
in a CUDA graph) and checks their maps against onnxruntime FP32 on CPU (parity).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge.backends.base import Backend
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import load_bundle
from export.onnx_export import export_model_bundle
from export.torch_backend import TorchBackend


def time_backend(backend: Backend, frames: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Wall-clock ms per frame (after the backend's own warm-up)."""
    backend.infer(*frames[0])  # one more warm-up frame
    out = []
    for rgb, x3d in frames:
        t = time.perf_counter()
        backend.infer(rgb, x3d)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _max_diff(fn, frames, ref) -> float:
    """Max |map difference| of ``fn`` against reference maps on the same frames."""
    worst = 0.0
    for (rgb, x3d), maps_ref in zip(frames, ref, strict=True):
        for a, b in zip(fn(rgb, x3d), maps_ref, strict=True):
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def _fmt(ms: list[float]) -> str:
    return f"median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f} ms   (n={len(ms)})"


class CudaGraphRunner:
    """torch CUDA forward captured once in a CUDA graph (static input/output buffers)."""

    def __init__(self, module: torch.nn.Module, size: int) -> None:
        self.module = module
        self.static_in = [torch.zeros(1, 3, size, size, device="cuda") for _ in range(2)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                module(*self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_out = module(*self.static_in)

    def __call__(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.static_in[0].copy_(torch.from_numpy(rgb), non_blocking=True)
        self.static_in[1].copy_(torch.from_numpy(x3d), non_blocking=True)
        self.graph.replay()
        return tuple(o.float().cpu().numpy()[0, 0] for o in self.static_out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", choices=["resnet18", "wide_resnet50_2"], default="resnet18")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ORT)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cuda-graphs", action="store_true", help="also time CUDA-graph replay")
    p.add_argument("--workdir", default=None, help="keep the exported bundle here")
    args = p.parse_args(argv)

    from trainer.model import TRD

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = args.image_size
    model = TRD(args.backbone).eval()
    rng = np.random.default_rng(0)
    frames = [
        tuple(rng.standard_normal((1, 3, s, s)).astype(np.float32) for _ in range(2))
        for _ in range(args.frames)
    ]
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(args.workdir or tmp.name)
    t = time.perf_counter()
    bundle = load_bundle(export_model_bundle(model, work / "bundle", s, args.backbone))
    print(
        f"{args.backbone} {s}x{s}: exported in {time.perf_counter() - t:.1f} s; "
        f"{threads} CPU threads; onnxruntime vs torch {torch.__version__}"
    )

    ort_be = OnnxRuntimeBackend(bundle, precision="fp32", intra_op_threads=threads)
    if args.device == "cpu":
        torch_ms = time_backend(TorchBackend(model, s, device="cpu"), frames)
        ort_ms = time_backend(ort_be, frames)
        print(f"torch eager FP32 (CPU)   {_fmt(torch_ms)}")
        print(f"onnxruntime FP32 (CPU)   {_fmt(ort_ms)}")
        print(
            f"ratio torch/onnxruntime  {statistics.median(torch_ms) / statistics.median(ort_ms):.2f}x"
        )
    else:
        ref = [ort_be.infer(r, x) for r, x in frames[:2]]
        print(f"GPU: {torch.cuda.get_device_name()}")
        for precision in ("fp32", "fp16"):
            be = TorchBackend(model, s, device="cuda", precision=precision, warmup=3)
            ms = time_backend(be, frames)
            err = _max_diff(be.infer, frames[:2], ref)
            print(
                f"torch CUDA {precision} eager   {_fmt(ms)}   max|Δmap| vs ORT CPU FP32 {err:.2e}"
            )
            if args.cuda_graphs:
                runner = CudaGraphRunner(be.module, s)
                ms = []
                for r, x in frames:
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    runner(r, x)
                    ms.append((time.perf_counter() - t) * 1e3)
                err = _max_diff(runner, frames[:2], ref)
                print(
                    f"torch CUDA {precision} graph   {_fmt(ms)}   max|Δmap| vs ORT CPU FP32 {err:.2e}"
                )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
