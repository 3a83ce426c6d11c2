"""A fake CUDA runtime (cuda-python) and TensorRT runtime for testing the TensorRT backend here.

Why a fake: TensorRT cannot be installed on this project's machines and they have no GPU, so
``edge/backends/tensorrt_backend.py`` would otherwise never run before it meets real hardware.
This module stands in for the real APIs, **mirroring their call signatures and return
conventions** as read from their sources (cuda-python ``cuda.bindings.runtime`` 12.9 / 13.x,
TensorRT 10/11 ``python/src/infer/pyCore.cpp``), so the backend's control flow, its buffer
addressing and each failure path can be tested:

- every ``cudart`` call returns a tuple ``(cudaError_t, *values)``, ``(err, None)`` on failure
  for calls that produce a value (as the real bindings do), with the real error numbers
  (``cudaErrorMemoryAllocation`` 2, ``cudaErrorInsufficientDriver`` 35, ...);
- ``cudaStream_t`` / ``cudaEvent_t`` are handle objects: ``getPtr()`` is the address *of* the
  handle (not the handle), ``int(obj)`` the handle (deprecated since cuda-bindings 12.9.1 /
  13.0 in favour of ``cuda.bindings.utils.get_cuda_native_handle``; the fake counts its use);
- ``cudaMemcpyAsync``, ``execute_async_v3`` and event records are queued on their stream and
  only take effect at ``cudaStreamSynchronize``, so a missing synchronisation shows up as
  stale outputs, as it would on a GPU;
- allocations belong to the device current when they were made (``cudaSetDevice``); a
  TensorRT build runs on the current device; an engine given memory of another device fails;
- ``IExecutionContext.execute_async_v3(stream_handle: int) -> bool`` and
  ``set_tensor_address(name, int)`` take plain integers (pybind ``size_t``);
  ``ICudaEngine.create_execution_context()`` may return None (TensorRT returns nullptr when
  it cannot allocate the context).

"Device memory" is host memory here (ctypes buffers), so copies are real ``memmove``s and the
fake engine computes real outputs: ``map_rgb = mean_c(rgb²)``, ``map_3d = mean_c(|x3d|)`` (the
toy bundle's model, see ``conftest_export.write_toy_bundle``). What the fake cannot show
(kernels, real timings, driver behaviour) is checked on hardware: ``deploy/TENSORRT_CHECK.md``.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest


class cudaError_t(enum.IntEnum):  # noqa: N801 - the real name
    """The real cudaError_t numbers (cuda.bindings.runtime)."""

    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInitializationError = 3
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorUnknown = 999


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


OK = cudaError_t.cudaSuccess


class _Handle:
    """Like cuda-python's handle classes: ``getPtr()`` = &handle, ``int()`` = handle."""

    _ids = itertools.count(0x7F000010, 0x10)

    def __init__(self, runtime: FakeCudaRuntime, value: int | None = None) -> None:
        self._rt = runtime
        self._value = next(self._ids) if value is None else value
        self._box = ctypes.c_void_p(self._value)  # the "C object" holding the handle

    def getPtr(self) -> int:  # noqa: N802 - the real name
        return ctypes.addressof(self._box)

    def __int__(self) -> int:
        self._rt.int_calls += 1
        return self._value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} 0x{self._value:x}>"


class cudaStream_t(_Handle):  # noqa: N801
    pass


class cudaEvent_t(_Handle):  # noqa: N801
    pass


@dataclass
class _Alloc:
    buf: Any  # ctypes array keeping the memory alive
    nbytes: int
    device: int
    pinned: bool


@dataclass
class _Props:
    name: bytes
    major: int
    minor: int


@dataclass
class FakeCudaRuntime:
    """State of the fake GPU(s); the ``cuda.bindings.runtime`` functions are its methods.

    Knobs for failure paths: ``fail`` maps a function name to the error it returns from its
    ``fail_after``-th call on (0 = the first call); ``driver_cuda`` is what
    ``cudaDriverGetVersion`` reports (0 = no driver loaded); ``bindings_major`` above the
    driver's CUDA major makes every call fail with ``cudaErrorInsufficientDriver``, as
    cuda-python 13 does on a JetPack 6 (CUDA 12.6) driver.
    """

    devices: list[str] = field(default_factory=lambda: ["NVIDIA Jetson AGX Orin"])
    capability: tuple[int, int] = (8, 7)
    driver_cuda: int = 12060
    bindings_version: str = "12.9.10"
    fail: dict[str, cudaError_t] = field(default_factory=dict)
    fail_after: dict[str, int] = field(default_factory=dict)
    current: int = 0
    allocs: dict[int, _Alloc] = field(default_factory=dict)
    streams: dict[int, list] = field(default_factory=dict)
    stream_device: dict[int, int] = field(default_factory=dict)
    events: dict[int, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    int_calls: int = 0
    clock: float = 0.0

    # ------------------------------------------------------------------ plumbing

    @property
    def bindings_major(self) -> int:
        return int(self.bindings_version.split(".")[0])

    def _enter(self, name: str) -> cudaError_t | None:
        n = self.calls.get(name, 0)
        self.calls[name] = n + 1
        if name != "cudaDriverGetVersion" and name != "cudaGetErrorName":
            if self.driver_cuda == 0 or self.bindings_major > self.driver_cuda // 1000:
                return cudaError_t.cudaErrorInsufficientDriver
        if name in self.fail and n >= self.fail_after.get(name, 0):
            return self.fail[name]
        return None

    def live(self) -> dict[str, int]:
        """What is still allocated: the backend must release everything it made."""
        return {
            "device": sum(not a.pinned for a in self.allocs.values()),
            "pinned": sum(a.pinned for a in self.allocs.values()),
            "streams": len(self.streams),
            "events": len(self.events),
        }

    def _alloc(self, nbytes: int, pinned: bool) -> int:
        buf = (ctypes.c_byte * max(nbytes, 1))()
        ptr = ctypes.addressof(buf)
        self.allocs[ptr] = _Alloc(buf, nbytes, self.current, pinned)
        return ptr

    def _find(self, ptr: int) -> _Alloc | None:
        for base, alloc in self.allocs.items():
            if base <= ptr < base + alloc.nbytes:
                return alloc
        return None

    def stream_by_handle(self, handle: int) -> list | None:
        return self.streams.get(handle)

    # ------------------------------------------------------------------ device

    def cudaDriverGetVersion(self):  # noqa: N802
        self._enter("cudaDriverGetVersion")
        return (OK, self.driver_cuda)

    def cudaRuntimeGetVersion(self):  # noqa: N802
        if err := self._enter("cudaRuntimeGetVersion"):
            return (err, None)
        return (OK, self.bindings_major * 1000 + 60)

    def cudaGetErrorName(self, error):  # noqa: N802
        return (OK, cudaError_t(int(error)).name.encode())

    def cudaGetDeviceCount(self):  # noqa: N802
        if err := self._enter("cudaGetDeviceCount"):
            return (err, None)
        return (OK, len(self.devices))

    def cudaSetDevice(self, device: int):  # noqa: N802
        if err := self._enter("cudaSetDevice"):
            return (err,)
        if not self.devices:
            return (cudaError_t.cudaErrorNoDevice,)
        if not 0 <= device < len(self.devices):
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = device
        return (OK,)

    def cudaGetDevice(self):  # noqa: N802
        if err := self._enter("cudaGetDevice"):
            return (err, None)
        return (OK, self.current)

    def cudaGetDeviceProperties(self, device: int):  # noqa: N802
        if err := self._enter("cudaGetDeviceProperties"):
            return (err, None)
        if not self.devices:
            return (cudaError_t.cudaErrorNoDevice, None)
        if not 0 <= device < len(self.devices):
            return (cudaError_t.cudaErrorInvalidDevice, None)
        # the real cudaDeviceProp.name is bytes (NUL padded)
        return (OK, _Props(self.devices[device].encode() + b"\0\0", *self.capability))

    # ------------------------------------------------------------------ memory

    def cudaMalloc(self, size: int):  # noqa: N802
        if err := self._enter("cudaMalloc"):
            return (err, None)
        return (OK, self._alloc(size, pinned=False))

    def cudaMallocHost(self, size: int):  # noqa: N802
        if err := self._enter("cudaMallocHost"):
            return (err, None)
        return (OK, self._alloc(size, pinned=True))

    def cudaFree(self, ptr: int):  # noqa: N802
        if err := self._enter("cudaFree"):
            return (err,)
        alloc = self.allocs.get(ptr)
        if alloc is None or alloc.pinned:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.allocs[ptr]
        return (OK,)

    def cudaFreeHost(self, ptr: int):  # noqa: N802
        if err := self._enter("cudaFreeHost"):
            return (err,)
        alloc = self.allocs.get(ptr)
        if alloc is None or not alloc.pinned:
            return (cudaError_t.cudaErrorInvalidValue,)
        del self.allocs[ptr]
        return (OK,)

    # ------------------------------------------------------------------ streams and events

    def _stream(self, stream) -> list | None:
        if not isinstance(stream, cudaStream_t):
            return None
        return self.streams.get(stream._value)

    def cudaStreamCreate(self):  # noqa: N802
        if err := self._enter("cudaStreamCreate"):
            return (err, None)
        s = cudaStream_t(self)
        self.streams[s._value] = []
        self.stream_device[s._value] = self.current
        return (OK, s)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        if err := self._enter("cudaStreamDestroy"):
            return (err,)
        if self._stream(stream) is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        del self.streams[stream._value]
        return (OK,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        if err := self._enter("cudaStreamSynchronize"):
            return (err,)
        queue = self._stream(stream)
        if queue is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        while queue:
            queue.pop(0)()
        return (OK,)

    def cudaEventCreate(self):  # noqa: N802
        if err := self._enter("cudaEventCreate"):
            return (err, None)
        ev = cudaEvent_t(self)
        self.events[ev._value] = -1.0
        return (OK, ev)

    def cudaEventDestroy(self, event):  # noqa: N802
        if err := self._enter("cudaEventDestroy"):
            return (err,)
        if not isinstance(event, cudaEvent_t) or event._value not in self.events:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        del self.events[event._value]
        return (OK,)

    def cudaEventRecord(self, event, stream):  # noqa: N802
        if err := self._enter("cudaEventRecord"):
            return (err,)
        queue = self._stream(stream)
        if queue is None or not isinstance(event, cudaEvent_t):
            return (cudaError_t.cudaErrorInvalidResourceHandle,)

        def record() -> None:
            self.events[event._value] = self.clock

        queue.append(record)
        return (OK,)

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        if err := self._enter("cudaEventElapsedTime"):
            return (err, None)
        t0, t1 = self.events.get(start._value, -1.0), self.events.get(end._value, -1.0)
        if t0 < 0 or t1 < 0:  # cudaErrorNotReady in reality: recorded but not synchronised
            return (cudaError_t.cudaErrorInvalidResourceHandle, None)
        return (OK, float(t1 - t0))

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind, stream):  # noqa: N802
        if err := self._enter("cudaMemcpyAsync"):
            return (err,)
        queue = self._stream(stream)
        if queue is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        d, s = self._find(int(dst)), self._find(int(src))
        want = {
            cudaMemcpyKind.cudaMemcpyHostToDevice: (True, False),
            cudaMemcpyKind.cudaMemcpyDeviceToHost: (False, True),
        }.get(cudaMemcpyKind(int(kind)))
        if d is None or s is None or want is None or (s.pinned, d.pinned) != want:
            return (cudaError_t.cudaErrorInvalidValue,)

        def copy() -> None:
            ctypes.memmove(int(dst), int(src), count)
            self.clock += 0.05

        queue.append(copy)
        return (OK,)


def get_cuda_native_handle(obj: Any) -> int:
    """``cuda.bindings.utils.get_cuda_native_handle`` (cuda-bindings >= 12.9.1 / 13.0)."""
    if not isinstance(obj, _Handle):
        raise TypeError(f"Unknown type: {type(obj)}")
    return obj._value


def runtime_module(rt: FakeCudaRuntime) -> types.ModuleType:
    """A module object shaped like ``cuda.bindings.runtime`` backed by ``rt``."""
    mod = types.ModuleType("cuda.bindings.runtime")
    mod.__doc__ = "fake cuda.bindings.runtime (tests/fake_gpu.py)"
    for name in dir(rt):
        if name.startswith("cuda"):
            setattr(mod, name, getattr(rt, name))
    mod.cudaError_t = cudaError_t
    mod.cudaMemcpyKind = cudaMemcpyKind
    mod.cudaStream_t = cudaStream_t
    mod.cudaEvent_t = cudaEvent_t
    return mod


def install_cuda(
    monkeypatch: pytest.MonkeyPatch, rt: FakeCudaRuntime, with_utils: bool = True
) -> types.ModuleType:
    """Put ``cuda``, ``cuda.bindings`` (+ ``.runtime``, ``.utils``) into ``sys.modules``.

    ``with_utils=False`` is cuda-python 12.6 - 12.9.0, which has no ``get_cuda_native_handle``.
    """
    cuda = types.ModuleType("cuda")
    cuda.__path__ = []  # a package
    bindings = types.ModuleType("cuda.bindings")
    bindings.__path__ = []

    def version(name: str) -> str:  # module __getattr__: follows rt.bindings_version changes
        if name == "__version__":
            return rt.bindings_version
        raise AttributeError(name)

    bindings.__getattr__ = version
    runtime = runtime_module(rt)
    cuda.bindings = bindings
    bindings.runtime = runtime
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    if with_utils:
        utils = types.ModuleType("cuda.bindings.utils")
        utils.get_cuda_native_handle = get_cuda_native_handle
        bindings.utils = utils
        monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    else:
        monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)
    return runtime


# ---------------------------------------------------------------------------------- TensorRT

FP16_FMT = "Channel major FP16 format where channel % 8 == 0"
FP32_FMT = "Row major linear FP32"
# as TensorRT's inspector writes it (NVIDIA's trex maps it to "Int8 NC/32HW32")
INT8_FMT = "Thirty-two wide channel vectorized row major Int8 format"


def fp16_engine_info() -> str:
    """Inspector JSON of a plain FP16 engine (one visible FP16 convolution)."""
    return json.dumps(
        {
            "Layers": [
                {
                    "Name": "/teacher/conv1/Conv",
                    "LayerType": "CaskConvolution",
                    "Inputs": [{"Name": "rgb", "Dimensions": [1, 3, 8, 8],
                                "Format/Datatype": FP16_FMT}],
                    "Outputs": [{"Name": "f", "Dimensions": [1, 8, 8, 8],
                                 "Format/Datatype": FP16_FMT}],
                    "ParameterType": "Convolution",
                    "Metadata": "[ONNX Layer: /teacher/conv1/Conv]",
                }
            ],
            "Bindings": ["rgb", "x3d", "map_rgb", "map_3d"],
        }
    )  # fmt: skip


def int8_engine_info() -> str:
    """Inspector JSON of an explicitly quantised INT8 engine: Q/DQ fused into the convolution,
    INT8 in and out, and the FP32 head that reads the dequantised features."""
    return json.dumps(
        {
            "Layers": [
                {
                    "Name": "/model/teacher/conv1/Conv + /model/teacher/relu/Relu",
                    "LayerType": "CaskConvolution",
                    "Inputs": [{"Name": "q_rgb", "Dimensions": [1, 3, 8, 8],
                                "Format/Datatype": INT8_FMT}],
                    "Outputs": [{"Name": "f", "Dimensions": [1, 8, 8, 8],
                                 "Format/Datatype": INT8_FMT}],
                    "ParameterType": "Convolution",
                    "Metadata": "[ONNX Layer: /model/teacher/conv1/Conv]",
                },
                {
                    "Name": "/model/ReduceSum",
                    "LayerType": "Reduce",
                    "Inputs": [{"Name": "f_dq", "Dimensions": [1, 8, 8, 8],
                                "Format/Datatype": FP32_FMT}],
                    "Outputs": [{"Name": "s", "Dimensions": [1, 1, 8, 8],
                                 "Format/Datatype": FP32_FMT}],
                    "Metadata": "[ONNX Layer: /model/ReduceSum]",
                },
            ],
            "Bindings": ["rgb", "x3d", "map_rgb", "map_3d"],
        }
    )  # fmt: skip


@dataclass
class TrtKnobs:
    """Failure knobs and records of the fake TensorRT."""

    version: str = "10.3.0"
    engine_info: str = field(default_factory=fp16_engine_info)
    context_none: bool = False
    execute_returns: bool = True
    dynamic: bool = False
    # the engine's I/O {name: (shape, numpy dtype)}; None = schema 1.0: (1,3,S,S) float32 inputs
    io: dict[str, tuple[tuple[int, ...], Any]] | None = None
    build_devices: list[int] = field(default_factory=list)
    network_flags: list[int] = field(default_factory=list)
    parsed: list[str] = field(default_factory=list)  # ONNX files given to the parser
    executed_on: list[int] = field(default_factory=list)


def tensorrt_module(rt: FakeCudaRuntime, knobs: TrtKnobs) -> types.ModuleType:
    """A module shaped like ``tensorrt`` (10.x; 8.x when ``knobs.version`` starts with 8)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = knobs.version
    major = int(knobs.version.split(".")[0])

    class DataType(enum.IntEnum):  # the real values
        FLOAT = 0
        HALF = 1
        UINT8 = 5

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    def nptype(dtype: DataType) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.UINT8: np.uint8}[
            dtype
        ]

    class Logger:
        VERBOSE, INFO, WARNING, ERROR = 4, 3, 2, 1

        def __init__(self, level: int = 2) -> None:
            self.level = level

    class Network:
        pass

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            knobs.parsed.append(path)
            return True

    class TimingCache:
        def serialize(self) -> bytes:
            return b"cache"

    class BuilderConfig:
        profiling_verbosity = None

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache()

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            return True

        def get_timing_cache(self) -> TimingCache:
            return TimingCache()

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            knobs.network_flags.append(flags)
            return Network()

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            # TensorRT builds for the device current on this thread
            knobs.build_devices.append(rt.current)
            return json.dumps({"fake-engine": True, "device": rt.current}).encode()

    class EngineInspector:
        def get_engine_information(self, fmt: str) -> str:
            return knobs.engine_info

    class ExecutionContext:
        def __init__(self, engine: CudaEngine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if not isinstance(memory, int) or isinstance(memory, bool):
                raise TypeError("set_tensor_address(): incompatible function arguments")
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int) or isinstance(stream_handle, bool):
                raise TypeError("execute_async_v3(): incompatible function arguments")
            queue = rt.stream_by_handle(stream_handle)
            names = ("rgb", "x3d", "map_rgb", "map_3d")
            if queue is None or set(self.addresses) != set(names) or not knobs.execute_returns:
                return False
            allocs = [rt._find(self.addresses[n]) for n in names]
            if any(a is None or a.pinned or a.device != self.engine.device for a in allocs):
                return False  # memory of another device (or host memory): enqueue fails
            knobs.executed_on.append(rt.current)

            def run() -> None:
                def view(name: str) -> np.ndarray:
                    shape, dtype = self.engine.spec(name)
                    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    raw = (ctypes.c_byte * nbytes).from_address(self.addresses[name])
                    return np.frombuffer(raw, dtype=dtype).reshape(shape)

                rgb = view("rgb")
                if rgb.dtype == np.uint8:  # schema 1.1: HWC bytes, normalised in the graph
                    rgb = rgb.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
                view("map_rgb")[:] = (rgb.astype(np.float32) ** 2).mean(axis=1, keepdims=True)
                view("map_3d")[:] = np.abs(view("x3d")).mean(axis=1, keepdims=True)
                rt.clock += 1.0

            queue.append(run)
            return True

    class CudaEngine:
        def __init__(self, size: int, device: int) -> None:
            self.size, self.device = size, device
            self.device_memory_size_v2 = 1 << 20

        num_io_tensors = 4

        def get_tensor_name(self, index: int) -> str:
            return ("rgb", "x3d", "map_rgb", "map_3d")[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name in ("rgb", "x3d") else TensorIOMode.OUTPUT

        def spec(self, name: str) -> tuple[tuple[int, ...], Any]:
            if knobs.io is not None:
                return knobs.io[name]
            c = 3 if name in ("rgb", "x3d") else 1
            return (1, c, self.size, self.size), np.float32

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            shape = self.spec(name)[0]
            return tuple(-1 if i != 1 else d for i, d in enumerate(shape)) if knobs.dynamic else shape

        def get_tensor_dtype(self, name: str) -> DataType:
            return {np.dtype(np.float32): DataType.FLOAT, np.dtype(np.float16): DataType.HALF,
                    np.dtype(np.uint8): DataType.UINT8}[np.dtype(self.spec(name)[1])]  # fmt: skip

        def create_execution_context(self) -> ExecutionContext | None:
            return None if knobs.context_none else ExecutionContext(self)

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> CudaEngine | None:
            try:
                json.loads(blob)
            except ValueError:
                return None
            return CudaEngine(trt.image_size, rt.current)

    trt.image_size = 8  # the engine's frame size; tests set it to the bundle's
    trt.DataType, trt.TensorIOMode, trt.nptype = DataType, TensorIOMode, nptype
    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    flags = {"STRONGLY_TYPED": 1 if major == 10 else 0} if major >= 10 else {}
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    return trt


def install_tensorrt(
    monkeypatch: pytest.MonkeyPatch, rt: FakeCudaRuntime, knobs: TrtKnobs, image_size: int
) -> types.ModuleType:
    """Put the fake ``tensorrt`` into ``sys.modules`` for engines of ``image_size``."""
    trt = tensorrt_module(rt, knobs)
    trt.image_size = image_size
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt
