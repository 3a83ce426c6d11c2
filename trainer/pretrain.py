"""Offline teachers: good teacher weights without downloading ImageNet checkpoints.

Two tools, both producing a torchvision-format state dict that ``--teacher-weights FILE``
(`trainer.weights.resolve_teacher_weights`) accepts:

* :func:`recalibrate_bn` re-estimates the BatchNorm running statistics of a (random) encoder on
  real inputs. A freshly initialised BN layer has running mean 0 / var 1, so in eval mode it is
  the identity and activations are badly scaled from layer to layer; re-estimating the
  statistics on the data the teacher will see (the "BN adaptation" trick of Li et al.,
  "Revisiting Batch Normalization for Practical Domain Adaptation", ICLR-W 2017) makes every
  channel zero-mean / unit-variance on that data.
* :func:`pretrain_teacher` pretrains the encoder on formula-driven images
  (`trainer.procedural`), following Kataoka et al., "Pre-training without Natural Images"
  (ACCV 2020 / IJCV 2022): no natural image and no download is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["recalibrate_bn"]


@torch.no_grad()
def recalibrate_bn(encoder: nn.Module, batches: Iterable[Tensor]) -> int:
    """Replace every BatchNorm's running statistics by their average over ``batches``.

    The statistics are reset and accumulated with a cumulative moving average
    (``momentum=None``), so the result is the plain mean of the per-batch statistics,
    independent of the order of equal-size batches. Weights and affine parameters are not
    touched; the encoder is left in eval mode.

    Args:
        encoder: module holding ``nn.BatchNorm2d`` layers (e.g. :class:`trainer.backbones.Encoder`).
        batches: iterable of input tensors ``(B, 3, S, S)``, already normalised like the
            teacher's inputs. Use batches of several images: a batch of one gives per-image
            statistics.

    Returns:
        Number of batches seen.

    Raises:
        ValueError: if ``batches`` is empty or ``encoder`` has no BatchNorm layer.
    """
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("recalibrate_bn: the encoder has no BatchNorm layer to recalibrate")
    saved = [(m.momentum, m.training) for m in bns]
    was_training = encoder.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    encoder.train()
    n = 0
    try:
        for x in batches:
            encoder(x)
            n += 1
    finally:
        for m, (momentum, _) in zip(bns, saved, strict=True):
            m.momentum = momentum
        encoder.train(was_training)
        encoder.eval()
    if n == 0:
        raise ValueError("recalibrate_bn: no input batches were given (empty training split?)")
    return n
