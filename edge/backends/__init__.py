"""Inference backends behind one interface (see ``edge.backends.base.Backend``).

``create_backend("auto" | "onnxruntime" | "tensorrt", bundle, **opts)``; the TensorRT
backend is imported only when asked for (TensorRT and cuda-python are optional).
"""

from __future__ import annotations

import logging
from typing import Any

from edge.backends.base import Backend, BackendError, InferTiming
from edge.bundle import Bundle

BACKENDS = ("auto", "onnxruntime", "tensorrt")

log = logging.getLogger(__name__)


def create_backend(name: str, bundle: Bundle, **opts: Any) -> Backend:
    """Create a backend for ``bundle``.

    ``onnxruntime`` opts: ``precision`` (fp32|fp16|int8), ``device`` (cpu|cuda|tensorrt|auto),
    ``intra_op_threads``, ``warmup``. ``tensorrt`` opts: ``precision`` (fp16|fp32|int8), ``build``
    (build a missing engine), ``device``, ``warmup``. ``auto`` picks TensorRT when it is
    installed and the bundle has an FP16 graph (building this GPU's engine on first use, which
    takes minutes on a Jetson and is then kept in the bundle), else onnxruntime on the best
    available execution provider. Every fallback logs one warning that names the reason and
    the fix (no TensorRT, TensorRT < 10, a cuda-python the driver cannot run, no GPU, no FP16
    graph, a failed engine build); ``trd-edge doctor`` reports the same.
    """
    if name == "onnxruntime":
        from edge.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **opts)
    if name == "tensorrt":
        from edge.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, **opts)
    if name == "auto":
        from edge.backends.tensorrt_backend import tensorrt_problem

        problem: object = tensorrt_problem()
        if problem is None and not (bundle.manifest.engines or bundle.has_file("model_fp16")):
            problem = (
                "the bundle has no TensorRT engine and no FP16 graph (model.fp16.onnx); fix: "
                "re-export it with `trd-edge export --fp16`"
            )
        if problem is None:
            try:
                return create_backend(
                    "tensorrt", bundle, precision=opts.get("precision", "fp16"), build=True
                )
            except BackendError as exc:
                problem = exc
        # One line with the reason and its fix: a station that silently runs on the CPU
        # looks healthy until someone measures its latency.
        log.warning(
            "backend auto: using onnxruntime instead of TensorRT: %s",
            " ".join(str(problem).split()),
        )
        opts = dict(opts)
        opts.setdefault("device", "auto")
        if opts.get("precision") == "fp16" and not bundle.has_file("model_fp16"):
            opts["precision"] = "fp32"
        return create_backend("onnxruntime", bundle, **opts)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendError", "InferTiming", "create_backend"]
