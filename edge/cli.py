"""The `trd-edge` command line.

Every sub-command's arguments are declared here; its handler is imported only when it runs, so
`trd-edge run` on a Jetson never imports torch, and `--help` is instant everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

# sub-command -> "module:function" taking the parsed namespace and returning an exit code
HANDLERS: dict[str, str] = {
    "synth": "edge.synthetic:run_synth",
    "train": "trainer.cli:run_train",
    "eval": "trainer.cli:run_eval",
}

TORCH_HINT = (
    "this sub-command needs the training extras (torch): "
    "pip install 'trd-edge[train]'  (on x86 CPU machines: torch==2.13.0)"
)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic RGB-D dataset in the MVTec 3D-AD layout",
        description="Objects on a background plane with defects visible only in colour, only in "
        "geometry, or in both, with ground-truth masks (rgb PNG, xyz float32 TIFF, gt PNG).",
    )
    p.add_argument("--out", required=True, help="dataset root to write")
    p.add_argument("--categories", nargs="+", default=None, help="categories (default: all)")
    p.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-validation", type=int, default=12)
    p.add_argument("--n-test-good", type=int, default=12)
    p.add_argument("--n-test-per-defect", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a TRD model on good samples of one category",
        description="Trains both students (RGB and 3D) with their crossmodal Filter and "
        "Amplifier; checkpoints every epoch into --out and resumes from it; calibrates score "
        "statistics on the validation split at the end.",
    )
    p.add_argument("--data-root", required=True, help="dataset root (MVTec 3D-AD layout or "
                   "preprocessed Eyecandies)")
    p.add_argument("--category", required=True)
    p.add_argument("--out", required=True, help="run directory (resumes if it holds this run)")
    p.add_argument("--modality", choices=["depth", "normal"], default="normal",
                   help="3D image: surface normals (the authors' best) or depth (the original paper)")
    p.add_argument("--backbone", choices=["wide_resnet50_2", "resnet18"],
                   default="wide_resnet50_2")
    p.add_argument("--image-size", type=int, default=256, help="multiple of 32")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--teacher-weights", default="imagenet",
                   help="imagenet | random | PATH to a torchvision-format state dict")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--sobel-ksize", type=int, default=None,
                   help="normal modality: Sobel aperture (default per category, else 5)")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run: I/P-AUROC, AUPRO, AP, F1-max per modality and per defect type",
    )
    p.add_argument("--run", required=True, help="run directory from `trd-edge train`")
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics here")
    p.add_argument("--report", default=None, help="write PNG heatmaps and curves here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)


BUILDERS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "synth": _add_synth,
    "train": _add_train,
    "eval": _add_eval,
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (handlers are resolved lazily)."""
    parser = argparse.ArgumentParser(
        prog="trd-edge",
        description="Multimodal (RGB + 3D) anomaly detection with Tuned Reverse Distillation: "
        "train, export, calibrate, and run a station that publishes verdicts over MQTT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in HANDLERS:
        BUILDERS[name](sub)
    return parser


def resolve(name: str) -> Callable[[argparse.Namespace], int]:
    """Import a sub-command's handler, turning a missing torch into an actionable message."""
    module, func = HANDLERS[name].split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "torch":
            raise SystemExit(f"trd-edge {name}: {TORCH_HINT}") from exc
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trd-edge` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = resolve(args.command)
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        # Known, user-facing failures (bad data, bad bundle, unreachable broker) print one
        # clear line; -v shows the traceback.
        if args.verbose:
            raise
        print(f"trd-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
