"""TRD's fusion bottleneck (reference ``bn_fuse`` / ``BN_fuse_layer``, trd-model.md §5).

Each level of the own teacher features is concatenated (own first) with the Crossmodal Filter's
output of the same shape, reduced to ``C3 @ S/16`` by 3x3 convs, the three results are
concatenated (``3*C3 @ S/16``) and passed through a residual "one-class embedding" stage
(as RD4AD's OCBE) whose first block has stride 2:

===========  =========================================  ===============================
path         Wide-ResNet-50-2 (C = 256/512/1024)        resnet18 light (C = 64/128/256)
===========  =========================================  ===============================
L1           conv s2 2C1->C3, conv s2 C3->C3            same rule: 128->256, 256->256
L2           conv s2 2C2->C3                            256->256
L3           conv s1 2C3->C3                            512->256
residual     3 Bottlenecks, planes 512, width 1024      2 BasicBlocks, planes 512
output       ``2048 @ S/32`` (90,738,688 params)        ``512 @ S/32`` (= 2*C3)
===========  =========================================  ===============================

The resnet18 residual stage follows RD4AD's resnet18 OCBE (two BasicBlocks to 512 channels);
every conv is bias-free and followed by BN (+ ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from trainer.backbones import (
    BasicBlock,
    Bottleneck,
    backbone_spec,
    conv3x3,
    init_conv_bn_,
    make_res_layer,
)

__all__ = ["FusionBottleneck", "build_fusion"]


def _cbr3x3(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [conv3x3(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class FusionBottleneck(nn.Module):
    """Fuse own teacher features with Filter outputs into the decoder's input ``z``.

    Args:
        channels: teacher widths (C1, C2, C3).
        block: residual block of the embedding stage.
        blocks: number of residual blocks.
        base_width: torchvision ``width_per_group`` for bottleneck blocks.
    """

    def __init__(
        self,
        channels: Sequence[int],
        block: type[BasicBlock] | type[Bottleneck],
        blocks: int,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.level1 = nn.Sequential(*_cbr3x3(2 * c1, c3, 2), *_cbr3x3(c3, c3, 2))
        self.level2 = nn.Sequential(*_cbr3x3(2 * c2, c3, 2))
        self.level3 = nn.Sequential(*_cbr3x3(2 * c3, c3, 1))
        out_ch = 2 * c3
        self.embed = make_res_layer(
            block, 3 * c3, out_ch // block.expansion, blocks, stride=2, base_width=base_width
        )
        self.out_channels = out_ch
        init_conv_bn_(self)

    def forward(self, own: Sequence[Tensor], filtered: Sequence[Tensor]) -> Tensor:
        """Own features + Filter outputs (both ``[C1@S/4, C2@S/8, C3@S/16]``) -> ``2*C3 @ S/32``."""
        paths = (self.level1, self.level2, self.level3)
        reduced = [
            p(torch.cat([t, f], dim=1)) for p, t, f in zip(paths, own, filtered, strict=True)
        ]
        return self.embed(torch.cat(reduced, dim=1)).contiguous()


def build_fusion(backbone: str) -> FusionBottleneck:
    """The fusion bottleneck of ``backbone`` (3 Bottlenecks for WRN-50-2, 2 BasicBlocks for r18)."""
    spec = backbone_spec(backbone)
    blocks = 3 if spec.block is Bottleneck else 2
    return FusionBottleneck(spec.channels, spec.block, blocks, spec.base_width)
