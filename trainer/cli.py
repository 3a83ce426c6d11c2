"""Handlers for the torch-side sub-commands `train` and `eval`."""

from __future__ import annotations

import argparse
import json

from trainer.evaluate import evaluate
from trainer.run import TrainConfig
from trainer.train import train


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration from `trd-edge train`'s arguments (defaults resolved)."""
    # --teacher-weights offline: the measured offline recipe (docs/any-shape.md) is the default,
    # input size, alignment and Sobel aperture chosen from the good training images; flags
    # override.
    offline = args.teacher_weights == "offline"
    backbone = args.backbone or ("resnet18" if offline else "wide_resnet50_2")
    image_size = args.image_size or (None if offline else 256)  # None: chosen from the data
    batch_size = args.batch_size or (8 if offline else 16)
    epochs = args.epochs or (20 if offline else None)
    return TrainConfig(
        data_root=args.data_root,
        category=args.category,
        modality=args.modality,
        backbone=backbone,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        choose_from_data=offline,
        lr=args.lr,
        teacher_weights=args.teacher_weights,
        seed=args.seed,
        device=args.device,
        deterministic=getattr(args, "deterministic", True),
        num_workers=args.num_workers,
        sobel_ksize=args.sobel_ksize,
        depth_smoothing=getattr(args, "depth_smoothing", None),
        depth_filter=getattr(args, "depth_filter", None),
        depth_noise=None,
        outline_smoothing=getattr(args, "outline_smoothing", None),
        augment=args.augment,
        align=args.align,
        preprocess=getattr(args, "preprocess", "working"),
        roi=getattr(args, "roi", None),
        rgb_resize=getattr(args, "rgb_resize", "area"),
        score_region=getattr(args, "score_region", None),
        score_fusion=getattr(args, "score_fusion", None),
        fill_dropouts=None,
        heights=getattr(args, "heights", None),
    )


def run_train(args: argparse.Namespace) -> int:
    """`trd-edge train`."""
    out = train(train_config_from_args(args), args.out)
    print(f"trained run written to {out}")
    return 0


def _fmt(v: float | None) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def run_eval(args: argparse.Namespace) -> int:
    """`trd-edge eval`: prints a summary table; the full result goes to --json."""
    res = evaluate(
        args.run, args.data_root, args.category, json_out=args.json_out,
        report_dir=args.report, device=args.device, batch_size=args.batch_size,
    )
    keys = ("image_auroc", "pixel_auroc", "aupro@0.3", "image_ap", "image_f1_max")
    print(f"{'':8}" + "".join(f"{k:>13}" for k in keys))
    for b in ("fused", "rgb", "3d"):
        print(f"{b:8}" + "".join(f"{_fmt(res[b][k]):>13}" for k in keys))
    for t, m in res["per_defect_type"].items():
        print(f"  defect {t:12} image AUROC {_fmt(m['image_auroc'])}")
    print(f"  scored on the {res['score_region']} (run.json score_region), threshold "
          f"{res['threshold']:.4g}")
    if not args.json_out:
        print(json.dumps(res["fused"], indent=2))
    return 0


def add_complexity_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `trd-edge complexity`."""
    p.add_argument("--backbone", choices=["wide_resnet50_2", "resnet18"],
                   default="wide_resnet50_2")
    p.add_argument("--image-size", type=int, default=256)


def run_complexity(args: argparse.Namespace) -> int:
    """`trd-edge complexity`: parameters and MACs per part, counted on the meta device."""
    from trainer.complexity import complexity_table, format_table

    print(format_table(complexity_table(args.backbone, args.image_size)))
    return 0
