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

import argparse
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from trainer.backbones import BACKBONES, Encoder, backbone_spec, check_image_size

__all__ = [
    "PretrainResult",
    "add_pretrain_teacher_args",
    "offline_teacher_path",
    "pretrain_teacher",
    "recalibrate_bn",
    "recalibrate_teacher",
    "run_pretrain_teacher",
    "save_teacher",
    "wants_bn_recalibration",
]


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
    saved = [m.momentum for m in bns]
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
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        encoder.eval()  # a teacher always runs with its running statistics
    if n == 0:
        raise ValueError("recalibrate_bn: no input batches were given (empty training split?)")
    return n


def wants_bn_recalibration(teacher_weights: str, backbone: str) -> bool:
    """Whether training should re-estimate the teacher's BatchNorm statistics on its data.

    Yes for every offline teacher (``random``, or a file such as ``pretrain-teacher`` writes);
    no for ImageNet weights (``imagenet``, or a file carrying torchvision's ImageNet file name),
    whose statistics TRD uses as they are.
    """
    key = teacher_weights.strip()
    if key.lower() == "imagenet":
        return False
    return Path(key).name != backbone_spec(backbone).weights_file


@torch.no_grad()
def recalibrate_teacher(
    model: nn.Module, loader: Iterable[dict], device: torch.device | str
) -> int:
    """Recalibrate ``model.teacher``'s BatchNorm on a loader of ``{"rgb", "x3d"}`` batches.

    The TRD teacher is shared by both modalities and runs on ``cat([rgb, x3d])``
    (:meth:`trainer.model.TRD.teacher_features`), so it is recalibrated on exactly that
    mixture. Returns the number of batches used.
    """
    batches = (torch.cat([b["rgb"], b["x3d"]]).to(device) for b in loader)
    return recalibrate_bn(model.teacher, batches)


ASSETS = Path(__file__).resolve().parent / "assets"
# Shipped teachers made by `trd-edge pretrain-teacher` (provenance: the .json beside each file).
OFFLINE_TEACHERS = {"resnet18": "resnet18_fractal_s0.pth"}


def offline_teacher_path(backbone: str) -> Path:
    """The shipped fractal-pretrained teacher file for ``backbone`` (``--teacher-weights offline``).

    Raises:
        FileNotFoundError: no teacher is shipped for ``backbone``, or the package lacks the file.
    """
    name = OFFLINE_TEACHERS.get(backbone)
    if name is None:
        raise FileNotFoundError(
            f"no offline teacher is shipped for backbone {backbone!r} (only for "
            f"{', '.join(sorted(OFFLINE_TEACHERS))}); make one with `trd-edge pretrain-teacher "
            f"--backbone {backbone} --out FILE` and pass --teacher-weights FILE."
        )
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped offline teacher {path} is missing from this installation; reinstall "
            f"trd-edge, or recreate it with the command in {path.with_suffix('.json').name}."
        )
    return path


# ImageNet normalisation: the teacher sees inputs normalised like this (edge.processing.preprocess).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class _Classifier(nn.Module):
    """Encoder + global-average-pooled linear head on layer3 (the teacher's deepest level)."""

    def __init__(self, backbone: str, n_classes: int) -> None:
        super().__init__()
        self.encoder = Encoder(backbone)
        self.head = nn.Linear(self.encoder.channels[2], n_classes)

    def forward(self, x: Tensor) -> Tensor:
        f3 = self.encoder(x)[2]
        return self.head(f3.mean(dim=(2, 3)))


@dataclass
class PretrainResult:
    """What :func:`pretrain_teacher` returns besides the weights (for the provenance file)."""

    state_dict: dict[str, Tensor]
    final_loss: float
    final_accuracy: float
    seconds: float


def pretrain_teacher(
    backbone: str = "resnet18",
    steps: int = 600,
    image_size: int = 64,
    batch_size: int = 48,
    n_classes: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain the teacher encoder by classifying formula-driven fractal images.

    FractalDB-style supervised pretraining (Kataoka et al., ACCV 2020 / IJCV 2022) on
    :class:`trainer.procedural.ProceduralImages`: AdamW with a one-cycle learning rate, cross-entropy over ``n_classes`` IFS categories. Deterministic for a given seed
    (single process, CPU).

    Returns:
        :class:`PretrainResult` whose ``state_dict`` holds the encoder in torchvision format
        (``conv1.*``, ``bn1.*``, ``layer1..3.*``; no ``layer4``/``fc``).
    """
    from tqdm import tqdm

    from trainer.procedural import ProceduralImages

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    check_image_size(image_size, image_size)
    torch.manual_seed(seed)
    model = _Classifier(backbone, n_classes)
    data = ProceduralImages(n_classes=n_classes, image_size=image_size, seed=seed)
    # AdamW rather than the paper's SGD: it learns within the few hundred steps a CPU allows.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    ema_loss, ema_acc = float("nan"), float("nan")
    model.train()
    bar = tqdm(range(steps), desc=f"pretrain {backbone}", unit="step", disable=not progress)
    for step in bar:
        images, labels = data.batch(batch_size)
        x = (torch.from_numpy(images) - mean) / std
        y = torch.from_numpy(labels)
        logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc = float((logits.argmax(1) == y).float().mean())
        a = 0.9 if step else 0.0
        ema_loss = a * (ema_loss if step else 0.0) + (1 - a) * float(loss.detach())
        ema_acc = a * (ema_acc if step else 0.0) + (1 - a) * acc
        bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.2f}")
    bar.close()
    model.eval()
    state = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    return PretrainResult(state, ema_loss, ema_acc, time.perf_counter() - t0)


def save_teacher(path: str | Path, state: dict[str, Tensor], provenance: dict) -> Path:
    """Write ``state`` (torchvision format) to ``path`` and ``provenance`` to ``path + .json``.

    The weights are stored as a plain state dict, so ``--teacher-weights PATH`` loads them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    Path(f"{path}.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return path


def add_pretrain_teacher_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``trd-edge pretrain-teacher`` (wired by ``edge/cli.py``)."""
    parser.add_argument("--out", required=True, help="output .pth file (torchvision state dict)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet18")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600, help="optimisation steps")
    parser.add_argument("--image-size", type=int, default=64, help="multiple of 32")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--classes", type=int, default=64, help="number of fractal categories")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    return parser


def run_pretrain_teacher(args: argparse.Namespace) -> int:
    """``trd-edge pretrain-teacher``: FractalDB-style pretraining, writes FILE and FILE.json."""
    from trainer.run import git_revision

    res = pretrain_teacher(
        backbone=args.backbone,
        steps=args.steps,
        image_size=args.image_size,
        batch_size=args.batch_size,
        n_classes=args.classes,
        lr=args.lr,
        seed=args.seed,
        progress=getattr(args, "progress", True),
    )
    provenance = {
        "kind": "fractal-pretrained teacher (Kataoka et al., Pre-training without Natural Images)",
        "backbone": args.backbone,
        "seed": args.seed,
        "steps": args.steps,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "classes": args.classes,
        "lr": args.lr,
        "final_loss": round(res.final_loss, 4),
        "final_accuracy": round(res.final_accuracy, 4),
        "seconds": round(res.seconds, 1),
        "torch_version": torch.__version__,
        "git_revision": git_revision(),
        "command": "trd-edge pretrain-teacher "
        + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}"
            for k in (
                "out",
                "backbone",
                "seed",
                "steps",
                "image_size",
                "batch_size",
                "classes",
                "lr",
            )
        ),
    }
    out = save_teacher(args.out, res.state_dict, provenance)
    print(
        f"teacher weights written to {out} (use --teacher-weights {out}); "
        f"fractal accuracy {res.final_accuracy:.2f} after {args.steps} steps, {res.seconds:.0f} s"
    )
    return 0
