"""The `trd-edge` command line.

Sub-commands are a table of (help, argument builder, handler); the builder and handler modules
are imported only for the sub-command that runs, so `trd-edge run` on a Jetson never imports
torch and `trd-edge --help` is instant everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

# sub-command -> (one-line help, "module:function" adding its arguments, "module:function" running
# it and returning an exit code). Only the chosen sub-command's modules are imported.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("write a synthetic RGB-D dataset (MVTec 3D-AD layout)",
              "edge.datasets.synthetic:add_synth_arguments", "edge.datasets.synthetic:run_synth"),
    "train": ("train a TRD model on good samples of one category",
              "edge.cli:_add_train", "trainer.cli:run_train"),
    "pretrain-teacher": ("pretrain the light teacher on formula-driven fractal images (offline)",
                         "trainer.pretrain:add_pretrain_teacher_args",
                         "trainer.pretrain:run_pretrain_teacher"),
    "eval": ("evaluate a run: AUROC, AUPRO, AP, F1-max per modality and defect type",
             "edge.cli:_add_eval", "trainer.cli:run_eval"),
    "complexity": ("parameters and FLOPs of the TRD graph, part by part",
                   "trainer.cli:add_complexity_args", "trainer.cli:run_complexity"),
    "export": ("turn a trained run into a model bundle (ONNX FP32 [+ FP16])",
               "export.onnx_export:add_export_args", "export.onnx_export:run_export"),
    "verify": ("check that the bundle's backends agree (maps, scores, verdicts)",
               "export.verify:add_verify_args", "export.verify:run_verify"),
    "build-engine": ("build a TensorRT engine for this GPU from the bundle's FP16 ONNX",
                     "edge.backends.tensorrt_build:add_build_engine_args",
                     "edge.backends.tensorrt_build:run_build_engine"),
    "record": ("record frames from a camera; write good parts in the MVTec 3D-AD layout",
               "edge.sources.record:add_record_arguments", "edge.sources.record:run_record"),
    "demo": ("the whole product on this machine: synthetic data, training, a running station",
             "export.demo:add_demo_arguments", "export.demo:run_demo"),
    "calibrate": ("fit the station's score statistics, threshold and geometry into the bundle",
                  "calibration.cli:add_calibrate_args", "calibration.cli:run_calibrate"),
    "bench": ("per-stage latency, FLOPs and throughput per backend",
              "edge.commands.bench:add_bench_args", "edge.commands.bench:run_bench"),
    "run": ("run the station: camera → model → verdicts over MQTT",
            "edge.commands.run_cmd:add_run_arguments", "edge.commands.run_cmd:run_run"),
    "doctor": ("first-boot check: camera, GPU/TensorRT, bundle, broker, disk — each with a fix",
               "edge.commands.doctor:add_doctor_args", "edge.commands.doctor:run_doctor"),
    "schema": ("print the JSON Schema of the MQTT messages",
               "edge.cli:_add_schema", "edge.comms.verdict:print_schema"),
    "config": ("check a station configuration file, listing every problem",
               "edge.cli:_add_config", "edge.config:run_config_check"),
}

TORCH_HINT = (
    "this sub-command needs the training extras (torch): "
    "pip install 'trd-edge[train]'  (on x86 CPU machines: torch==2.13.0)"
)


def _roi(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(
            f"--roi takes four fractions X0,Y0,X1,Y1 (e.g. 0.2,0.1,0.8,0.9), got {text!r}"
        )
    return vals  # type: ignore[return-value]


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", required=True, help="dataset root (MVTec 3D-AD layout or "
                   "preprocessed Eyecandies)")
    p.add_argument("--category", required=True)
    p.add_argument("--out", required=True, help="run directory (resumes if it holds this run)")
    p.add_argument("--modality", choices=["depth", "normal"], default="normal",
                   help="3D image: surface normals (the authors' best) or depth (the original paper)")
    p.add_argument("--backbone", choices=["wide_resnet50_2", "resnet18"], default=None,
                   help="default wide_resnet50_2; resnet18 with --teacher-weights offline")
    p.add_argument("--image-size", type=int, default=None,
                   help="multiple of 32 (default 256; with --teacher-weights offline "
                   "chosen from the data: 192 for a printed part, else 128)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the authors' count for the dataset, 200 for MVTec 3D-AD "
                   "(and synthetic data), 100 for Eyecandies; 20 with --teacher-weights offline")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default 16; 8 with --teacher-weights offline")
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--teacher-weights", default="imagenet",
                   help="imagenet | offline (shipped fractal-pretrained resnet18) | random | "
                   "PATH to a torchvision-format state dict")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="GPU: deterministic cuDNN/cuBLAS kernels as the authors' setup_seed, "
                   "so runs and resumes repeat exactly (default); --no-deterministic lets "
                   "cudnn.benchmark pick faster kernels")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--sobel-ksize", type=int, default=None,
                   help="normal modality: Sobel aperture (default per category, else 5; with "
                   "--teacher-weights offline chosen from the good training images)")
    p.add_argument("--depth-smoothing", type=float, default=None, metavar="SIGMA",
                   help="σ in model pixels of the smoothing of the part's heights before the "
                   "3D image (0 = off; --depth-filter says how). Default: from the data set's camera record (trd-edge synth "
                   "--sensor): on for fine-grained noise such as a D405's, else off "
                   "(docs/sensor-model.md); without a record and with --teacher-weights "
                   "offline the same rule on the noise grain measured on the good parts "
                   "(docs/any-shape.md); the bundle records it for the station")
    p.add_argument("--depth-filter", choices=["gaussian", "bilateral"], default=None,
                   help="how --depth-smoothing smooths: bilateral (the working pipeline's "
                   "default) keeps steps, holes and a dent's rim sharp, its range set by the "
                   "heights' noise measured on the good training parts; gaussian blurs across "
                   "them (every run before it); recorded in the bundle")
    p.add_argument("--outline-smoothing", type=float, default=None, metavar="SIGMA",
                   help="working pipeline: the alignment resamples heights and mask "
                   "bilinearly and the part's outline is smoothed by σ model pixels, so that a "
                   "part lying along the camera's grid looks like one lying across it (2 as "
                   "measured in docs/any-shape.md). Default 0 (off); recorded in the bundle")
    p.add_argument("--heights", choices=["camera", "plane"], default=None,
                   help="working pipeline: the 3D image from camera z or from heights above "
                   "the fitted table plane (the table's tilt does not reach the normals). "
                   "Default plane when parts are aligned (--align other than none), else camera; "
                   "recorded in the bundle")
    p.add_argument("--align", choices=["none", "principal-axis", "auto"], default=None,
                   help="pose normalisation before the model (training and station alike) for "
                   "parts that lie at any angle: principal-axis (elongated parts), auto (any "
                   "shape: outline symmetry, then height or print). Default none; with "
                   "--teacher-weights offline chosen from the good training images")
    p.add_argument("--augment", choices=["none", "rot90", "rotate", "outline"], default=None,
                   help="rot90: turn each training part by a random multiple of 90° (RGB and "
                   "cloud together); rotate: by a random ±15° after the alignment (for what "
                   "alignment leaves); normals recomputed from the turned part; outline: half "
                   "the parts with their aligned edges smoothed (--outline-smoothing 2), so a "
                   "part along the camera's grid is not new to the model). Default: outline where the "
                   "working pipeline turns parts to their pose (--align not none), else none")
    p.add_argument("--preprocess", choices=["working", "reference"], default="working",
                   help="working (default): the 3D image is computed at the model's resolution "
                   "over the ROI, so the station's cost follows the model; reference: "
                   "full-resolution normals as the authors compute them for MVTec 3D-AD")
    p.add_argument("--roi", type=_roi, default=None, metavar="X0,Y0,X1,Y1",
                   help="region of interest as fractions of the frame, e.g. 0.2,0.1,0.8,0.9 "
                   "(recorded in the bundle: the station looks at the same rectangle); with "
                   "--teacher-weights offline and the working pipeline the default is chosen "
                   "from the data: the square that holds every training part with 10%% to "
                   "spare and no narrower than the model's grid, or the whole frame (0,0,1,1) when "
                   "that is no zoom")
    p.add_argument("--rgb-resize", choices=["area", "pil-bilinear"], default="area",
                   help="with --preprocess reference: how RGB, masks and Eyecandies normals are "
                   "resized; pil-bilinear is the authors' (torchvision Resize on PIL), area "
                   "(default) what earlier runs and bundles used (recorded in the bundle)")
    p.add_argument("--score-region", choices=["frame", "part"], default=None,
                   help="where the image score is taken: part = the maximum over the part's "
                   "foreground only (background texture cannot set it), frame = over the whole "
                   "map (the authors'). Default part with the working pipeline, frame with "
                   "--preprocess reference and Eyecandies; recorded in the bundle "
                   "(scoring.region), so eval, calibrate and the station score alike")
    p.add_argument("--score-fusion", choices=["sum", "max"], default=None,
                   help="how the colour and 3D maps become one: max = each branch in units of "
                   "its good validation parts' image scores, then the larger (a defect one "
                   "branch sees is not buried under the other's noise), sum = the z-scored "
                   "maps added (the authors'). Default max with the working pipeline, sum with "
                   "--preprocess reference; recorded in the bundle (scoring.stats.fusion)")


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory from `trd-edge train`")
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics here")
    p.add_argument("--report", default=None, help="write PNG heatmaps and curves here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)


def _add_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument("--message", choices=["verdict", "status", "metrics"], default="verdict",
                   help="which message's schema to print")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", metavar="FILE", required=True,
                   help="YAML or TOML station configuration to validate")


def _import(ref: str) -> Callable:
    module, func = ref.split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "torch":
            raise SystemExit(f"trd-edge: {TORCH_HINT}") from exc
        raise


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the sub-command named in `argv` gets its arguments (lazily)."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="trd-edge",
        description="Multimodal (RGB + 3D) anomaly detection with Tuned Reverse Distillation: "
        "train, export, calibrate, and run a station that publishes verdicts over MQTT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _import(add_args)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trd-edge` console script."""
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = _import(COMMANDS[args.command][2])
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
