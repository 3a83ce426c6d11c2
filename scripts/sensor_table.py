"""Detection through a depth-camera model, per dent depth (issue 17's table; docs/sensor-model.md).

For each station (camera model, distance, frames averaged) and category: write a data set with
`trd-edge synth`'s generator and sensor model, train the light model once on its good parts,
evaluate on its test split (colour / geometry 2–4 mm / both), then evaluate the same run on test
sets whose geometry defects all have one depth (`--dent-depth`: same scenes, only the dents
differ). Prints one markdown row per station × category; rows also go to ``--jsonl``.

    python scripts/sensor_table.py --out /tmp/trd17 --categories puck \\
        --stations ideal@0.55 d435@0.55 d435@0.55x8 d405@0.2 --depths 1 2 3 4 5 \\
        --image-size 64 --epochs 8

A station is ``SENSOR@DISTANCE`` with an optional ``xN`` (N frames averaged at the station)
and optional ``+FILTER`` items: librealsense's filters at the station, applied to the data by
`trd-edge synth --filters` (``d435@0.55+spatial+temporal``, ``d435@0.55x8+spatial=0.5:20``;
`edge.sources.acquisition.parse_filter_spec`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from edge.datasets.sensors import get_sensor
from edge.datasets.synthetic import write_dataset
from edge.sources.acquisition import filter_tag, parse_filter_spec
from edge.sources.options import FilterOptions
from trainer.evaluate import evaluate
from trainer.run import TrainConfig
from trainer.train import train

SOBEL = {"puck": 3}  # the low, flat puck needs the 3-tap aperture (docs/offline-teachers.md)


def _station(text: str) -> tuple[str, float, int, FilterOptions]:
    m = re.fullmatch(r"(\w+)@([0-9.]+)(?:x(\d+))?(?:\+(.+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"station {text!r}: use SENSOR@DISTANCE[xN][+FILTER...]")
    try:
        filters = parse_filter_spec(m.group(4) or "")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"station {text!r}: {exc}") from None
    return m.group(1), float(m.group(2)), int(m.group(3) or 1), filters


def _data(out: Path, sensor: str, distance: float, average: int, args, depth: float | None,
          filters: FilterOptions | None = None):
    ftag = filter_tag(filters) if filters is not None else ""
    tag = f"{sensor}-{distance:g}-x{average}" + (f"-{ftag}" if ftag else "") + _utag(args) + (
        f"-{args.data_size}-s{args.seed}") + (
        f"-n{args.n_train}" if args.n_train != 60 and depth is None else "")
    # (a dent set has no training split, and a seed's test scenes do not depend on n_train)
    root = out / (f"data-{tag}" if depth is None else f"data-{tag}-dent{depth:g}")
    missing = tuple(c for c in args.categories if not (root / c).is_dir())
    if missing:  # (each category has its own seeds: adding one leaves the others unchanged)
        write_dataset(
            root, categories=missing, image_size=args.data_size,
            n_train=args.n_train if depth is None else 0, n_validation=12, n_test_good=20,
            n_test_per_defect=20, seed=args.seed, progress=False,
            sensor=get_sensor(sensor, depth_unit_m=args.depth_unit),
            distance=distance, average_frames=average,
            dent_depth=(0.002, 0.004) if depth is None else (depth / 1e3, depth / 1e3),
            filters=filters,
        )
    return root


def _utag(args) -> str:
    return f"-u{args.depth_unit:g}" if args.depth_unit else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="data and runs go here")
    p.add_argument("--stations", nargs="+", type=_station, default=[_station("d435@0.55")])
    p.add_argument("--categories", nargs="+", default=["puck"])
    p.add_argument("--depths", nargs="*", type=float, default=[1, 2, 3, 4, 5], help="mm")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--data-size", type=int, default=128, help="render the data at this size")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--modality", default="normal", choices=["normal", "depth"])
    p.add_argument("--depth-smoothing", type=float, default=0.0,
                   help="σ (model px) of the height smoothing before the 3D image (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth-unit", type=float, default=None,
                   help="the camera's depth unit in m (default: the sensor's, 1 mm for a D435)")
    p.add_argument("--preprocess", default="reference", choices=["reference", "working"],
                   help="training preprocessing (the tables before 2026-12-03 used reference; "
                   "`trd-edge train` defaults to working)")
    p.add_argument("--jsonl", type=Path, default=None)
    a = p.parse_args()

    depths = " | ".join(f"geo {d:g} mm" for d in a.depths)
    print(f"| station | category | model RMS mm | colour | geometry 2–4 mm | both | {depths} | "
          "fused | P-AUROC | train s |")
    print("|---" * (9 + len(a.depths)) + "|")
    for sensor, distance, average, filters in a.stations:
        spec = get_sensor(sensor, depth_unit_m=a.depth_unit)
        rms = spec.plane_rms(distance) / average**0.5 if spec is not None else 0.00015
        data = _data(a.out, sensor, distance, average, a, None, filters)
        ftag = filter_tag(filters)
        for cat in a.categories:
            sm = f"-sm{a.depth_smoothing:g}" if a.depth_smoothing > 0 else ""
            run = a.out / (f"run-{cat}-{sensor}-{distance:g}-x{average}"
                           + (f"-{ftag}" if ftag else "") + _utag(a) + f"-{a.image_size}-"
                           f"{a.modality}{sm}-e{a.epochs}-n{a.n_train}"
                           + (f"-s{a.seed}" if a.seed else "")
                           + ("-wk" if a.preprocess == "working" else ""))
            cfg = TrainConfig(
                data_root=str(data), category=cat, modality=a.modality, backbone="resnet18",
                image_size=a.image_size, epochs=a.epochs, batch_size=a.batch_size,
                teacher_weights="offline", seed=a.seed, align="principal-axis",
                sobel_ksize=SOBEL.get(cat), depth_smoothing=a.depth_smoothing,
                preprocess=a.preprocess,
            )
            t0 = time.perf_counter()
            train(cfg, run, progress=False)
            seconds = time.perf_counter() - t0
            res = evaluate(run, data, cat, progress=False)
            per = {k: v["image_auroc"] for k, v in res["per_defect_type"].items()}
            by_depth = {}
            for d in a.depths:
                dres = evaluate(run, _data(a.out, sensor, distance, average, a, d, filters),
                                cat, progress=False)
                by_depth[d] = dres["per_defect_type"]["geometry"]["image_auroc"]
            f = res["fused"]
            cols = " | ".join(f"{by_depth[d]:.2f}" for d in a.depths)
            name = (f"{sensor} {distance:g} m" + (f" ×{average}" if average > 1 else "")
                    + (f" {ftag}" if ftag else "")
                    + (f" unit {a.depth_unit * 1e3:g} mm" if a.depth_unit else "")
                    + (f" {a.modality}" if a.modality != "normal" else "")
                    + (f" smooth σ={a.depth_smoothing:g}" if a.depth_smoothing > 0 else "")
                    + (" working" if a.preprocess == "working" else ""))
            print(f"| {name} | {cat} | {rms * 1e3:.2f} | {per['color']:.2f} | "
                  f"{per['geometry']:.2f} | {per['both']:.2f} | {cols} | {f['image_auroc']:.2f} | "
                  f"{f['pixel_auroc']:.2f} | {seconds:.0f} |", flush=True)
            if a.jsonl:
                with a.jsonl.open("a") as fh:
                    fh.write(json.dumps({
                        "station": [sensor, distance, average], "filters": ftag,
                        "config": cfg.model_dump(),
                        "train_s": seconds, "per_defect_type": per, "fused": f,
                        "geometry_by_depth_mm": by_depth,
                    }) + "\n")


if __name__ == "__main__":
    main()
