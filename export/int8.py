"""INT8 export: QDQ graphs made from ``model.onnx`` by onnxruntime's static quantisation,
calibrated on good frames (``trd-edge export --int8 --calibration-frames SOURCE``).

Two graphs come from one calibration (the same tensor ranges, the same FP32 nodes), because the
two INT8 runtimes want different Q/DQ types (measured, docs/int8.md):

- ``model.int8.onnx`` (onnxruntime, ``onnxruntime-int8``): uint8 asymmetric activations and
  int8 per-channel weights in a 7-bit range, onnxruntime's documented choice for x86 CPUs
  without VNNI. Asymmetric activations let the quantiser fold each ReLU into its convolution's
  output range, so every convolution becomes one QLinearConv; with symmetric int8 activations
  the ReLUs stay and a third of the convolutions are not fused (1.1x instead of ~1.8x here).
  Transposed convolutions stay FP32: onnxruntime's CPU provider has no fused INT8 kernel for
  them, so Q/DQ around them would only add work (they are 7 % of the multiply-adds).
- ``model.int8.trt.onnx`` (TensorRT, ``build-engine --precision int8``): symmetric int8
  activations and int8 per-channel weights, zero point 0 everywhere, transposed convolutions
  quantised too: what TensorRT's explicit quantisation accepts (it refuses uint8 Q/DQ and
  non-zero zero points). Built strongly typed, the Q/DQ pairs alone set the precision.

In both the input normalisation (uint8 -> float, ImageNet mean/std) and the score head
(``1 - cos`` over channels, bilinear upsampling, sum over levels) stay FP32, as do the graph's
inputs and outputs: the head's sums of squares and the map's low floor are what INT8 would hurt
most. Nodes named in ``keep_fp32`` (decided by measurement, docs/int8.md) stay FP32 too.

The graph is split structurally (`graph_parts`): every node that feeds a convolution, directly
or not, is body; body nodes before the first convolution are the input normalisation; the rest
is the head. Everything but the body goes to ``quantize_static`` as ``nodes_to_exclude``.

This module needs onnx and onnxruntime (both core dependencies), not torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edge.bundle import (
    MODEL_FP32,
    MODEL_INT8,
    MODEL_INT8_TRT,
    Bundle,
    QuantizationSpec,
    QuantizedGraph,
    file_entry,
    model_inputs,
)

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose")


@dataclass(frozen=True)
class GraphRecipe:
    """How one INT8 graph is quantised (see the module docstring for why)."""

    file: str
    activations: str  # "u8" asymmetric | "s8" symmetric
    reduce_range: bool  # 7-bit weights
    # Quantising the residual Add, ReLU and MaxPool as well keeps activations INT8 between
    # convolutions (no FP32 round trips): QLinearAdd on onnxruntime, INT8 kernels on TensorRT.
    op_types: tuple[str, ...]
    runtime: str
    # onnxruntime's QLinearConv takes an int32 bias; TensorRT's parser reads an INT32
    # DequantizeLinear as INT8 ("will use INT8 instead"), so its graph keeps FP32 biases.
    quantize_bias: bool = True

    @property
    def symmetric(self) -> bool:
        return self.activations == "s8"

    def describe(self) -> QuantizedGraph:
        return QuantizedGraph(
            path=self.file,
            runtime=self.runtime,
            activations=(
                "int8, symmetric (zero point 0), per tensor"
                if self.symmetric
                else "uint8, asymmetric, per tensor"
            ),
            weights="int8, symmetric, per output channel"
            + (", 7-bit range (reduce_range)" if self.reduce_range else "")
            + ("" if self.quantize_bias else "; FP32 biases"),
            op_types=list(self.op_types),
        )


RECIPES: dict[str, GraphRecipe] = {
    MODEL_INT8: GraphRecipe(
        "model.int8.onnx", "u8", True, ("Conv", "Add", "Relu", "MaxPool"),
        "onnxruntime (CPU: QLinearConv, QLinearAdd)",
    ),
    MODEL_INT8_TRT: GraphRecipe(
        "model.int8.trt.onnx", "s8", False, ("Conv", "ConvTranspose", "Add", "Relu", "MaxPool"),
        "TensorRT explicit quantisation (strongly typed)", quantize_bias=False,
    ),
}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_FRAMES = 64
# Nodes kept FP32 beyond the input normalisation and the head: none was needed on either
# synthetic category (docs/int8.md); add_int8(keep_fp32=...) for a model where verify flips.
DEFAULT_KEEP_FP32: tuple[str, ...] = ()


class Int8Error(ValueError):
    """The INT8 graph cannot be made (bad calibration source, too few frames, bad graph)."""


# --------------------------------------------------------------------------- graph parts


def graph_parts(model: onnx.ModelProto) -> dict[str, str]:
    """``{node name: "input" | "body" | "head"}`` of a TRD graph.

    body: the convolutions and every node upstream of one; input: body nodes that no
    convolution precedes (the uint8 cast and normalisation); head: everything downstream only
    (the cosine head, resizes, the sum of levels). Raises ``Int8Error`` for unnamed nodes (the
    exclusion list works by name) or a graph without convolutions.
    """
    nodes = list(model.graph.node)
    unnamed = [n.op_type for n in nodes if not n.name]
    if unnamed:
        raise Int8Error(f"{len(unnamed)} nodes have no name (e.g. a {unnamed[0]}); re-export")
    producer = {out: n for n in nodes for out in n.output}
    body: set[str] = set()
    stack = [n for n in nodes if n.op_type in WEIGHTED_OPS]
    if not stack:
        raise Int8Error("the graph has no convolution: nothing to quantise")
    while stack:
        node = stack.pop()
        if node.name in body:
            continue
        body.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    # nodes with a convolution upstream
    after_conv: set[str] = set()
    for n in nodes:  # graph.node is topologically sorted (ONNX requirement)
        if n.op_type in WEIGHTED_OPS or any(
            producer[i].name in after_conv for i in n.input if i in producer
        ):
            after_conv.add(n.name)
    parts = {}
    for n in nodes:
        if n.name not in body:
            parts[n.name] = "head"
        elif n.name in after_conv:
            parts[n.name] = "body"
        else:
            parts[n.name] = "input"
    return parts


def nodes_to_exclude(model: onnx.ModelProto, keep_fp32: list[str] = ()) -> dict[str, list[str]]:
    """Names of the nodes ``quantize_static`` must leave FP32, by reason."""
    parts = graph_parts(model)
    names = set(parts)
    unknown = [k for k in keep_fp32 if k not in names]
    if unknown:
        raise Int8Error(
            f"keep_fp32 names nodes that model.onnx does not have: {unknown[:3]}; list node "
            "names with `python -c \"import onnx; print([n.name for n in onnx.load(P).graph.node])\"`"
        )
    return {
        "input normalisation": sorted(k for k, v in parts.items() if v == "input"),
        "score head": sorted(k for k, v in parts.items() if v == "head"),
        "kept fp32 by measurement": sorted(keep_fp32),
    }


# --------------------------------------------------------------------------- calibration


@dataclass
class CalibrationSet:
    """Model inputs of good frames, exactly as the station feeds them."""

    feeds: list[dict[str, np.ndarray]]
    source: str
    skipped_defective: int = 0


def _resolve_source(source: str, category: str) -> str:
    """A dataset root or category folder means its training split (good parts only)."""
    path = Path(source).expanduser()
    candidates = ([path / category / "train"] if category else []) + [path / "train"]
    for candidate in candidates:
        if candidate.is_dir():
            return f"folder:{candidate}"
    return source


def calibration_set(bundle: Bundle, source: str, n_frames: int = DEFAULT_FRAMES) -> CalibrationSet:
    """Up to ``n_frames`` good frames of ``source``, preprocessed for ``bundle``.

    ``source``: a dataset root or category folder (its ``train`` split: the training set), any
    ``trd-edge run --camera`` spec (``folder:DIR``, ``file:REC.db3``, ``synthetic:CATEGORY``,
    a bare folder or recording path). Frames that the source labels defective are skipped.
    Raises ``Int8Error`` naming the source and the fix when it cannot be read or yields too
    few good frames.
    """
    from edge.processing.preprocess import preprocess
    from edge.sources import SourceError, open_source

    if n_frames < 1:
        raise Int8Error(f"--frames must be at least 1, got {n_frames}")
    cfg = bundle.preprocess_config()
    spec = _resolve_source(source, bundle.manifest.provenance.category)
    try:
        from edge.sources import SourceOptions
        from edge.sources.acquisition import station_options

        # a camera recording is read as the station reads it: the bundle's depth chain
        src = open_source(spec, station_options(SourceOptions(), spec,
                                                bundle.manifest.acquisition, "the bundle"))
        setter = getattr(src, "set_working_grid", None)
        if cfg.pipeline == "working" and setter is not None:
            setter(cfg.working_size, cfg.roi)
        src.open()
    except (SourceError, ValueError, OSError) as exc:
        raise Int8Error(
            f"--calibration-frames {source!r}: cannot read good frames ({exc}); give the "
            "training set (a dataset root or category folder with train/good), a folder of "
            "good parts, a recording (file:REC.db3) or synthetic:CATEGORY"
        ) from exc
    feeds: list[dict[str, np.ndarray]] = []
    skipped = unusable = 0
    try:
        from tqdm import tqdm

        bar = tqdm(total=n_frames, desc="int8 calibration frames", unit="frame", leave=False)
        while len(feeds) < n_frames:
            try:
                frame = src.read(timeout_s=5.0)
            except SourceError as exc:
                raise Int8Error(f"--calibration-frames {source!r} failed: {exc}") from exc
            if frame is None:
                break
            if int(frame.meta.get("label", 0) or 0) != 0:
                skipped += 1
                if skipped > 20 * n_frames:
                    break
                continue
            try:
                sample = preprocess(
                    frame.rgb, frame.xyz, cfg, framed=frame.meta.get("working_grid") is not None
                )
            except ValueError as exc:
                unusable += 1
                log.warning("calibration frame %s unusable: %s", frame.frame_number, exc)
                continue
            rgb, x3d = model_inputs(bundle.manifest.io, sample)
            feeds.append({"rgb": np.ascontiguousarray(rgb), "x3d": np.ascontiguousarray(x3d)})
            bar.update(1)
        bar.close()
    finally:
        src.close()
    if not feeds:
        raise Int8Error(
            f"--calibration-frames {source!r} delivered no good frame ({skipped} defective "
            f"skipped, {unusable} unusable); calibrate on good parts: the training set, a "
            "folder of good parts or a recording of them"
        )
    if len(feeds) < n_frames:
        log.warning(
            "int8 calibration: %s gave %d good frames, fewer than the %d asked for",
            source, len(feeds), n_frames,
        )
    return CalibrationSet(feeds, spec, skipped)


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over prepared feeds (duck-typed: get_next)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)
        self.n = len(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __len__(self) -> int:
        return self.n


# --------------------------------------------------------------------------- quantisation


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    feeds: list[dict[str, np.ndarray]] | None,
    recipe: GraphRecipe,
    method: str = "minmax",
    keep_fp32: list[str] = (),
    cache: str | Path | None = None,
) -> dict[str, list[str]]:
    """Write the QDQ INT8 graph of ``fp32_path`` to ``out_path``; returns the excluded nodes.

    ``cache``: onnxruntime's calibration cache (tensor ranges as JSON); when it exists the
    frames are not run again, so every graph of one export shares one calibration.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise Int8Error(f"calibration method {method!r}: use one of {CALIBRATION_METHODS}")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        # Shape inference (and onnxruntime's basic graph optimisations) first, as onnxruntime's
        # quantisation guide asks: a tensor of unknown shape cannot be quantised.
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(os.fspath(fp32_path), os.fspath(pre), skip_symbolic_shape=True)
        excluded = nodes_to_exclude(onnx.load(os.fspath(pre)), list(keep_fp32))
        tmp_out = Path(tmp) / "int8.onnx"
        quantize_static(
            os.fspath(pre),
            os.fspath(tmp_out),
            _Reader(feeds or []),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=True,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QInt8 if recipe.symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[n for names in excluded.values() for n in names],
            calibrate_method=methods[method],
            extra_options={
                "ActivationSymmetric": recipe.symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": recipe.quantize_bias,
            },
            calibration_cache_path=os.fspath(cache) if cache else None,
        )
        os.replace(tmp_out, out_path)
    return excluded


# --------------------------------------------------------------------------- graph check


@dataclass
class Int8Report:
    """What an INT8 graph holds (checked after export and by the tests)."""

    quantize_nodes: int
    dequantize_nodes: int
    int8_weights: int  # Conv/ConvTranspose weights stored as INT8
    per_channel_weights: int  # ... of them with one scale per output channel
    float_weights: int  # Conv/ConvTranspose weights left FP32
    nonzero_zero_points: int
    head_reads_float: bool
    io: dict[str, str]

    def problems(self, symmetric: bool = True) -> list[str]:
        """Why this is not a valid INT8 export (``symmetric``: for TensorRT as well)."""
        out = []
        if not self.quantize_nodes or not self.dequantize_nodes:
            out.append("no QuantizeLinear/DequantizeLinear nodes")
        if not self.int8_weights:
            out.append("no convolution has INT8 weights")
        if self.per_channel_weights < self.int8_weights:
            out.append(
                f"{self.int8_weights - self.per_channel_weights} INT8 weights are per-tensor"
            )
        if symmetric and self.nonzero_zero_points:
            out.append(f"{self.nonzero_zero_points} zero points are not 0 (TensorRT refuses)")
        if not self.head_reads_float:
            out.append("the score head reads quantised tensors")
        bad_io = {k: v for k, v in self.io.items() if v not in ("FLOAT", "UINT8")}
        if bad_io:
            out.append(f"I/O must stay FP32 (rgb uint8), found {bad_io}")
        return out


def int8_graph_report(path: str | Path) -> Int8Report:
    """Inspect a QDQ graph: Q/DQ counts, weight storage, zero points, head and I/O types."""
    from onnx import TensorProto, numpy_helper

    model = onnx.load(os.fspath(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {out: n for n in g.node for out in n.output}
    q = sum(n.op_type == "QuantizeLinear" for n in g.node)
    dq = [n for n in g.node if n.op_type == "DequantizeLinear"]
    nonzero = 0
    for n in [*dq, *(n for n in g.node if n.op_type == "QuantizeLinear")]:
        if len(n.input) > 2 and n.input[2] in inits:
            nonzero += int(np.any(numpy_helper.to_array(inits[n.input[2]]) != 0))
    int8_w = per_ch = float_w = 0
    for n in g.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        w = n.input[1]
        src = producer.get(w)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
            if inits[src.input[0]].data_type == TensorProto.INT8:
                int8_w += 1
                scale = numpy_helper.to_array(inits[src.input[1]])
                per_ch += int(scale.size > 1)
        else:
            float_w += 1
    # The head computes in FP32 on dequantised features: none of its tensors is quantised.
    parts = graph_parts(model)
    head_float = not any(
        n.op_type == "QuantizeLinear"
        and n.input[0] in producer
        and parts.get(producer[n.input[0]].name) == "head"
        for n in g.node
    )
    name = TensorProto.DataType.Name
    io = {v.name: name(v.type.tensor_type.elem_type) for v in [*g.input, *g.output]}
    return Int8Report(q, len(dq), int8_w, per_ch, float_w, nonzero, head_float, io)


def check_int8_graph(path: str | Path, symmetric: bool = True) -> Int8Report:
    """Raise ``Int8Error`` unless ``path`` is a valid INT8 export (see ``Int8Report``)."""
    rep = int8_graph_report(path)
    problems = rep.problems(symmetric)
    if problems:
        raise Int8Error(f"{Path(path).name} is not a valid INT8 export: " + "; ".join(problems))
    return rep


# --------------------------------------------------------------------------- bundle


def add_int8(
    bundle: Bundle,
    source: str,
    n_frames: int = DEFAULT_FRAMES,
    method: str = "minmax",
    keep_fp32: list[str] | None = None,
    graphs: tuple[str, ...] = tuple(RECIPES),
) -> list[Path]:
    """Calibrate on ``source``, write the INT8 graphs into ``bundle`` and record how.

    The manifest gains the ``model_int8`` (and ``model_int8_trt``) files and a
    ``quantization`` section (tool, calibration source, frames and method, each graph's types,
    the nodes left FP32 and why); it is saved. Raises ``Int8Error`` for a bad source or graph.
    """
    import onnxruntime

    keep = list(DEFAULT_KEEP_FP32 if keep_fp32 is None else keep_fp32)
    calib = calibration_set(bundle, source, n_frames)
    written, described = [], {}
    excluded: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(dir=bundle.path) as tmp:
        cache = Path(tmp) / "calibration.json"
        # the TensorRT graph quantises a superset of tensors: calibrate with it first
        for key in sorted(graphs, key=lambda k: -len(RECIPES[k].op_types)):
            recipe = RECIPES[key]
            out = bundle.path / recipe.file
            excluded = quantize_int8(
                bundle.file_path(MODEL_FP32), out, calib.feeds, recipe, method, keep, cache
            )
            rep = check_int8_graph(out, symmetric=recipe.symmetric)
            bundle.manifest.files[key] = file_entry(bundle.path, recipe.file)
            graph = recipe.describe()
            graph.int8_convolutions, graph.fp32_convolutions = rep.int8_weights, rep.float_weights
            described[key] = graph
            written.append(out)
    bundle.manifest.quantization = QuantizationSpec(
        tool=f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
        calibration_method=method,
        calibration_source=calib.source,
        calibration_frames=len(calib.feeds),
        graphs=described,
        excluded_nodes={k: v for k, v in excluded.items() if v},
    )
    bundle.save_manifest()
    return written
