"""Reference backend: the checkpoint run directly in torch (CPU/CUDA, FP32/FP16).

Same interface as the edge backends (``edge.backends.base.Backend``); it lives in ``export/``
because it needs torch, which the edge runtime never imports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge.backends.base import Backend, BackendError, _Clock
from export.fp16 import HalfBody


class TorchBackend(Backend):
    """Runs a TRD model (from a run directory or given directly) with torch eager."""

    name = "torch"

    def __init__(
        self,
        model: nn.Module | None = None,
        image_size: int | None = None,
        run_dir: str | Path | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        warmup: int = 1,
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"precision must be fp32 or fp16, got {precision!r}")
        if model is None:
            if run_dir is None:
                raise BackendError("TorchBackend needs a model or a run_dir")
            from trainer.run import load_run

            loaded = load_run(run_dir, device="cpu")
            model = loaded.model
            image_size = image_size or int(loaded.info.preprocess.image_size)
        if not image_size:
            raise BackendError("TorchBackend needs image_size when given a model")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch has no CUDA here (asked for {device}); use device='cpu'")
        self.device = torch.device(device)
        self.precision = precision
        self.image_size = int(image_size)
        model = model.eval()
        # HalfBody: FP16 body + FP32 head, exactly what model.fp16.onnx contains.
        self.module = (HalfBody(model) if precision == "fp16" else model).to(self.device).eval()
        if warmup:
            self.warmup(warmup)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clock = _Clock()
        a = torch.from_numpy(rgb).to(self.device, non_blocking=True)
        b = torch.from_numpy(x3d).to(self.device, non_blocking=True)
        self._sync()
        self.last_timing.h2d_ms = clock.lap()
        with torch.inference_mode():
            map_rgb, map_3d = self.module(a, b)
        self._sync()
        self.last_timing.compute_ms = clock.lap()
        out = map_rgb.float().cpu().numpy(), map_3d.float().cpu().numpy()
        self.last_timing.d2h_ms = clock.lap()
        return out

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "precision": self.precision,
            "torch": torch.__version__,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info
