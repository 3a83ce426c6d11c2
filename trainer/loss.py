"""TRD training loss (trd-model.md §7).

``D(S, T) = sum_l mean_b [1 - cos(flat(S_l[b]), flat(T_l[b]))]``: a *global* cosine per level
and sample over the whole flattened ``C x H x W`` map (as RD4AD), cosine eps 1e-8. Per branch,
four equally weighted terms, all against the branch's **own** teacher features:
``D(S_plain) + D(F) + D(A) + D(S_amp)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.model import StudentOutput

__all__ = ["branch_loss", "branch_loss_terms", "global_cosine_distance"]

COSINE_EPS = 1e-8


def global_cosine_distance(students: Sequence[Tensor], teachers: Sequence[Tensor]) -> Tensor:
    """Sum over levels of the batch mean of ``1 - cos`` between flattened feature maps.

    Args:
        students: per level ``(B, C_l, H_l, W_l)``.
        teachers: per level, same shapes.

    Returns:
        Scalar tensor in ``[0, 2 * levels]`` (float32 even for FP16 features).
    """
    if len(students) != len(teachers) or not students:
        raise ValueError(
            f"global_cosine_distance needs the same non-zero number of levels, got "
            f"{len(students)} student and {len(teachers)} teacher tensors"
        )
    total = torch.zeros((), dtype=torch.float32, device=students[0].device)
    for level, (s, t) in enumerate(zip(students, teachers, strict=True)):
        if s.shape != t.shape:
            raise ValueError(
                f"level {level + 1}: student shape {tuple(s.shape)} != teacher shape "
                f"{tuple(t.shape)}"
            )
        cos = F.cosine_similarity(s.float().flatten(1), t.float().flatten(1), dim=1, eps=COSINE_EPS)
        total = total + (1.0 - cos).mean()
    return total


def branch_loss_terms(out: StudentOutput, t_own: Sequence[Tensor]) -> dict[str, Tensor]:
    """The four loss terms of one branch, keyed by the :class:`StudentOutput` field name."""
    return {name: global_cosine_distance(feats, t_own) for name, feats in out._asdict().items()}


def branch_loss(out: StudentOutput, t_own: Sequence[Tensor]) -> Tensor:
    """One branch's loss: ``D(S_plain) + D(F) + D(A) + D(S_amp)`` against the own teacher."""
    terms = branch_loss_terms(out, t_own)
    return terms["plain"] + terms["filtered"] + terms["amplified"] + terms["blended"]
