"""TensorRT backend: a bundle's engine run with the TensorRT 10/11 tensor-address API.

Memory is managed with cuda-python (``cuda.bindings.runtime``, as NVIDIA's current samples do;
pycuda is not used): pinned host buffers (``cudaMallocHost``) so copies are truly asynchronous,
device buffers (``cudaMalloc``), one CUDA stream, and CUDA events around the host-to-device
copies, the kernel launch and the device-to-host copies so ``last_timing`` splits the time.
Both inputs are enqueued back-to-back before ``execute_async_v3`` and both outputs right after
it, with a single synchronisation per frame. TensorRT is not installable on this project's
development machines: the control flow (buffers, addresses, stream, each failure path) is tested
against the fake runtime of ``tests/fake_gpu.py``, the real thing on hardware by
``deploy/check_tensorrt.py``. A backend that fails half-way through ``__init__`` frees what it
had allocated; ``tensorrt_problem()`` says why TensorRT cannot run here, with the fix.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.backends.base import Backend, BackendError
from edge.backends.tensorrt_build import (
    build_engine,
    cuda_check,
    engine_key,
    gpu_info,
    import_cudart,
    import_tensorrt,
)
from edge.bundle import INPUT_NAMES, OUTPUT_NAMES, Bundle, sha256_file


def stream_handle_getter() -> Callable[[Any], int]:
    """How to turn a cuda-python handle object into the integer TensorRT takes.

    cuda-bindings >= 12.9.1 / 13.0 deprecate ``int(handle)`` in favour of
    ``cuda.bindings.utils.get_cuda_native_handle``; older 12.x releases only have ``int()``.
    (``handle.getPtr()`` would be the address *of* the handle, not the handle.)
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # type: ignore[import-not-found]
    except ImportError:
        return int
    return lambda obj: int(get_cuda_native_handle(obj))


class _Buffer:
    """One I/O tensor: pinned host array + device allocation."""

    def __init__(self, cudart, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.host_ptr = cuda_check(cudart.cudaMallocHost(self.nbytes), f"cudaMallocHost {name}")
        try:
            self.device_ptr = cuda_check(cudart.cudaMalloc(self.nbytes), f"cudaMalloc {name}")
        except BackendError:
            cudart.cudaFreeHost(self.host_ptr)  # the caller only frees complete buffers
            raise
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype).reshape(shape)

    def free(self, cudart) -> None:
        cudart.cudaFree(self.device_ptr)
        cudart.cudaFreeHost(self.host_ptr)


class TensorRTBackend(Backend):
    """Runs ``engines/<gpu>-sm<cc>-trt<ver>-<precision>.plan`` of a bundle."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp16",
        build: bool = False,
        device: int = 0,
        warmup: int = 2,
    ) -> None:
        super().__init__()
        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        self._handle = stream_handle_getter()
        self.bundle = bundle
        self.precision = precision
        self.image_size = bundle.image_size
        self.device = device
        self.buffers: dict[str, _Buffer] = {}
        self._events: list[Any] = []
        self.stream: Any = None
        self.context: Any = None
        try:
            self._open(trt, cudart, build)
            if warmup:
                self.warmup(warmup)
        except BaseException:
            self.close()  # a half-built backend must not keep pinned or device memory
            raise

    def _open(self, trt: Any, cudart: Any, build: bool) -> None:
        """Load (or build) the engine, then allocate stream, events and I/O buffers."""
        bundle, device = self.bundle, self.device
        cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self.gpu = gpu_info(device)
        self.key = engine_key(
            self.gpu.name, self.gpu.compute_capability, trt.__version__, self.precision
        )
        self.engine_path = bundle.engine_path(self.key)
        if not self.engine_path.is_file():
            if not build:
                raise BackendError(
                    f"no TensorRT engine {self.key} in {bundle.path} for this GPU/TensorRT; run "
                    f"`trd-edge build-engine --bundle {bundle.path}` on this machine first"
                )
            build_engine(bundle, precision=self.precision, device=device)
        entry = bundle.manifest.engines.get(self.key)
        if entry is not None and entry.sha256 != sha256_file(self.engine_path):
            raise BackendError(
                f"engine {self.engine_path.name} differs from the one recorded in the manifest; "
                "rebuild it with `trd-edge build-engine --force`"
            )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"TensorRT could not load {self.engine_path.name} (built by another TensorRT "
                "version or GPU?); rebuild it with `trd-edge build-engine --force`"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:  # TensorRT returns nullptr when it cannot allocate one
            raise BackendError(
                f"TensorRT could not create an execution context for {self.engine_path.name} "
                "(not enough free GPU memory?); fix: stop other processes using the GPU "
                "(`nvidia-smi`, `tegrastats`) and restart"
            )
        self.stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        for _ in range(4):
            self._events.append(cuda_check(cudart.cudaEventCreate(), "cudaEventCreate"))
        # The bundle's tensor contract (schema 1.1: uint8 (1,S,S,3) RGB, float32 (1,3,S,S) 3D
        # image; 1.0: both (1,3,S,S) float32); the maps are (1,1,S,S) float32 either way.
        self.io = bundle.manifest.io
        expected = {
            t.name: (tuple(t.shape), np.dtype(t.dtype)) for t in [*self.io.inputs, *self.io.outputs]
        }
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if name not in expected:
                raise BackendError(f"engine has unexpected I/O tensor {name!r}; re-export/rebuild")
            want_shape, want_dtype = expected[name]
            shape = tuple(self.engine.get_tensor_shape(name))
            if -1 in shape:  # dynamic dims: fix them to the bundle's frame shape
                shape = want_shape
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    if not self.context.set_input_shape(name, shape):
                        raise BackendError(f"engine does not accept {name} of shape {shape}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if (shape, dtype) != (want_shape, want_dtype):
                raise BackendError(
                    f"engine tensor {name!r} is {dtype}{list(shape)} but the bundle's contract "
                    f"says {want_dtype}{list(want_shape)}; rebuild the engine from this bundle "
                    "(`trd-edge build-engine --force`)"
                )
            buf = _Buffer(cudart, name, shape, dtype)
            self.buffers[name] = buf
            if not self.context.set_tensor_address(name, int(buf.device_ptr)):
                raise BackendError(f"TensorRT refused the device address of {name!r}")
        missing = set(expected) - set(self.buffers)
        if missing:
            raise BackendError(f"engine lacks I/O tensors {sorted(missing)}; re-export/rebuild")
        self._stream_handle = self._handle(self.stream)

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        cuda_check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream), "copy")

    def _run(self, rgb: np.ndarray, x3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ev = self._events
        if self.device:  # the current device is per thread; frames may come from another one
            cuda_check(cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        np.copyto(self.buffers["rgb"].host, rgb)
        np.copyto(self.buffers["x3d"].host, x3d)
        cuda_check(cudart.cudaEventRecord(ev[0], self.stream), "event")
        for name in INPUT_NAMES:
            b = self.buffers[name]
            self._copy(b.device_ptr, b.host_ptr, b.nbytes, h2d)
        cuda_check(cudart.cudaEventRecord(ev[1], self.stream), "event")
        if not self.context.execute_async_v3(self._stream_handle):
            # let the queued input copies finish before the next frame refills the buffers
            cudart.cudaStreamSynchronize(self.stream)
            raise BackendError("TensorRT execute_async_v3 failed (see TensorRT log)")
        cuda_check(cudart.cudaEventRecord(ev[2], self.stream), "event")
        for name in OUTPUT_NAMES:
            b = self.buffers[name]
            self._copy(b.host_ptr, b.device_ptr, b.nbytes, d2h)
        cuda_check(cudart.cudaEventRecord(ev[3], self.stream), "event")
        cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        t = self.last_timing
        t.h2d_ms = cuda_check(cudart.cudaEventElapsedTime(ev[0], ev[1]), "timing")
        t.compute_ms = cuda_check(cudart.cudaEventElapsedTime(ev[1], ev[2]), "timing")
        t.d2h_ms = cuda_check(cudart.cudaEventElapsedTime(ev[2], ev[3]), "timing")
        # copies: the pinned buffers are reused by the next frame
        return self.buffers["map_rgb"].host.copy(), self.buffers["map_3d"].host.copy()

    def describe(self) -> dict[str, Any]:
        engine = self.engine
        mem = getattr(engine, "device_memory_size_v2", None)  # TensorRT >= 10.x; 11 only has v2
        if mem is None:
            mem = getattr(engine, "device_memory_size", None)
        return {
            "backend": self.name,
            "precision": self.precision,
            "engine": self.engine_path.name,
            "model_id": self.bundle.model_id,
            "tensorrt": self._trt.__version__,
            "gpu": self.gpu.name,
            "compute_capability": self.gpu.compute_capability,
            "device_memory_bytes": int(mem) if mem is not None else None,
        }

    def close(self) -> None:
        """Free buffers, events and the stream (safe to call twice, or after a failed init)."""
        cudart = self._cudart
        for buf in self.buffers.values():
            buf.free(cudart)
        self.buffers = {}
        for ev in self._events:
            cudart.cudaEventDestroy(ev)
        self._events = []
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None


def tensorrt_problem(device: int = 0) -> BackendError | None:
    """Why TensorRT cannot run on ``device`` here (the error names reason and fix), or None."""
    try:
        import_tensorrt()
        import_cudart()
        gpu_info(device)
    except BackendError as exc:
        return exc
    return None


def tensorrt_available() -> bool:
    """True when both TensorRT and a CUDA device are usable here."""
    return tensorrt_problem() is None
