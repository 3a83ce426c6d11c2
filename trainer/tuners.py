"""TRD's crossmodal tuners: the Crossmodal Filter and the Crossmodal Amplifier.

Both take the *other* modality's teacher features ``[t1, t2, t3]`` (fine -> coarse) and return
three tensors shaped like the *own* teacher features (trd-model.md §3, §4).

* Filter (reference class ``NormalProjector_8``): per level an hourglass of
  Conv k2 s2 + BN + ReLU steps (halve H, double C) down to 1/32 of the input (8x8 at 256), then
  as many ConvTranspose k2 s2 + BN + ReLU steps back. Down steps are 3/2/1 for levels 1/2/3.
  The reference returns the output list twice; only one copy is returned here.
* Amplifier (reference ``Projector_Amply_upsample``): per level conv3x3 C->C, conv1x1 C->2C,
  conv1x1 2C->C, each + BN + ReLU; shapes preserved.

Widths come from the backbone (``channels=(C1, C2, C3)``): 256/512/1024 for Wide-ResNet-50-2
(59,794,944 and 17,905,664 parameters), 64/128/256 for the light resnet18 variant. All convs are
bias-free; Conv2d gets the Kaiming init, transposed convs keep PyTorch's default (§6).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from trainer.backbones import init_conv_bn_

__all__ = ["CrossmodalAmplifier", "CrossmodalFilter", "FILTER_DOWN_STEPS"]

# Levels 1/2/3 sit at 1/4, 1/8, 1/16 of the input; 3/2/1 stride-2 steps reach 1/32.
FILTER_DOWN_STEPS = (3, 2, 1)


def _cbr(conv: nn.Module, out_ch: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def hourglass(channels: int, steps: int) -> nn.Sequential:
    """One Filter level: ``steps`` x (Conv k2 s2, C->2C) then ``steps`` x (ConvT k2 s2, 2C->C)."""
    layers: list[nn.Module] = []
    ch = channels
    for _ in range(steps):
        layers += _cbr(nn.Conv2d(ch, 2 * ch, 2, stride=2, bias=False), 2 * ch)
        ch *= 2
    for _ in range(steps):
        layers += _cbr(nn.ConvTranspose2d(ch, ch // 2, 2, stride=2, bias=False), ch // 2)
        ch //= 2
    return nn.Sequential(*layers)


class CrossmodalFilter(nn.Module):
    """Crossmodal Filter: other-modality features -> own feature space through a 1/32 hourglass.

    Args:
        channels: teacher widths (C1, C2, C3) of levels 1..3.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != len(FILTER_DOWN_STEPS):
            raise ValueError(f"expected 3 level widths, got {tuple(channels)}")
        self.levels = nn.ModuleList(
            hourglass(c, n) for c, n in zip(channels, FILTER_DOWN_STEPS, strict=True)
        )
        init_conv_bn_(self)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[(B,C1,S/4,S/4), (B,C2,S/8,S/8), (B,C3,S/16,S/16)] -> same shapes (non-negative)."""
        return [level(f) for level, f in zip(self.levels, feats, strict=True)]


def amplifier_level(channels: int) -> nn.Sequential:
    """One Amplifier level: conv3x3 C->C, conv1x1 C->2C, conv1x1 2C->C, each + BN + ReLU."""
    c = channels
    return nn.Sequential(
        *_cbr(nn.Conv2d(c, c, 3, padding=1, bias=False), c),
        *_cbr(nn.Conv2d(c, 2 * c, 1, bias=False), 2 * c),
        *_cbr(nn.Conv2d(2 * c, c, 1, bias=False), c),
    )


class CrossmodalAmplifier(nn.Module):
    """Crossmodal Amplifier: other-modality features -> own features, full resolution.

    Despite the reference name (``..._upsample``) nothing is upsampled spatially; the channel
    width doubles in the middle.

    Args:
        channels: teacher widths (C1, C2, C3) of levels 1..3.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"expected 3 level widths, got {tuple(channels)}")
        self.levels = nn.ModuleList(amplifier_level(c) for c in channels)
        init_conv_bn_(self)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """[(B,C1,S/4,S/4), (B,C2,S/8,S/8), (B,C3,S/16,S/16)] -> same shapes (non-negative)."""
        return [level(f) for level, f in zip(self.levels, feats, strict=True)]
