"""Build, key, inspect and (if need be) refuse TensorRT engines for a bundle.

Written against the documented TensorRT 10 / 11 Python API. TensorRT cannot be installed on the
development machines of this project, so everything that touches ``tensorrt`` is imported
lazily and checked on real hardware with ``deploy/check_tensorrt.py``; the pure-Python parts
(engine key, layer-precision report, refusal rule) are unit-tested with TensorRT absent.

Why strongly typed: TensorRT 11 removed weak typing (no ``BuilderFlag.FP16``), and JetPack 6
(TensorRT 10.3) supports strongly typed networks too. The precision therefore comes from the
ONNX itself (``model.fp16.onnx``: FP16 body, FP32 score head), and one build path works on both.
A field report had an "FP16" TensorRT 11 build silently come out FP32, so every built engine
is inspected (``EngineInspector`` JSON, needs ``ProfilingVerbosity.DETAILED``) before it is kept.

INT8 is explicit quantisation: ``model.int8.trt.onnx`` (export/int8.py) carries symmetric INT8
Q/DQ pairs around the body's convolutions, and a strongly typed build takes its precisions from
them (no ``BuilderFlag.INT8``, no calibrator: TensorRT's explicit-quantisation guide says not
to set precision flags with Q/DQ networks). The engine is refused unless its convolutions run
in INT8.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.backends.base import BackendError
from edge.bundle import (
    MODEL_FP16,
    MODEL_FP32,
    MODEL_INT8_TRT,
    Bundle,
    EngineEntry,
    load_bundle,
    sha256_file,
)

log = logging.getLogger(__name__)

# What `pip install 'trd-edge[trt]'` installs: cuda-python 13.x needs an NVIDIA driver >= 580,
# JetPack 6 has a 540-series one (CUDA 12.6); 12.x runs on every driver >= 525.
CUDA_PYTHON_PIN = "cuda-python>=12.6,<13"
CUDA13_MIN_DRIVER = 580

TRT_MISSING = (
    "TensorRT is not installed; fix: on a Jetson it comes with JetPack (sudo apt-get install "
    "python3-libnvinfer), on x86 use NVIDIA's TensorRT packages or the nvcr.io/nvidia/tensorrt "
    "image; meanwhile use --backend onnxruntime"
)
TRT_UNLOADABLE = (
    "TensorRT is installed but cannot be loaded ({exc}); fix: in a Jetson container the "
    "NVIDIA runtime mounts TensorRT's libraries when the container starts: run it with "
    "--runtime nvidia (or default-runtime nvidia in /etc/docker/daemon.json)"
)
CUDA_MISSING = (
    f"cuda-python is not installed; fix: pip install 'trd-edge[trt]' ({CUDA_PYTHON_PIN}), or "
    "'trd-edge[trt-cuda13]' with an NVIDIA driver >= 580"
)


# precision -> the bundle graph a strongly typed build parses
ENGINE_GRAPHS = {"fp16": MODEL_FP16, "fp32": MODEL_FP32, "int8": MODEL_INT8_TRT}
PRECISIONS = tuple(ENGINE_GRAPHS)


class EngineRefused(BackendError):
    """A built engine does not run in the precision that was asked for (or flips verdicts)."""


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def require_tensorrt10(trt: Any) -> None:
    """Refuse TensorRT < 10: engines are built strongly typed, which 8.x cannot do.

    On 8.x ``STRONGLY_TYPED`` does not exist and network flags 0 mean implicit batch, which
    the ONNX parser rejects with a misleading error; say what to do instead.
    """
    version = str(getattr(trt, "__version__", "?"))
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if _major(version) < 10 or not hasattr(flags, "STRONGLY_TYPED"):
        raise BackendError(
            f"TensorRT {version} is too old: trd-edge builds strongly typed networks, which need "
            "TensorRT >= 10 (JetPack 6.0 ships TensorRT 8.6, JetPack 6.1/6.2 ship 10.3); fix: "
            "update the Jetson to JetPack 6.1 or later (x86: TensorRT >= 10), or use "
            "--backend onnxruntime"
        )


def import_tensorrt():
    """``import tensorrt`` (>= 10) or raise ``BackendError`` saying why and how to fix it."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "tensorrt"):  # a dependency of the bindings is missing
            raise BackendError(TRT_UNLOADABLE.format(exc=exc)) from exc
        raise BackendError(TRT_MISSING) from exc
    except (ImportError, OSError) as exc:  # e.g. libnvdla_compiler.so not mounted
        raise BackendError(TRT_UNLOADABLE.format(exc=exc)) from exc
    require_tensorrt10(trt)
    return trt


def import_cudart():
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), or the older ``cuda.cudart`` module."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except ImportError as exc:
            raise BackendError(CUDA_MISSING) from exc
    return cudart


def cuda_python_version() -> str:
    """Version of the installed CUDA Python bindings ("?" when unknown)."""
    bindings = sys.modules.get("cuda.bindings")
    version = getattr(bindings, "__version__", None)
    if version:
        return str(version)
    from importlib import metadata

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def driver_cuda_version() -> int | None:
    """The CUDA version the loaded driver supports, e.g. 12060; 0 = no driver; None = unknown."""
    try:
        err, version = import_cudart().cudaDriverGetVersion()
    except Exception:  # noqa: BLE001 - only used to explain another error
        return None
    return int(version) if int(err) == 0 and version is not None else None


def _cuda_version_text(version: int) -> str:
    return f"CUDA {version // 1000}.{version % 1000 // 10}"


def cuda_error_advice(code: int) -> tuple[str, str]:
    """(reason, fix) for a CUDA error code, with what this machine's driver says."""
    if code == 35:  # cudaErrorInsufficientDriver
        driver, bindings = driver_cuda_version(), cuda_python_version()
        if driver == 0:
            return (
                "no NVIDIA driver is loaded",
                "install the NVIDIA driver (JetPack on a Jetson); in a container use "
                "--runtime nvidia (Jetson) or --gpus all (desktop)",
            )
        needs = f"CUDA {_major(bindings)}" if _major(bindings) else "a newer CUDA"
        if _major(bindings) >= 13:
            needs = f"an NVIDIA driver >= {CUDA13_MIN_DRIVER}"
        has = _cuda_version_text(driver) if driver else "an older CUDA"
        return (
            f"cuda-python {bindings} needs {needs}, this driver supports {has}",
            f"pip install '{CUDA_PYTHON_PIN}' (JetPack 6 and drivers < {CUDA13_MIN_DRIVER}; "
            f"`pip install 'trd-edge[trt]'` does so) or upgrade the NVIDIA driver",
        )
    if code == 100:  # cudaErrorNoDevice
        return (
            "no CUDA device is visible",
            "in a container use --runtime nvidia (Jetson) or --gpus all (desktop); on the host "
            "check `nvidia-smi` / the JetPack install and that the user is in group video",
        )
    if code == 101:  # cudaErrorInvalidDevice
        return ("no CUDA device with that number", "use a device index below the GPU count")
    if code == 2:  # cudaErrorMemoryAllocation
        return (
            "out of GPU memory",
            "stop other processes using the GPU (`nvidia-smi`, `tegrastats`) and restart",
        )
    return (
        "the CUDA driver refused the call",
        "check the driver (`nvidia-smi` on a desktop, `cat /etc/nv_tegra_release` on a Jetson)",
    )


class CudaError(BackendError):
    """A cuda-python call failed; the message names the error, the reason and the fix."""

    def __init__(self, what: str, err: Any) -> None:
        self.code = int(err)
        name = getattr(err, "name", None) or f"cudaError {self.code}"
        self.reason, self.fix = cuda_error_advice(self.code)
        super().__init__(
            f"CUDA error during {what}: {name} ({self.code}): {self.reason}; fix: {self.fix}"
        )


def cuda_check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising ``CudaError`` on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CudaError(what, err)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}{self.minor}"


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of a CUDA device (via cuda-python)."""
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(name=str(name), major=int(props.major), minor=int(props.minor))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


def engine_key(gpu_name: str, compute_capability: str, trt_version: str, precision: str) -> str:
    """``<gpu>-sm<cc>-trt<version>-<precision>``, e.g. ``nvidia-orin-sm87-trt10.3.0-fp16``.

    Engines are only valid on the GPU model and TensorRT version they were built with, so all
    four parts are in the file name; a change of any part means "rebuild".
    """
    cc = compute_capability.replace(".", "")
    if not cc.isdigit():
        raise ValueError(f"compute capability {compute_capability!r} is not like '87' or '8.7'")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return f"{_slug(gpu_name)}-sm{cc}-trt{_slug(trt_version)}-{precision}"


# --------------------------------------------------------------------------- layer report

_CONV_RE = re.compile(r"(de)?convolution", re.IGNORECASE)
# Layers that only move or reinterpret data: their formats say nothing about compute precision.
_BOOKKEEPING = {"reformat", "noop", "shuffle", "constant", "identity", "cast"}


def tensor_precision(fmt: str) -> str:
    """Map an inspector ``Format/Datatype`` string to fp32 | fp16 | bf16 | int8 | fp8 | other."""
    f = fmt.lower()
    if "bf16" in f or "bfloat" in f:
        return "bf16"
    if "fp16" in f or "half" in f:
        return "fp16"
    if "fp8" in f:
        return "fp8"
    if "int8" in f:
        return "int8"
    if "fp32" in f or "float" in f:
        return "fp32"
    return "other"


# ONNX ops whose precision is the engine's precision (the cost of the TRD graph is in them).
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# ONNX ops that only move, reshape or convert data.
_ONNX_BOOKKEEPING = {
    "Cast", "Constant", "Identity", "Reshape", "Shape", "Squeeze", "Unsqueeze", "Flatten",
    "Transpose", "Concat", "Split", "Slice", "Gather", "Expand",
}  # fmt: skip
# Inspector "Metadata" of a layer: "[ONNX Layer: <node>( | ...)*]" per ONNX node, joined with
# \x1f for fused layers (onnx-tensorrt's processMetadata); long strings are cut in the middle.
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^|\]\x1f]+?)(?: \|[^\]\x1f]*)?\]")
_ONNX_DTYPES = {1: "fp32", 10: "fp16", 16: "bf16", 3: "int8", 11: "fp64"}


def onnx_node_precisions(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``{node name: (op_type, precision of its first input)}`` of an ONNX file.

    Types come from the graph's inputs, initializers and (after shape inference) value_info;
    weights in external data files are not read. Unnamed nodes are keyed by their first output.
    """
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - types of graph inputs/initializers still help
        log.warning("ONNX shape inference failed for %s; precisions may be partial", path)
    graph = model.graph
    dtypes = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info)}
    dtypes |= {v.name: v.type.tensor_type.elem_type for v in graph.output}
    dtypes |= {init.name: init.data_type for init in graph.initializer}
    # A QDQ graph: an op whose data input is DequantizeLinear(INT8 tensor) computes in INT8
    # once TensorRT fuses the pair (explicit quantisation), though the ONNX types say float.
    dequantized = {
        n.output[0]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and dtypes.get(n.input[0]) == 3
    }
    nodes = {}
    for node in graph.node:
        name = node.name or (node.output[0] if node.output else node.op_type)
        first = dtypes.get(node.input[0]) if node.input else None
        precision = _ONNX_DTYPES.get(first or 0, "other")
        if node.input and node.input[0] in dequantized and node.op_type != "DequantizeLinear":
            precision = "int8"
        nodes[name] = (node.op_type, precision)
    return nodes


def metadata_onnx_layers(metadata: str) -> tuple[list[str], bool]:
    """(ONNX node names named in a layer's inspector Metadata, complete?)."""
    names = _ONNX_LAYER_RE.findall(metadata or "")
    complete = bool(names) and "..." not in metadata
    return [n.strip() for n in names], complete


def _is_opaque(layer: dict) -> bool:
    """A Myelin layer: TensorRT's fused subgraph whose inner precisions the inspector hides."""
    kind = str(layer.get("LayerType", "")).lower()
    return kind == "myelin" or str(layer.get("Name", "")).startswith("{ForeignNode[")


@dataclass
class LayerReport:
    """What the engine inspector says about the precisions of an engine's layers."""

    n_layers: int = 0
    # compute layers (bookkeeping excluded) by the precision of their first input
    by_precision: Counter = field(default_factory=Counter)
    conv_by_precision: Counter = field(default_factory=Counter)
    fp32_convs: list[str] = field(default_factory=list)
    fp16_tensors: int = 0
    # Myelin/ForeignNode layers, and the non-weighted FP16 ONNX nodes found inside them
    opaque_layers: list[str] = field(default_factory=list)
    opaque_fp16_nodes: int = 0
    decided_from_onnx: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "by_precision": dict(self.by_precision),
            "conv_by_precision": dict(self.conv_by_precision),
            "fp32_convs": self.fp32_convs[:20],
            "fp16_tensors": self.fp16_tensors,
            "opaque_layers": [name[:120] for name in self.opaque_layers[:5]],
            "opaque_fp16_nodes": self.opaque_fp16_nodes,
            "decided_from_onnx": self.decided_from_onnx,
        }


def _add_opaque(report: LayerReport, layer: dict, onnx_nodes: dict[str, tuple[str, str]]) -> None:
    """Count what runs inside a Myelin layer from the ONNX nodes it was built from.

    The network is built strongly typed, so TensorRT must compute each ONNX node in the type
    the ONNX gives it: the ONNX's types *are* the precisions inside the fused layer. The layer's
    Metadata names its nodes; when it names none that the ONNX has, or was cut short, every
    node of the ONNX is taken (strict: one FP32 convolution anywhere refuses the engine).
    """
    name = str(layer.get("Name", "?"))
    report.opaque_layers.append(name)
    report.decided_from_onnx = True
    named, complete = metadata_onnx_layers(str(layer.get("Metadata", "")))
    known = [n for n in named if n in onnx_nodes]
    members = known if (known and complete) else list(onnx_nodes)
    for node in members:
        op, precision = onnx_nodes[node]
        if op in _WEIGHTED_OPS:
            report.conv_by_precision[precision] += 1
            if precision == "fp32":
                report.fp32_convs.append(f"{node} (inside {name[:60]})")
        elif op not in _ONNX_BOOKKEEPING and precision == "fp16":
            report.opaque_fp16_nodes += 1


def parse_layer_report(
    engine_info: str | dict, onnx_nodes: dict[str, tuple[str, str]] | None = None
) -> LayerReport:
    """Parse ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    The JSON (ProfilingVerbosity.DETAILED) is ``{"Layers": [{"Name", "LayerType", "Inputs":
    [{"Name", "Location", "Dimensions", "Format/Datatype"}], "Outputs": [...], "ParameterType",
    "TacticValue" or "TacticName", "StreamId", "Metadata": "[ONNX Layer: ...]"}], "Bindings":
    [...]}``; with less than DETAILED verbosity ``Layers`` is a list of names only, which cannot
    be checked. A Myelin layer (``"LayerType": "Myelin"``, named ``{ForeignNode[first...last]}``)
    shows only its boundary tensors, often the FP32 engine I/O, whatever runs inside; with
    ``onnx_nodes`` (``onnx_node_precisions`` of the ONNX it was built from) its contents are
    counted from the ONNX instead (see ``_add_opaque``).
    """
    data = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise EngineRefused("engine information has no 'Layers' list; cannot check precisions")
    report = LayerReport(n_layers=len(layers))
    for layer in layers:
        if not isinstance(layer, dict):
            raise EngineRefused(
                "engine information lists layer names only: the engine was built without "
                "ProfilingVerbosity.DETAILED, so its precisions cannot be checked; rebuild it"
            )
        if _is_opaque(layer) and onnx_nodes:
            _add_opaque(report, layer, onnx_nodes)
            continue
        if _is_opaque(layer):
            report.opaque_layers.append(str(layer.get("Name", "?")))
        tensors = [*layer.get("Inputs", []), *layer.get("Outputs", [])]
        precisions = [tensor_precision(str(t.get("Format/Datatype", ""))) for t in tensors]
        report.fp16_tensors += precisions.count("fp16")
        kind = str(layer.get("LayerType", ""))
        if kind.lower() in _BOOKKEEPING or not layer.get("Inputs"):
            continue
        first = precisions[0] if precisions else "other"
        report.by_precision[first] += 1
        named, _ = metadata_onnx_layers(str(layer.get("Metadata", "")))
        # Myelin kernels ("gemm", "kgen") computing an ONNX Conv/MatMul count as convolutions
        weighted = any((onnx_nodes or {}).get(n, ("", ""))[0] in _WEIGHTED_OPS for n in named)
        param = str(layer.get("ParameterType", ""))
        is_conv = _CONV_RE.search(kind) or _CONV_RE.search(param) or weighted
        if is_conv:
            report.conv_by_precision[first] += 1
            if first == "fp32":
                report.fp32_convs.append(str(layer.get("Name", "?")))
    return report


def check_precision(report: LayerReport, precision: str, allowed_float_convs: int = 0) -> None:
    """Raise ``EngineRefused`` unless the engine's convolutions run in ``precision``.

    The TRD graph's cost is all in (transposed) convolutions; the score head (cosine, resize,
    sum) is FP32 by design, so only convolution layers are held to the asked precision. When
    TensorRT fused everything into Myelin layers, their convolutions are counted from the ONNX
    (``parse_layer_report(..., onnx_nodes)``); with no convolution visible at all an FP16 engine
    must at least carry FP16 tensors or FP16 ONNX nodes inside its Myelin layers. An INT8
    engine must run its convolutions in INT8 but ``allowed_float_convs`` (those the export
    kept FP32 on purpose, counted in the manifest's ``quantization``).
    """
    convs = sum(report.conv_by_precision.values())
    if precision == "fp16":
        if convs:
            if report.fp32_convs:
                raise EngineRefused(
                    f"asked for an FP16 engine but {len(report.fp32_convs)} of {convs} "
                    f"convolution layers run in FP32 (e.g. {report.fp32_convs[0]!r}); check that "
                    "model.fp16.onnx is really FP16 (re-export with --fp16) and that the network "
                    "was built strongly typed"
                )
            if not report.conv_by_precision.get("fp16"):
                raise EngineRefused(
                    f"asked for an FP16 engine but no convolution runs in FP16 "
                    f"({dict(report.conv_by_precision)})"
                )
        elif report.fp16_tensors == 0 and report.opaque_fp16_nodes == 0:
            hidden = (
                f" (Myelin layers {report.opaque_layers[:2]} hide their insides; the ONNX they "
                "were built from was not given)"
                if report.opaque_layers and not report.decided_from_onnx
                else ""
            )
            raise EngineRefused(
                "asked for an FP16 engine but the engine has no FP16 tensor at all" + hidden
            )
    elif precision == "fp32":
        low = {p: n for p, n in report.conv_by_precision.items() if p not in ("fp32", "other")}
        if low:
            raise EngineRefused(f"asked for an FP32 engine but convolutions run in {low}")
    elif precision == "int8":
        int8 = report.conv_by_precision.get("int8", 0)
        other = convs - int8
        if not int8:
            raise EngineRefused(
                f"asked for an INT8 engine but no convolution runs in INT8 "
                f"({dict(report.conv_by_precision) or 'no convolution visible'}); check that "
                "model.int8.trt.onnx has Q/DQ pairs (re-export with --int8) and that the network "
                "was built strongly typed"
            )
        if other > allowed_float_convs:
            not_int8 = {p: n for p, n in report.conv_by_precision.items() if p != "int8"}
            raise EngineRefused(
                f"asked for an INT8 engine but {other} of {convs} convolution layers run in "
                f"{not_int8} (the export keeps {allowed_float_convs} FP32), e.g. "
                f"{(report.fp32_convs or ['?'])[0]!r}"
            )
    else:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


# --------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    key: str
    path: Path
    report: LayerReport
    seconds: float
    reused: bool


def _trt_logger(trt, verbose: bool = False):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def _strongly_typed_network(trt, builder):
    # TensorRT 10 needs the flag (value 1); TensorRT 11 keeps it (value 0, deprecated: every
    # network is strongly typed). It is absent only on 8.x, where flags 0 would mean implicit
    # batch: refuse that instead of building something else than asked.
    require_tensorrt10(trt)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def inspect_engine(trt, engine) -> str:
    """The engine inspector's JSON for all layers."""
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def build_engine(
    bundle: Bundle,
    precision: str = "fp16",
    force: bool = False,
    workspace_gb: float | None = None,
    device: int = 0,
    verbose: bool = False,
) -> BuildResult:
    """Build (or reuse) this GPU's engine for ``bundle`` and record it in the manifest.

    The engine goes to ``engines/<key>.plan``, its layer report next to it
    (``<key>.layers.json``), the timing cache to ``engines/timing-<gpu>-sm<cc>-trt<ver>.cache``
    (reused by later builds). Raises ``EngineRefused`` (and keeps nothing) when the built engine
    is not in the asked precision.
    """
    trt = import_tensorrt()
    cudart = import_cudart()
    # TensorRT builds (and tunes tactics) for the calling thread's current device, so make it
    # `device` for the build and give the caller its own back afterwards.
    previous = cuda_check(cudart.cudaGetDevice(), "cudaGetDevice")
    cuda_check(cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
    try:
        return _build_engine(trt, bundle, precision, force, workspace_gb, device, verbose)
    finally:
        if previous != device:
            cudart.cudaSetDevice(previous)


def _build_engine(
    trt: Any,
    bundle: Bundle,
    precision: str,
    force: bool,
    workspace_gb: float | None,
    device: int,
    verbose: bool,
) -> BuildResult:
    """``build_engine`` once ``device`` is the current CUDA device."""
    gpu = gpu_info(device)
    key = engine_key(gpu.name, gpu.compute_capability, trt.__version__, precision)
    plan = bundle.engine_path(key)
    entry = bundle.manifest.engines.get(key)
    if plan.is_file() and not force:
        if entry is not None and entry.sha256 == sha256_file(plan):
            report_path = plan.with_suffix(".layers.json")
            report = (
                parse_layer_report(json.loads(report_path.read_text())["engine_information"])
                if report_path.is_file()
                else LayerReport()
            )
            return BuildResult(key, plan, report, 0.0, reused=True)
        log.warning("engine %s is not the one recorded in the manifest; rebuilding", plan.name)

    if precision not in ENGINE_GRAPHS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    onnx_path = bundle.file_path(ENGINE_GRAPHS[precision])
    plan.parent.mkdir(parents=True, exist_ok=True)
    cache_path = plan.parent / (
        f"timing-{_slug(gpu.name)}-sm{gpu.compute_capability}-trt{_slug(trt.__version__)}.cache"
    )
    start = time.perf_counter()
    logger = _trt_logger(trt, verbose)
    builder = trt.Builder(logger)
    network = _strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector needs it
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path.name} (see log)")
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    blob = bytes(serialized)

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise BackendError("TensorRT could not deserialize the engine it just built")
    info = inspect_engine(trt, engine)
    # Myelin layers hide what runs inside them: then the (strongly typed) ONNX decides.
    opaque = "Myelin" in info or "ForeignNode" in info
    report = parse_layer_report(info, onnx_node_precisions(onnx_path) if opaque else None)
    check_precision(report, precision, _float_convs_kept(bundle, precision))  # before storing

    tmp = plan.with_suffix(".plan.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, plan)
    plan.with_suffix(".layers.json").write_text(
        json.dumps({"report": report.as_dict(), "engine_information": info}, indent=1)
    )
    bundle.manifest.engines[key] = EngineEntry(
        path=os.fspath(plan.relative_to(bundle.path)),
        sha256=sha256_file(plan),
        bytes=plan.stat().st_size,
        precision=precision,
        gpu=gpu.name,
        compute_capability=gpu.compute_capability,
        trt_version=str(trt.__version__),
        layer_precisions=dict(report.conv_by_precision),
    )
    bundle.save_manifest()
    return BuildResult(key, plan, report, time.perf_counter() - start, reused=False)


def _float_convs_kept(bundle: Bundle, precision: str) -> int:
    """Convolutions the INT8 export left FP32 on purpose (0 for other precisions)."""
    q = bundle.manifest.quantization
    if precision != "int8" or q is None or MODEL_INT8_TRT not in q.graphs:
        return 0
    return q.graphs[MODEL_INT8_TRT].fp32_convolutions


def refuse_engine(bundle: Bundle, key: str, reason: str) -> Path | None:
    """Take a bad engine out of service: rename it ``*.plan.refused`` and drop it from the manifest.

    Returns the new path (or None when there was no file).
    """
    plan = bundle.engine_path(key)
    target = None
    if plan.is_file():
        target = plan.with_name(plan.name + ".refused")
        os.replace(plan, target)
        target.with_name(plan.stem + ".refused.txt").write_text(reason + "\n")
    if bundle.manifest.engines.pop(key, None) is not None:
        bundle.save_manifest()
    log.error("refused TensorRT engine %s: %s", key, reason)
    return target


def run_build_engine(args) -> int:
    """Handler of ``trd-edge build-engine --bundle DIR [--force] [--precision fp16|fp32|int8]``."""
    bundle = load_bundle(args.bundle)
    precision = getattr(args, "precision", None) or "fp16"
    try:
        result = build_engine(
            bundle,
            precision=precision,
            force=bool(getattr(args, "force", False)),
            workspace_gb=getattr(args, "workspace_gb", None),
            verbose=bool(getattr(args, "verbose", False)),
        )
    except EngineRefused as exc:
        print(f"trd-edge build-engine: engine refused: {exc}")
        return 3
    state = "reused" if result.reused else f"built in {result.seconds:.1f} s"
    print(f"engine {result.key} {state}: {result.path}")
    print(f"layer precisions (convolutions): {dict(result.report.conv_by_precision)}")
    return 0


def add_build_engine_args(parser) -> None:
    """Arguments of ``trd-edge build-engine`` (for the CLI's sub-parser)."""
    parser.add_argument("--bundle", required=True, help="model bundle folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if an engine exists")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp16",
        help="fp16 (model.fp16.onnx), fp32 (model.onnx) or int8 (model.int8.trt.onnx, explicit "
        "quantisation; export with --int8)",
    )
    parser.add_argument("--workspace-gb", type=float, default=None, help="builder workspace limit")
