"""`trd-edge demo`: the whole product on a fresh machine, with no camera and no broker.

1. generate a synthetic RGB-D dataset (`trd-edge synth`),
2. train the light model on CPU with the offline teacher (`trd-edge train`),
3. evaluate it (`trd-edge eval`) and export a bundle (`trd-edge export`),
4. run the station on the synthetic camera (`trd-edge run --camera synthetic`), publishing to a
   local mosquitto when one is installed, and print every verdict.

Steps 1–3 are cached in the work directory, so a second `demo` starts the station at once.
It lives in `export/` because it needs torch for steps 2–3 (edge/ never imports torch).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:  # torch-side: imported where it is used
    from trainer.run import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("~/.cache/trd-edge/demo")
CALIBRATION_FRAMES = 200
CALIBRATION_FPR = 0.01


class DemoRecipe(BaseModel):
    """The demo's data and training: `trd-edge train --teacher-weights offline` with nothing
    else on a synthetic set, so the demo trains what a user's first run trains (input size,
    region of interest, alignment, Sobel aperture and smoothing chosen from the good images)."""

    category: str = "puck"
    image_size: int = 128  # side of the synthetic camera's frames (the data's and the station's)
    n_train: int = 48
    teacher_weights: str = "offline"  # shipped fractal-pretrained teacher, no download
    seed: int = 0

    @classmethod
    def for_category(cls, category: str) -> DemoRecipe:
        """The bracket lies at any angle and is not round: more views of its orientations."""
        if category == "bracket":
            return cls(category=category, n_train=96)
        return cls(category=category)

    def train_config(self, data: Path, run: Path) -> TrainConfig:
        """`trd-edge train`'s configuration for this recipe, parsed by the CLI itself (its
        defaults, not a copy of them)."""
        from edge.cli import build_parser
        from trainer.cli import train_config_from_args

        argv = ["train", "--data-root", str(data), "--category", self.category,
                "--out", str(run), "--teacher-weights", self.teacher_weights,
                "--seed", str(self.seed)]
        return train_config_from_args(build_parser(argv).parse_args(argv))

    def key(self) -> str:
        """Cache key: a changed recipe retrains."""
        return json.dumps(self.model_dump(), sort_keys=True)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `trd-edge demo`."""
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                   help="where data, run and bundle are cached (default: %(default)s)")
    p.add_argument("--frames", type=int, default=30, help="verdicts to show, then stop")
    p.add_argument("--defect-rate", type=float, default=0.3, help="share of defective parts")
    p.add_argument("--fps", type=float, default=5.0, help="synthetic camera frame rate")
    p.add_argument("--mqtt", default=None, help="broker URL; default: start a local mosquitto "
                   "if installed; 'none' = console only")
    p.add_argument("--retrain", action="store_true", help="ignore the cached model")
    p.add_argument("--category", choices=["puck", "bracket"], default="puck",
                   help="synthetic part: a round puck, or a bracket that lies at any angle")
    p.add_argument("--ui", default="8080", metavar="[HOST:]PORT",
                   help="the station's live view page (default: port %(default)s of 127.0.0.1, "
                   "or any free port when it is taken); 'none' = no page")


def prepare_bundle(workdir: Path, recipe: DemoRecipe, retrain: bool = False) -> Path:
    """Synthesise, train, evaluate and export once; return the cached bundle directory."""
    from calibration.cli import calibrate
    from edge.datasets.synthetic import write_dataset
    from export.onnx_export import export_bundle
    from trainer.evaluate import evaluate
    from trainer.train import train

    bundle = workdir / "bundle"
    stamp = workdir / "recipe.json"
    if not retrain and (bundle / "manifest.json").is_file() and stamp.is_file() \
            and stamp.read_text() == recipe.key():
        log.info("using the cached demo model in %s (--retrain to rebuild)", bundle)
        return bundle
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data, run = workdir / "data", workdir / "run"
    for stale in (data, run):  # a cache of another recipe: start both afresh
        if stale.exists():
            shutil.rmtree(stale)
    print(f"[1/4] synthetic RGB-D data set → {data}")
    write_dataset(data, categories=(recipe.category,), image_size=recipe.image_size,
                  n_train=recipe.n_train, n_validation=12, n_test_good=12,
                  n_test_per_defect=8, seed=recipe.seed, progress=True)
    print(f"[2/4] training TRD: trd-edge train --teacher-weights {recipe.teacher_weights} "
          f"(settings chosen from the good images) → {run}")
    cfg = recipe.train_config(data, run)
    train(cfg, run)
    res = evaluate(run, data, recipe.category, progress=False)
    per_type = ", ".join(f"{t} {m['image_auroc']:.2f}" for t, m in res["per_defect_type"].items())
    print(f"      test image AUROC fused {res['fused']['image_auroc']:.2f} ({per_type})")
    print(f"[3/4] exporting the model bundle → {bundle}")
    export_bundle(run, bundle, fp16=False)
    # The post-training threshold rests on 12 validation parts; a station calibrates on many good
    # frames from its own camera (`trd-edge calibrate`), and so does the demo.
    camera = f"synthetic:{recipe.category}?size={recipe.image_size}&defect_rate=0&seed=2"
    print(f"[4/4] calibrating the station on {CALIBRATION_FRAMES} good camera frames "
          f"(false-alarm target {CALIBRATION_FPR:.0%})")
    res = calibrate(bundle, camera, CALIBRATION_FRAMES, target_fpr=CALIBRATION_FPR,
                    backend="onnxruntime", compare_training=False)
    print(f"      threshold {res.threshold:.2f}: {res.fit.statement}")
    stamp.write_text(recipe.key())
    print(f"      ready in {time.perf_counter() - t0:.0f} s")
    return bundle


def _ui_overrides(address: str) -> dict:
    """``--ui`` for the demo: the port asked for, or any free one when it is taken."""
    import socket

    from edge.ui.config import parse_ui_address, ui_overrides

    host, port = parse_ui_address(address)
    overrides = ui_overrides(address)
    with socket.socket(socket.AF_INET6 if ":" in (host or "") else socket.AF_INET) as s:
        try:
            s.bind((host or "127.0.0.1", port))
        except OSError:
            log.info("port %d is taken: the live view takes a free port", port)
            overrides["ui.port"] = 0
    return overrides


def run_demo(args: argparse.Namespace) -> int:
    """`trd-edge demo` handler."""
    from edge.commands.run_cmd import assemble, summarise
    from edge.config import load_config

    recipe = DemoRecipe.for_category(args.category)
    workdir = Path(args.workdir).expanduser()
    bundle = prepare_bundle(workdir, recipe, args.retrain)
    camera = (f"synthetic:{recipe.category}?size={recipe.image_size}"
              f"&defect_rate={args.defect_rate}&fps={args.fps}&seed=1")
    mqtt_enabled = (args.mqtt or "").lower() != "none"
    overrides = {
        "bundle": str(bundle), "camera.source": camera, "station": "demo",
        "mqtt.url": args.mqtt if mqtt_enabled else None,
        "outbox.path": str(workdir / "outbox.sqlite3"),
    }
    if (args.ui or "none").lower() != "none":
        overrides.update(_ui_overrides(args.ui))
    config = load_config(None, overrides=overrides)
    print(f"station 'demo' on camera {camera}; verdicts:")
    with assemble(config, args.frames, console=True, mqtt_enabled=mqtt_enabled) as station:
        if station.ui is not None:
            print(f"live view: {station.ui.url}  (open it in a browser while the demo runs; "
                  "more verdicts: --frames N)", flush=True)
        stats = station.loop.run()
    print(summarise(stats))
    return 0
