"""onnxruntime backend: CPU by default, CUDA / TensorRT execution providers when asked and present."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.backends.base import Backend, BackendError, _Clock
from edge.bundle import INPUT_NAMES, MODEL_FP16, MODEL_FP32, MODEL_INT8, OUTPUT_NAMES, Bundle

# precision -> the bundle's graph (model.int8.onnx: QDQ INT8 body, FP32 head; export/int8.py)
MODEL_FILES = {"fp32": MODEL_FP32, "fp16": MODEL_FP16, "int8": MODEL_INT8}

# device -> execution providers, most preferred first (CPU is always the last resort)
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
        raise BackendError("onnxruntime is not installed: pip install onnxruntime") from exc
    return ort


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for ``device`` ("cpu" | "cuda" | "tensorrt" | "auto").

    "auto" takes the best available; an explicit GPU device that this onnxruntime lacks is an
    error (silently falling back to CPU would hide a misconfigured station).
    """
    if device == "auto":
        for dev in ("tensorrt", "cuda"):
            if _PROVIDERS[dev][0] in available:
                return [p for p in _PROVIDERS[dev] if p in available]
        return ["CPUExecutionProvider"]
    if device not in _PROVIDERS:
        raise BackendError(f"unknown onnxruntime device {device!r}; use cpu, cuda, tensorrt, auto")
    wanted = _PROVIDERS[device][0]
    if wanted not in available:
        raise BackendError(
            f"onnxruntime has no {wanted} (available: {', '.join(available)}); install "
            "onnxruntime-gpu with a matching CUDA, or use --device cpu"
        )
    return [p for p in _PROVIDERS[device] if p in available]


def _create_session(ort: Any, path: Path, opts: Any, providers: list[str]) -> Any:
    """An InferenceSession, or a BackendError naming the file and the fix.

    A model file can be damaged while its hash still matches the manifest (an export cut short
    by a full disk hashes the short file), so a load failure here is the first sign of it.
    """
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - InvalidProtobuf, InvalidGraph, Fail, NoSuchFile...
        kind = type(exc).__name__
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else kind
        size = path.stat().st_size if path.exists() else 0
        raise BackendError(
            f"onnxruntime cannot load {path} ({kind}, {size} bytes): {first}. The file is "
            "damaged or incomplete (an export cut short, e.g. by a full disk, still gets a "
            "matching hash): re-export the bundle with `trd-edge export` on a disk with free "
            "space and copy the whole bundle folder to the station again"
        ) from exc


class OnnxRuntimeBackend(Backend):
    """Runs ``model.onnx`` (fp32), ``model.fp16.onnx`` (fp16) or ``model.int8.onnx`` (int8:
    on the CPU onnxruntime fuses its Q/DQ pairs into integer kernels, QLinearConv and the like,
    with graph optimisation level ALL) from a bundle."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        device: str = "cpu",
        intra_op_threads: int | None = None,
        warmup: int = 1,
    ) -> None:
        super().__init__()
        if precision not in MODEL_FILES:
            raise BackendError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        ort = _import_ort()
        self.bundle = bundle
        self.precision = precision
        self.image_size = bundle.image_size
        self.io = bundle.manifest.io
        self.model_path = bundle.file_path(MODEL_FILES[precision])
        self.providers = choose_providers(device, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        # No spin-waiting after a run: a station captures and preprocesses the next frame on
        # the same cores while (and right after) the model runs; spinning workers took those
        # cores (measured: the stages around the model ran 2x slower in `trd-edge bench`).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = _create_session(ort, self.model_path, opts, self.providers)
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != list(INPUT_NAMES) or names_out != list(OUTPUT_NAMES):
            raise BackendError(
                f"{self.model_path.name} has inputs {names_in} / outputs {names_out}, expected "
                f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}; re-export the bundle"
            )
        self._ort = ort
        self._on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        if warmup:
            self.warmup(warmup)

    def _run(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._on_gpu:
            clock = _Clock()
            out = self.session.run(list(OUTPUT_NAMES), {"rgb": rgb, "x3d": x3d})
            self.last_timing.compute_ms = clock.lap()
            return out[0], out[1]
        # GPU provider: bind device buffers explicitly so copies and compute are timed apart.
        clock = _Clock()
        binding = self.session.io_binding()
        for name, arr in (("rgb", rgb), ("x3d", x3d)):
            binding.bind_ortvalue_input(
                name, self._ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0)
            )
        for name in OUTPUT_NAMES:
            binding.bind_output(name, "cuda", 0)
        binding.synchronize_inputs()
        self.last_timing.h2d_ms = clock.lap()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        self.last_timing.compute_ms = clock.lap()
        outs = binding.copy_outputs_to_cpu()
        self.last_timing.d2h_ms = clock.lap()
        return outs[0], outs[1]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "precision": self.precision,
            "model_file": self.model_path.name,
            "model_id": self.bundle.model_id,
            "onnxruntime": self._ort.__version__,
            "providers": self.session.get_providers(),
            "device": self._ort.get_device(),
            "intra_op_threads": self.session.get_session_options().intra_op_num_threads,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
