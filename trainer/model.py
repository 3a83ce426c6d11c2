"""The TRD model: one frozen teacher, an RGB student and a 3D student (trd-model.md §1, §8).

A student is {fusion bottleneck, decoder, Crossmodal Filter, Crossmodal Amplifier} (reference
construction order). The branch of modality ``m`` reads its own teacher features and the other
modality's teacher features:

    F = Filter(T_other);  A = Amplifier(T_other);  z = Bottleneck(T_own, F)
    (S_amp, S_plain) = Decoder(z, A)

The reference keeps two identical frozen teachers; one shared instance is equivalent (§13.18)
and runs once per step on ``cat([rgb, x3d])`` (BatchNorm in eval mode, so batching the two
modalities changes nothing).

``TRD.forward`` is the export graph: two inputs (RGB, 3D image), two per-modality anomaly maps
``1 - cos`` over channels between ``S_amp`` and the teacher, upsampled (bilinear,
align_corners=True) and summed over the three levels, always in FP32 (§8).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.backbones import Encoder, backbone_spec, check_image_size, split_teacher_state
from trainer.decoder import Decoder, build_decoder
from trainer.fusion import FusionBottleneck, build_fusion
from trainer.tuners import CrossmodalAmplifier, CrossmodalFilter
from trainer.weights import check_teacher_state

__all__ = ["BRANCHES", "TRD", "Student", "StudentOutput", "anomaly_map", "build_student"]

log = logging.getLogger(__name__)

Branch = Literal["rgb", "3d"]
BRANCHES: tuple[Branch, Branch] = ("rgb", "3d")
COSINE_EPS = 1e-8


class StudentOutput(NamedTuple):
    """One branch's outputs, every list fine -> coarse like the teacher features.

    Attributes:
        filtered: Crossmodal Filter outputs ``F``.
        amplified: Crossmodal Amplifier outputs ``A``.
        plain: decoder stage outputs before their blend, ``S_plain``.
        blended: decoder outputs after the Amplifier blend, ``S_amp`` (used for scoring).
    """

    filtered: list[Tensor]
    amplified: list[Tensor]
    plain: list[Tensor]
    blended: list[Tensor]


class Student(nn.Module):
    """One TRD student: {bottleneck, decoder, filter, amplifier}.

    Args:
        bottleneck: fusion bottleneck.
        decoder: reverse-ResNet decoder.
        filter: Crossmodal Filter.
        amplifier: Crossmodal Amplifier.
    """

    def __init__(
        self,
        bottleneck: FusionBottleneck,
        decoder: Decoder,
        filter: CrossmodalFilter,  # noqa: A002 - the paper's name for the module
        amplifier: CrossmodalAmplifier,
    ) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.filter = filter
        self.amplifier = amplifier

    def forward(self, t_own: Sequence[Tensor], t_other: Sequence[Tensor]) -> StudentOutput:
        """Own and other teacher features (3 levels each) -> :class:`StudentOutput`."""
        filtered = self.filter(t_other)
        amplified = self.amplifier(t_other)
        z = self.bottleneck(t_own, filtered)
        dec = self.decoder(z, amplified)
        return StudentOutput(filtered, amplified, dec.plain, dec.blended)


def build_student(backbone: str) -> Student:
    """A freshly initialised student for ``backbone`` (reference construction order)."""
    channels = backbone_spec(backbone).channels
    bottleneck = build_fusion(backbone)
    decoder = build_decoder(backbone)
    return Student(bottleneck, decoder, CrossmodalFilter(channels), CrossmodalAmplifier(channels))


def anomaly_map(
    students: Sequence[Tensor], teachers: Sequence[Tensor], size: Sequence[int]
) -> Tensor:
    """Sum over levels of ``1 - cos`` (channel axis) upsampled to ``size``, in FP32.

    Features are cast to float32 **before** any arithmetic: a sum of squares over 256-1024
    FP16 channels overflows (max 65504), so an FP16 body still gets an exact FP32 head.
    Vectorised over the batch (the reference indexes ``[0, 0]`` and needs batch 1).

    Args:
        students: ``S_amp`` per level, ``(B, C_l, H_l, W_l)``.
        teachers: own teacher features, same shapes.
        size: output ``(H, W)``.

    Returns:
        ``(B, 1, H, W)`` float32.
    """
    total: Tensor | None = None
    for s, t in zip(students, teachers, strict=True):
        s32, t32 = s.float(), t.float()
        dot = (s32 * t32).sum(dim=1, keepdim=True)
        norms = (
            s32.pow(2).sum(dim=1, keepdim=True).sqrt() * t32.pow(2).sum(dim=1, keepdim=True).sqrt()
        )
        level = 1.0 - dot / norms.clamp_min(COSINE_EPS)
        level = F.interpolate(level, size=tuple(size), mode="bilinear", align_corners=True)
        total = level if total is None else total + level
    if total is None:
        raise ValueError("anomaly_map needs at least one feature level")
    return total


class TRD(nn.Module):
    """Tuned Reverse Distillation: shared frozen teacher + ``student_rgb`` + ``student_3d``.

    Args:
        backbone: ``"resnet18"`` (light) or ``"wide_resnet50_2"`` (paper).
        teacher_state: torchvision-format teacher state dict (from
            :func:`trainer.weights.resolve_teacher_weights`), or None to keep the random init.
            ``layer4.*``/``fc.*`` entries are ignored (listed in ``teacher_ignored_keys``);
            everything else must match exactly (else ``TeacherWeightsError``).
    """

    def __init__(self, backbone: str = "resnet18", teacher_state: dict | None = None) -> None:
        super().__init__()
        self.backbone = backbone_spec(backbone).name
        self.teacher = Encoder(backbone)
        self.teacher_ignored_keys: list[str] = []
        if teacher_state is not None:
            check_teacher_state(teacher_state, self.backbone, "teacher_state")
            kept, self.teacher_ignored_keys = split_teacher_state(teacher_state)
            self.teacher.load_state_dict(kept, strict=True)
            if self.teacher_ignored_keys:
                log.info(
                    "teacher weights: ignored %d unused entries (layer4/fc)",
                    len(self.teacher_ignored_keys),
                )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        # Reference construction order: 3D student first, then RGB (only matters for RNG).
        self.student_3d = build_student(backbone)
        self.student_rgb = build_student(backbone)

    def train(self, mode: bool = True) -> TRD:
        """Set the students' mode; the teacher always stays in eval (running BN statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def student(self, name: Branch) -> Student:
        """The student of branch ``"rgb"`` or ``"3d"``."""
        if name == "rgb":
            return self.student_rgb
        if name == "3d":
            return self.student_3d
        raise ValueError(f"unknown branch {name!r}; use 'rgb' or '3d'")

    def student_parameters(self, name: Branch) -> Iterator[nn.Parameter]:
        """Trainable parameters of one student (one optimizer per branch, §7)."""
        return self.student(name).parameters()

    def teacher_features(self, rgb: Tensor, x3d: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """One frozen teacher pass over both modalities.

        Args:
            rgb: ``(B, 3, S, S)`` normalised RGB, S a multiple of 32.
            x3d: ``(B, 3, S, S)`` normalised 3D image (depth or normals).

        Returns:
            ``(T_rgb, T_3d)``, each ``[(B,C1,S/4,S/4), (B,C2,S/8,S/8), (B,C3,S/16,S/16)]``.
        """
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            _check_inputs(rgb, x3d)
        b = rgb.shape[0]
        with torch.no_grad():
            feats = self.teacher(torch.cat([rgb, x3d], dim=0))
        return [f[:b] for f in feats], [f[b:] for f in feats]

    def branch(
        self, name: Branch, t_rgb: Sequence[Tensor], t_3d: Sequence[Tensor]
    ) -> StudentOutput:
        """Run one student: own features of branch ``name``, the other modality as assist."""
        if name == "rgb":
            return self.student_rgb(t_rgb, t_3d)
        if name == "3d":
            return self.student_3d(t_3d, t_rgb)
        raise ValueError(f"unknown branch {name!r}; use 'rgb' or '3d'")

    def anomaly_maps(self, rgb: Tensor, x3d: Tensor) -> tuple[Tensor, Tensor]:
        """Raw per-modality anomaly maps ``(map_rgb, map_3d)``, each ``(B, 1, S, S)`` float32."""
        t_rgb, t_3d = self.teacher_features(rgb, x3d)
        size = rgb.shape[-2:]
        map_rgb = anomaly_map(self.branch("rgb", t_rgb, t_3d).blended, t_rgb, size)
        map_3d = anomaly_map(self.branch("3d", t_rgb, t_3d).blended, t_3d, size)
        return map_rgb, map_3d

    # The export graph: two inputs, two maps.
    forward = anomaly_maps


def _check_inputs(rgb: Tensor, x3d: Tensor) -> None:
    for name, x in (("rgb", rgb), ("x3d", x3d)):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"TRD input {name!r} has shape {tuple(x.shape)}; expected (B, 3, S, S) "
                f"(a 3-channel image batch, channels first)"
            )
    if rgb.shape != x3d.shape:
        raise ValueError(
            f"TRD inputs differ in shape: rgb {tuple(rgb.shape)} vs x3d {tuple(x3d.shape)}; "
            f"preprocess both modalities to the same image_size"
        )
    check_image_size(int(rgb.shape[-2]), int(rgb.shape[-1]))
