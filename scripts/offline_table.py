"""Reproduce the offline-teacher table of docs/offline-teachers.md (issue 7).

For each category × seed: write a synthetic set with `trd-edge synth`'s generator, train the light
model with the given options, evaluate, and print one markdown row (image AUROC per defect type,
fused I-AUROC, P-AUROC, AUPRO@0.3, training seconds). Rows are also appended to ``--jsonl``.

    python scripts/offline_table.py --out /tmp/offline --seeds 0 1 2

With ``--teacher offline`` and no ``--align`` / ``--sobel-ksize`` this is `trd-edge train
--teacher-weights offline` without expert flags: both are chosen from the good training images
(trainer/choices.py) and the row shows what was chosen; the score region is `trd-edge train`'s
default too (part for the working pipeline, frame for reference; ``--score-region`` overrides;
a run already in ``--out`` keeps its recorded one). About 4–8 min per row on two CPU cores
at 128 px (60 training images, 20 epochs), about 13 min on one core at 192 px.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edge.datasets.synthetic import CATEGORIES, write_dataset
from trainer.evaluate import evaluate
from trainer.run import TrainConfig, read_run_info
from trainer.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="data and runs go here")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=None,
                   help="model input side (default: trd-edge train's; with the offline teacher "
                   "chosen from the data, else 256)")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--teacher", default="offline", help="offline | random | PATH")
    p.add_argument("--align", default=None, choices=["none", "principal-axis", "auto"],
                   help="default: chosen from the data with the offline teacher, else none")
    p.add_argument("--augment", default=None, choices=["none", "rot90", "rotate", "outline"],
                   help="default: trd-edge train's (outline where parts are turned, else none)")
    p.add_argument("--sobel-ksize", type=int, default=None,
                   help="default: chosen from the data with the offline teacher, else per category")
    p.add_argument("--preprocess", default="working", choices=["working", "reference"])
    p.add_argument("--score-region", default=None, choices=["frame", "part"],
                   help="where image scores are taken (default: trd-edge train's)")
    p.add_argument("--fill-dropouts", default=None, choices=["on", "off"],
                   help="fill the part's depth dropouts (default: trd-edge train's, on for working)")
    p.add_argument("--depth-smoothing", type=float, default=None,
                   help="σ in model pixels (default: the data's rule, 0 on synth)")
    p.add_argument("--heights", default=None, choices=["camera", "plane"])
    p.add_argument("--depth-filter", default=None, choices=["gaussian", "bilateral"])
    p.add_argument("--score-fusion", default=None, choices=["sum", "max"])
    p.add_argument("--outline-smoothing", type=float, default=None)
    p.add_argument("--fixtured", dest="fixture_angle", type=float, nargs="?", const=0.0,
                   default=None, metavar="DEG",
                   help="the data's parts lie in a fixture, centred, at DEG degrees (default 0; "
                   "trd-edge synth --fixtured [DEG]); the data folder gets a -fix suffix (-fixDEG "
                   "for another angle)")
    p.add_argument("--data-size", type=int, default=None,
                   help="render the data at this size (default: --image-size, or 192)")
    p.add_argument("--jsonl", type=Path, default=None)
    a = p.parse_args()

    print("| teacher | size | align | preprocess | Sobel | category | seed | colour | geometry | "
          "both | fused I-AUROC | P-AUROC | AUPRO@0.3 | train s | scored on |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    data_size = a.data_size or a.image_size or 192
    fix = ("" if a.fixture_angle is None
           else "-fix" if a.fixture_angle == 0 else f"-fix{a.fixture_angle:g}")
    for seed in a.seeds:
        data = a.out / (f"data-{data_size}-n{a.n_train}-s{seed}"
                        + fix)
        if not data.is_dir():  # 20 good + 20 per defect type in test: AUROC steps of 1/400
            write_dataset(data, categories=CATEGORIES, image_size=data_size,
                          n_train=a.n_train, n_validation=12, n_test_good=20,
                          n_test_per_defect=20, seed=seed, progress=False,
                          fixture_angle=a.fixture_angle)
        for cat in a.categories:
            tag = (f"{cat}-{a.teacher.replace('/', '_')}-{a.align}-{a.augment}-{a.image_size}"
                   f"-d{data_size}-{a.preprocess}-k{a.sobel_ksize}"
                   + ("" if a.depth_smoothing is None else f"-g{a.depth_smoothing:g}")
                   + ("" if a.heights is None else f"-h{a.heights}")
                   + ("" if a.depth_filter is None else f"-f{a.depth_filter}")
                   + ("" if a.score_fusion is None else f"-u{a.score_fusion}")
                   + ("" if a.outline_smoothing is None else f"-o{a.outline_smoothing:g}")
                   + fix
                   + f"-s{seed}")
            run = a.out / f"run-{tag}"
            cfg = TrainConfig(
                data_root=str(data), category=cat, modality="normal", backbone="resnet18",
                image_size=a.image_size or (None if a.teacher == "offline" else 256),
                epochs=a.epochs, batch_size=a.batch_size,
                teacher_weights=a.teacher, seed=seed, align=a.align, augment=a.augment,
                sobel_ksize=a.sobel_ksize, preprocess=a.preprocess,
                choose_from_data=a.teacher == "offline", score_region=a.score_region,
                depth_smoothing=a.depth_smoothing, heights=a.heights,
                depth_filter=a.depth_filter, depth_noise=None, score_fusion=a.score_fusion,
                outline_smoothing=a.outline_smoothing,
                fill_dropouts=None if a.fill_dropouts is None else a.fill_dropouts == "on",
            )
            t0 = time.perf_counter()
            train(cfg, run, progress=False)
            seconds = time.perf_counter() - t0
            res = evaluate(run, data, cat, progress=False)
            done = read_run_info(run)  # what was chosen: align and Sobel as trained
            per = {k: v["image_auroc"] for k, v in res["per_defect_type"].items()}
            f = res["fused"]
            print(f"| {a.teacher} | {done.config.image_size} | {done.config.align} | "
                  f"{a.preprocess} | "
                  f"{done.preprocess.sobel_ksize} | "
                  f"{cat} | {seed} | {per['color']:.3f} | "
                  f"{per['geometry']:.3f} | {per['both']:.3f} | {f['image_auroc']:.3f} | "
                  f"{f['pixel_auroc']:.2f} | {f['aupro@0.3']:.2f} | {seconds:.0f} | "
                  f"{res['score_region']} |", flush=True)
            if a.jsonl:
                with a.jsonl.open("a") as fh:
                    fh.write(json.dumps({"config": done.config.model_dump(), "train_s": seconds,
                                         "auto_choices": done.model_dump()["auto_choices"],
                                         "per_defect_type": per, "fused": f}) + "\n")


if __name__ == "__main__":
    main()
