"""TRD's student decoder: a reverse ResNet with Amplifier blends (trd-model.md §6).

Three stages mirror the teacher's layer3, layer2, layer1. The first block of each stage
upsamples x2 with a ConvTranspose2d k2 s2 (no padding) in place of its stride conv, with a
ConvTranspose2d k2 s2 + BN shortcut (RD4AD's de-ResNet); other blocks are plain residual
blocks with an identity shortcut.

* Wide-ResNet-50-2: de-bottlenecks [3, 4, 6], width_per_group 128, ``2048@S/32`` ->
  ``1024@S/16`` -> ``512@S/8`` -> ``256@S/4`` (24,917,510 params with the blend weights).
* resnet18 (light): de-basic-blocks [2, 2, 2], ``512@S/32`` -> ``256`` -> ``128`` -> ``64``.

Only the reference's ``forward_fuse`` is implemented: after each stage the output is blended
with the Amplifier's output of the same level by a softmax over a learnable 2-vector
(initialised to [1, 1], i.e. 0.5/0.5), and the **blended** tensor feeds the next stage (current
reference semantics, all gradients flow; the pre-May-2025 detach variant is not reproduced).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from trainer.backbones import (
    Bottleneck,
    backbone_spec,
    conv1x1,
    conv3x3,
    init_conv_bn_,
)

__all__ = ["DeBasicBlock", "DeBottleneck", "Decoder", "DecoderOutput", "build_decoder"]


def deconv2x2(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """Bias-free ConvTranspose2d k2 s2: doubles H and W exactly."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, bias=False)


class DeBasicBlock(nn.Module):
    """Reverse basic block: (ConvT k2 s2 | conv3x3) -> BN -> ReLU -> conv3x3 -> BN, + shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = deconv2x2(inplanes, planes) if stride == 2 else conv3x3(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, planes, H*stride, W*stride)."""
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DeBottleneck(nn.Module):
    """Reverse bottleneck: 1x1 -> (ConvT k2 s2 | 3x3) -> 1x1 (x4), + shortcut."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        upsample: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width) if stride == 2 else conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, 4*planes, H*stride, W*stride)."""
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_de_layer(
    block: type[DeBasicBlock] | type[DeBottleneck],
    inplanes: int,
    planes: int,
    blocks: int,
    base_width: int = 64,
) -> nn.Sequential:
    """A decoder stage whose first block upsamples x2 (ConvT k2 s2 + BN shortcut)."""
    out_ch = planes * block.expansion
    upsample = nn.Sequential(deconv2x2(inplanes, out_ch), nn.BatchNorm2d(out_ch))
    extra = {"base_width": base_width} if block is DeBottleneck else {}
    layers = [block(inplanes, planes, 2, upsample, **extra)]
    layers += [block(out_ch, planes, 1, None, **extra) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class DecoderOutput(NamedTuple):
    """Decoder outputs, both fine -> coarse like the teacher list.

    Attributes:
        blended: ``S_amp = [c, b, a]``, stage outputs after the Amplifier blend.
        plain: ``S_plain = [c0, b0, a0]``, stage outputs before their own blend.
    """

    blended: list[Tensor]
    plain: list[Tensor]


class Decoder(nn.Module):
    """Reverse ResNet with softmax blends of the Amplifier outputs (``forward_fuse``).

    Args:
        in_channels: channels of the fusion bottleneck output ``z`` (2*C3).
        channels: teacher widths (C1, C2, C3); stage outputs match them.
        block: decoder block class.
        layers: blocks per stage, coarse -> fine (decoder layer1..layer3).
        base_width: width_per_group for de-bottlenecks.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        block: type[DeBasicBlock] | type[DeBottleneck],
        layers: Sequence[int],
        base_width: int = 64,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        e = block.expansion
        self.layer1 = make_de_layer(block, in_channels, c3 // e, layers[0], base_width)
        self.layer2 = make_de_layer(block, c3, c2 // e, layers[1], base_width)
        self.layer3 = make_de_layer(block, c2, c1 // e, layers[2], base_width)
        # Blend logits (reference names); softmax([1, 1]) = 0.5 / 0.5 at start.
        self.w_a = nn.Parameter(torch.ones(2))
        self.w_b = nn.Parameter(torch.ones(2))
        self.w_c = nn.Parameter(torch.ones(2))
        init_conv_bn_(self)

    @staticmethod
    def _blend(logits: Tensor, decoded: Tensor, amplified: Tensor) -> Tensor:
        w = torch.softmax(logits, dim=0)
        return w[0] * decoded + w[1] * amplified

    def forward(self, z: Tensor, amplified: Sequence[Tensor]) -> DecoderOutput:
        """``z`` (B, 2*C3, S/32, S/32) and Amplifier outputs [A1, A2, A3] -> DecoderOutput."""
        a0 = self.layer1(z)
        a = self._blend(self.w_a, a0, amplified[2])
        b0 = self.layer2(a)
        b = self._blend(self.w_b, b0, amplified[1])
        c0 = self.layer3(b)
        c = self._blend(self.w_c, c0, amplified[0])
        return DecoderOutput(blended=[c, b, a], plain=[c0, b0, a0])


def build_decoder(backbone: str) -> Decoder:
    """The decoder of ``backbone`` (reverse WRN-50-2 [3,4,6] or reverse resnet18 [2,2,2])."""
    spec = backbone_spec(backbone)
    if spec.block is Bottleneck:
        block: type[DeBasicBlock] | type[DeBottleneck] = DeBottleneck
        layers = (3, 4, 6)
    else:
        block, layers = DeBasicBlock, (2, 2, 2)
    return Decoder(2 * spec.channels[2], spec.channels, block, layers, spec.base_width)
