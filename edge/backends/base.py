"""The one inference interface every backend (onnxruntime, TensorRT, torch reference) implements.

A backend takes one preprocessed frame, ``rgb`` and ``x3d`` as its bundle's input contract says
(`edge.bundle.default_io`: since schema 1.1 uint8 (1,S,S,3) RGB and a float16 (1,3,S,S) 3D image,
before that (1,3,S,S) float32 each; `edge.bundle.model_inputs` makes them from a sample),
and returns the two raw per-modality anomaly maps, each (S,S) float32. Timing of the last call
is kept in ``last_timing`` so the run loop and benchmarks report the same numbers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing package, missing engine, bad input)."""


@dataclass
class InferTiming:
    """Milliseconds spent in one ``infer`` call; h2d/d2h are 0 where copies are not separate."""

    h2d_ms: float = 0.0
    compute_ms: float = 0.0
    d2h_ms: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "h2d_ms": self.h2d_ms,
            "compute_ms": self.compute_ms,
            "d2h_ms": self.d2h_ms,
            "total_ms": self.total_ms,
        }


@dataclass
class _Clock:
    """Tiny helper: ``lap()`` returns ms since the previous lap."""

    last: float = field(default_factory=time.perf_counter)

    def lap(self) -> float:
        now = time.perf_counter()
        ms = (now - self.last) * 1e3
        self.last = now
        return ms


def as_batch(
    arr: np.ndarray,
    name: str,
    image_size: int,
    shape: tuple[int, ...] | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """Return ``arr`` as a C-contiguous batch of one of ``shape`` (default (1,3,S,S)) and
    ``dtype``, or raise a clear error."""
    a = np.asarray(arr)
    expected = tuple(shape) if shape is not None else (1, 3, image_size, image_size)
    if a.ndim == len(expected) - 1:
        a = a[None]
    if a.shape != expected:
        raise BackendError(
            f"input {name!r} has shape {tuple(np.shape(arr))}, the model expects {expected} "
            f"(or {expected[1:]}); preprocess frames with the bundle's PreprocessConfig "
            f"(image_size {image_size}) and edge.bundle.model_inputs"
        )
    if a.dtype != np.dtype(dtype):
        raise BackendError(f"input {name!r} has dtype {a.dtype}, expected {dtype}")
    return np.ascontiguousarray(a)


class Backend(ABC):
    """Common interface: ``infer``, ``warmup``, ``describe``, ``last_timing``."""

    name: str = "backend"
    precision: str = "fp32"
    image_size: int = 0

    def __init__(self) -> None:
        self.last_timing = InferTiming()
        # the graph's input contract (edge.bundle.IOSpec); None = (1,3,S,S) float32 each
        self.io: Any = None

    def input_spec(self, name: str) -> tuple[tuple[int, ...] | None, str]:
        """(shape, dtype) the graph takes for input ``name``."""
        if self.io is None:
            return None, "float32"
        spec = next(t for t in self.io.inputs if t.name == name)
        return tuple(spec.shape), spec.dtype

    @abstractmethod
    def _run(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on validated (1,3,S,S) inputs; set ``self.last_timing`` parts."""

    def infer(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw anomaly maps ``(map_rgb, map_3d)``, each (S,S) float32, for one frame."""
        rgb_b = as_batch(rgb, "rgb", self.image_size, *self.input_spec("rgb"))
        x3d_b = as_batch(x3d, "x3d", self.image_size, *self.input_spec("x3d"))
        start = time.perf_counter()
        map_rgb, map_3d = self._run(rgb_b, x3d_b)
        self.last_timing.total_ms = (time.perf_counter() - start) * 1e3
        s = self.image_size
        return (
            np.asarray(map_rgb, dtype=np.float32).reshape(s, s),
            np.asarray(map_3d, dtype=np.float32).reshape(s, s),
        )

    def warmup(self, n: int = 2) -> None:
        """Run ``n`` zero frames so lazy allocation/autotuning stays out of measured frames."""
        zeros = []
        for name in ("rgb", "x3d"):
            shape, dtype = self.input_spec(name)
            zeros.append(np.zeros(shape or (1, 3, self.image_size, self.image_size), dtype))
        for _ in range(n):
            self.infer(*zeros)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Versions, providers/device and precision, for logs and reports."""

    def close(self) -> None:
        """Release device resources (no-op by default)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}/{self.precision} S={self.image_size}>"
