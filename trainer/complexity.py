"""Parameter and MAC counts of the TRD graph, per part (trd-model.md §11).

MACs are measured with ``torch.utils.flop_counter.FlopCounterMode`` on a model built on the
**meta device**: no weights are allocated and nothing is computed, so the full-size
Wide-ResNet-50-2 graph (~411 M parameters, ~116.5 GMACs at 256²) is counted in a second or two.
Like §11, only matrix ops are counted (here: convolutions and transposed convolutions;
BN, ReLU, adds, the cosine head and interpolation are not), and 1 MAC = 2 FLOPs.

Because the shared teacher runs once on the concatenated RGB + 3D batch, ``teacher`` MACs are
those of **both** teacher passes (the reference's two teachers).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainer.model import TRD

__all__ = ["PartCost", "complexity_table", "count_macs", "count_parameters", "format_table"]

STUDENT_PARTS = ("filter", "amplifier", "bottleneck", "decoder")


def count_parameters(model: nn.Module, max_depth: int = 2) -> dict[str, int]:
    """Parameter counts of ``model`` and of its sub-modules up to ``max_depth`` levels down.

    Returns:
        ``{"total": n, "trainable": n, "<child>": n, "<child>.<grandchild>": n, ...}``; for a
        :class:`TRD`: ``teacher``, ``student_rgb``, ``student_rgb.filter``, ... Parameters
        shared between modules are counted once in ``total``.
    """
    counts: dict[str, int] = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for name, module in model.named_modules():
        if name and name.count(".") < max_depth:
            counts[name] = sum(p.numel() for p in module.parameters())
    return counts


def count_macs(
    backbone: str = "wide_resnet50_2", image_size: int = 256, batch: int = 1, max_depth: int = 2
) -> dict[str, int]:
    """MACs of one ``TRD.forward`` (both modalities, both students, map head) per part.

    The model is built on the meta device, so this is cheap even for the full-size model.

    Args:
        backbone: ``"resnet18"`` or ``"wide_resnet50_2"``.
        image_size: input side (multiple of 32).
        batch: frames per forward.
        max_depth: deepest module path reported (``teacher.layer1`` is depth 2).

    Returns:
        ``{"total": macs, "teacher": ..., "teacher.conv1": ..., "student_rgb.filter": ...}``.
    """
    with torch.device("meta"):
        model = TRD(backbone).eval()
        rgb = torch.empty(batch, 3, image_size, image_size)
        x3d = torch.empty(batch, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(rgb, x3d)
    macs: dict[str, int] = defaultdict(int)
    root = type(model).__name__
    for path, per_op in counter.get_flop_counts().items():
        if path == root:  # same totals as "Global"
            continue
        name = "total" if path == "Global" else path.removeprefix(root + ".")
        if name != "total" and name.count(".") >= max_depth:
            continue
        macs[name] = sum(per_op.values()) // 2
    return dict(macs)


@dataclass(frozen=True)
class PartCost:
    """One row of the complexity table."""

    part: str
    params: int
    macs: int


def complexity_table(backbone: str = "wide_resnet50_2", image_size: int = 256) -> list[PartCost]:
    """Per-part parameters and MACs per frame, as in trd-model.md §11.

    Rows: teacher (shared, both passes), the four parts of one student, one student, the whole
    graph (one shared teacher + two students).
    """
    with torch.device("meta"):
        params = count_parameters(TRD(backbone))
    macs = count_macs(backbone, image_size)
    rows = [PartCost("teacher (stem + layer1-3, 2 passes)", params["teacher"], macs["teacher"])]
    rows += [
        PartCost(f"student.{part}", params[f"student_rgb.{part}"], macs[f"student_rgb.{part}"])
        for part in STUDENT_PARTS
    ]
    rows.append(PartCost("one student", params["student_rgb"], macs["student_rgb"]))
    rows.append(PartCost("whole graph", params["total"], macs["total"]))
    return rows


def format_table(rows: list[PartCost]) -> str:
    """Plain-text table: part, parameters, GMACs, GFLOPs."""
    lines = [f"{'part':<40}{'params':>15}{'GMACs':>10}{'GFLOPs':>10}"]
    for r in rows:
        lines.append(f"{r.part:<40}{r.params:>15,}{r.macs / 1e9:>10.2f}{2 * r.macs / 1e9:>10.2f}")
    return "\n".join(lines)
