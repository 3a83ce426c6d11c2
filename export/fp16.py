"""FP16 export: FP16 body (teacher + students), FP32 score head, FP32 inputs/outputs.

The TRD head (1 - cosine over 256-1024 channels, bilinear upsampling, sum over levels) must stay
FP32: a naive sum of squares over hundreds of FP16 channels overflows 65504. ``trainer.model``
already casts the features to float32 inside ``anomaly_map``, so a half-precision copy of the
model exported behind a wrapper that casts the inputs to half gives exactly the graph we want:
FP16 Conv/ConvTranspose/BatchNorm/ReLU, a Cast to FP32, an FP32 head. A strongly typed TensorRT
build keeps those types (TensorRT 11 has no other way to get FP16).

``fp16_graph_report`` checks the result from the ONNX file itself (initializer dtypes and the
element types flowing into convolutions and head ops), so a regression in the model code that
moves the cast cannot silently produce an FP32 "FP16" model or an FP16 head.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from onnx import TensorProto
from torch import nn

# ops of the score head: they must read float32 (the body must have been cast back first)
HEAD_OPS = frozenset({"ReduceSum", "ReduceL2", "Pow", "Sqrt", "Div", "Resize", "Clip", "Sub"})
BODY_OPS = frozenset({"Conv", "ConvTranspose"})
# the graph's inputs: FP32 (schema 1.0), or raw uint8 RGB and the FP32 3D image (schema 1.1)
_INPUT_TYPES = {"rgb": ("FLOAT", "UINT8")}


class HalfBody(nn.Module):
    """Wraps a half-precision copy of a TRD: FP32 in -> FP16 body -> FP32 head -> FP32 out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half().eval()

    def forward(self, rgb: torch.Tensor, x3d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        map_rgb, map_3d = self.model(rgb.half(), x3d.half())
        # The head already returns float32; the cast keeps the output contract if it ever doesn't.
        return map_rgb.float(), map_3d.float()


@dataclass
class Fp16Report:
    """Dtypes found in an exported graph."""

    initializers: Counter = field(default_factory=Counter)  # dtype name -> count
    initializer_bytes: Counter = field(default_factory=Counter)
    body_inputs: Counter = field(default_factory=Counter)  # dtype of Conv/ConvTranspose data input
    head_inputs: Counter = field(default_factory=Counter)  # dtype of head-op data inputs
    fp16_head_nodes: list[str] = field(default_factory=list)
    fp32_body_nodes: list[str] = field(default_factory=list)
    io: dict[str, str] = field(default_factory=dict)

    @property
    def fp16_weight_fraction(self) -> float:
        total = sum(self.initializer_bytes.values())
        return self.initializer_bytes.get("FLOAT16", 0) / total if total else 0.0

    def problems(self) -> list[str]:
        """Why this graph is not 'FP16 body, FP32 head, FP32 I/O' (empty when it is)."""
        out = []
        if self.fp16_weight_fraction < 0.99:
            out.append(
                f"only {self.fp16_weight_fraction:.1%} of the weight bytes are FP16 "
                f"({dict(self.initializers)})"
            )
        if self.fp32_body_nodes:
            out.append(
                f"{len(self.fp32_body_nodes)} convolutions read FP32, e.g. "
                f"{self.fp32_body_nodes[0]}"
            )
        if self.fp16_head_nodes:
            out.append(
                f"{len(self.fp16_head_nodes)} score-head ops read FP16 (overflow risk), "
                f"e.g. {self.fp16_head_nodes[0]}"
            )
        if not self.head_inputs.get("FLOAT"):
            out.append("no FP32 score-head op found")
        bad_io = {
            k: v for k, v in self.io.items()
            if v not in _INPUT_TYPES.get(k, ("FLOAT",))
        }
        if bad_io:
            out.append(f"I/O must be FP32 (rgb may be UINT8), found {bad_io}")
        return out


def fp16_graph_report(path: str | Path) -> Fp16Report:
    """Inspect an ONNX file: weight dtypes, and the dtype read by every conv and head op."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    name = TensorProto.DataType.Name
    types: dict[str, str] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = name(vi.type.tensor_type.elem_type)
    rep = Fp16Report()
    for init in g.initializer:
        dt = name(init.data_type)
        types[init.name] = dt
        rep.initializers[dt] += 1
        n = 1
        for d in init.dims:
            n *= d
        rep.initializer_bytes[dt] += n * (2 if dt in ("FLOAT16", "BFLOAT16") else 4)
    for node in g.node:
        if not node.input:
            continue
        dt = types.get(node.input[0], "UNKNOWN")
        label = f"{node.op_type}:{node.name or node.output[0]}"
        if node.op_type in BODY_OPS:
            rep.body_inputs[dt] += 1
            if dt != "FLOAT16":
                rep.fp32_body_nodes.append(label)
        elif node.op_type in HEAD_OPS:
            rep.head_inputs[dt] += 1
            if dt == "FLOAT16":
                rep.fp16_head_nodes.append(label)
    for vi in [*g.input, *g.output]:
        rep.io[vi.name] = name(vi.type.tensor_type.elem_type)
    return rep


def check_fp16_graph(path: str | Path) -> Fp16Report:
    """Raise ``ValueError`` unless ``path`` is FP16 body / FP32 head / FP32 I/O."""
    rep = fp16_graph_report(path)
    problems = rep.problems()
    if problems:
        raise ValueError(
            f"{Path(path).name} is not a valid FP16 export: "
            + "; ".join(problems)
            + ". The model must cast features to float32 before the cosine head "
            "(trainer.model.anomaly_map)."
        )
    return rep
