"""Teacher encoders: torchvision-compatible ResNet-18 and Wide-ResNet-50-2, truncated after layer3.

TRD (trd-model.md §2) uses an ImageNet-pretrained Wide-ResNet-50-2 as a frozen teacher and reads
the outputs of layer1, layer2 and layer3 (strides 4, 8, 16). ``resnet18`` is the light variant
of this project (channels 64/128/256).

torchvision itself cannot be imported beside torch 2.13 on our machines (platform-notes.md), so
the networks are defined here with torchvision's parameter names (``conv1``, ``bn1``,
``layerN.i.convK``, ``layerN.i.downsample.{0,1}``): torchvision ``IMAGENET1K_V1`` state dicts
load with ``strict=True`` once their unused ``layer4.*`` and ``fc.*`` entries are dropped.
layer4 and fc are never built: the teacher does not run them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "BasicBlock",
    "Bottleneck",
    "Encoder",
    "backbone_spec",
    "build_encoder",
    "check_image_size",
    "init_conv_bn_",
    "split_teacher_state",
]

# The coarsest map in the model (the Filter's hourglass and the fusion bottleneck) is at 1/32 of
# the input; any other size breaks a concat (trd-model.md header: 240 fails, 256 works).
SIZE_MULTIPLE = 32


def check_image_size(height: int, width: int) -> None:
    """Raise ValueError unless the input is square-compatible with TRD (sides multiple of 32).

    Args:
        height: input height in pixels.
        width: input width in pixels.
    """
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height <= 0 or width <= 0:
        raise ValueError(
            f"TRD input size {height}x{width} is not a positive multiple of {SIZE_MULTIPLE} "
            f"on both sides (the fusion bottleneck works at 1/32 scale); resize the images "
            f"to e.g. {max(SIZE_MULTIPLE, round(height / SIZE_MULTIPLE) * SIZE_MULTIPLE)} px "
            f"(image_size must be a multiple of {SIZE_MULTIPLE})."
        )


def init_conv_bn_(module: nn.Module) -> None:
    """Reference init: Kaiming-normal (fan_out, ReLU gain) for every ``nn.Conv2d``, BN 1/0.

    ``isinstance(m, nn.Conv2d)`` deliberately does not match ``nn.ConvTranspose2d``: the
    transposed convs keep PyTorch's default init, as in torchvision and the TRD reference
    code (trd-model.md §6, §13.13).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution with padding 1 (torchvision's ``conv3x3``)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 1x1 convolution (torchvision's ``conv1x1``)."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), torchvision layout and names."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if base_width != 64:
            raise ValueError("BasicBlock only supports base_width=64 (as torchvision)")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision layout and names.

    Inner width is ``planes * base_width / 64`` (128 for Wide-ResNet-50-2), output
    ``planes * 4``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, 4*planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_res_layer(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int = 1,
    base_width: int = 64,
) -> nn.Sequential:
    """A torchvision-style residual stage; the first block changes stride/width.

    The shortcut of the first block is conv1x1(stride) + BN when the shape changes.
    """
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_ch:
        downsample = nn.Sequential(conv1x1(inplanes, out_ch, stride), nn.BatchNorm2d(out_ch))
    layers = [block(inplanes, planes, stride, downsample, base_width)]
    layers += [block(out_ch, planes, 1, None, base_width) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of a teacher backbone.

    Attributes:
        name: backbone name as used on the command line.
        block: residual block class of the encoder.
        layers: blocks per stage for layer1..layer3 (layer4 is never built).
        base_width: torchvision ``width_per_group`` (128 for the wide ResNet).
        channels: output channels of layer1, layer2, layer3.
        reductions: strides of layer1, layer2, layer3 relative to the input.
        weights_url: torchvision ``IMAGENET1K_V1`` weights.
    """

    name: str
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int]
    base_width: int
    channels: tuple[int, int, int]
    reductions: tuple[int, int, int]
    weights_url: str

    @property
    def weights_file(self) -> str:
        """File name of the ImageNet weights (as torch.hub stores it)."""
        return self.weights_url.rsplit("/", 1)[-1]


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        name="resnet18",
        block=BasicBlock,
        layers=(2, 2, 2),
        base_width=64,
        channels=(64, 128, 256),
        reductions=(4, 8, 16),
        weights_url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ),
    "wide_resnet50_2": BackboneSpec(
        name="wide_resnet50_2",
        block=Bottleneck,
        layers=(3, 4, 6),
        base_width=128,
        channels=(256, 512, 1024),
        reductions=(4, 8, 16),
        weights_url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    ),
}


def backbone_spec(name: str) -> BackboneSpec:
    """Look up a backbone by name; ValueError listing the valid names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


class Encoder(nn.Module):
    """ResNet stem + layer1..layer3 returning the three feature maps (fine -> coarse).

    Args:
        backbone: ``"resnet18"`` or ``"wide_resnet50_2"``.
    """

    def __init__(self, backbone: str = "resnet18") -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        self.spec = spec
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256), spec.layers, strict=True)):
            stride = 1 if i == 0 else 2
            layer = make_res_layer(spec.block, inplanes, planes, blocks, stride, spec.base_width)
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * spec.block.expansion
        self.reset_parameters()

    @property
    def channels(self) -> tuple[int, int, int]:
        """Output channels of layer1..layer3."""
        return self.spec.channels

    def reset_parameters(self) -> None:
        """torchvision's ResNet init (the same rule as :func:`init_conv_bn_`)."""
        init_conv_bn_(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, S, S) -> [(B, C1, S/4, S/4), (B, C2, S/8, S/8), (B, C3, S/16, S/16)]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]


def build_encoder(backbone: str = "resnet18", device: torch.device | str | None = None) -> Encoder:
    """Build a randomly initialised encoder (use ``device="meta"`` for shapes/counts only)."""
    with torch.device(device) if device is not None else nullcontext():
        return Encoder(backbone)


# Parts of a torchvision checkpoint that the truncated teacher does not hold.
UNUSED_PREFIXES = ("layer4.", "fc.")


def split_teacher_state(
    state: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Drop the unused ``layer4.*``/``fc.*`` entries of a torchvision state dict.

    Returns:
        (state dict for :class:`Encoder`, sorted list of the ignored keys).
    """
    kept = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    ignored = sorted(k for k in state if k.startswith(UNUSED_PREFIXES))
    return kept, ignored
