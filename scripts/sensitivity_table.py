"""Detection vs dent depth × diameter at a station's false-alarm target (issue 17; docs/sensor-model.md).

Evaluates runs trained by `scripts/sensor_table.py` (no training here). For each run: the score
statistics are refitted on its data set's validation split (as `trd-edge eval` does), ``--n-good``
fresh good parts of the same station are scored (the first 20 are the data set's test/good), and
the threshold is set on them the way `trd-edge calibrate` sets it (`fit_threshold`, quantile
method, per ``--fpr``). Then for each dent depth and diameter a test set of geometry defects only
is written with the same scenes (same seed; `write_dataset(dent_depth=, dent_diameter=)`) and
scored: image AUROC (those good parts vs the dented ones) and the detection rate (dented parts
above each threshold).

    OMP_NUM_THREADS=1 python scripts/sensitivity_table.py --out /tmp/trd17d \\
        --runs /tmp/trd17b/run-puck-d435-0.55-x16-128-normal-e20-n60 \\
        --depths 1 2 3 4 5 --diameters 5 10 20 default --fpr 0.05 0.01 --jsonl sens.jsonl

`--summary ROWS.jsonl --runs RUN...` prints markdown tables of those rows (docs/sensor-model.md);
`--constants ROWS.jsonl --runs RUN...` prints `calibration.sensitivity.MEASURED` from the rows of
those runs instead (the lookup `trd-edge calibrate` uses).

A run's data set must be named as sensor_table writes it (``data-SENSOR-DIST-xN-SIZE-sSEED``):
the name gives the station and seed of the new sets. Nothing is written into the run or its data.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from calibration.threshold import fit_threshold
from edge.datasets.dataset_io import list_samples
from edge.datasets.synthetic import write_dataset
from trainer.data import make_loader
from trainer.evaluate import score_samples
from trainer.inference import calibrate_on
from trainer.metrics import image_auroc
from trainer.run import load_run

_DATA = re.compile(r"data-(\w+)-([0-9.]+)-x(\d+)-(\d+)-s(\d+)$")


def _station(data_root: str) -> tuple[str, float, int, int, int]:
    m = _DATA.search(str(data_root).rstrip("/"))
    if not m:
        raise SystemExit(f"{data_root}: not a sensor_table data set (data-SENSOR-DIST-xN-SIZE-sSEED)")
    return m.group(1), float(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))


def _write(root: Path, station, category: str, **kw) -> Path:
    sensor, distance, average, size, seed = station
    if (root / category).is_dir():  # written by an earlier call: it must hold what was asked
        want = kw["n_test_good"] + sum(kw["n_test_per_defect"].values())
        have = len(list((root / category / "test").glob("*/rgb/*.png")))
        if have != want:
            raise SystemExit(f"{root} holds {have} test images, not {want}: remove it")
    else:
        write_dataset(root, categories=(category,), image_size=size, n_train=0, n_validation=0,
                      seed=seed, progress=False, sensor=sensor, distance=distance,
                      average_frames=average, **kw)
    return root


def _station_name(row: dict) -> str:
    sensor, distance, average = row["station"]
    # (rows before the category was recorded: the run's name, run-CATEGORY-...)
    category = row.get("category") or Path(row["run"]).name.split("-")[1]
    name = ("" if category == "puck" else f"{category}: ") + f"{sensor.upper()} {distance:g} m, " + (
        f"{average} frames averaged" if average > 1 else "1 frame")
    if row["depth_smoothing"]:
        name += f", smoothing {row['depth_smoothing']:g} px"
    if row["preprocess"] != "reference":
        name += f", {row['preprocess']} preprocessing"
    return name + (f", seed {row['seed']}" if row["seed"] else "")


def print_constants(rows_path: Path, runs: list[Path]) -> None:
    """Print ``MEASURED`` (calibration/sensitivity.py) from the jsonl rows of ``runs``."""
    from edge.datasets.sensors import get_sensor

    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    keep = {str(r) for r in runs}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["run"] in keep:
            groups.setdefault((r["run"], r["diameter_mm"]), []).append(r)
    print("MEASURED: tuple[Measured, ...] = (")
    for (_run, w), rs in groups.items():
        rs.sort(key=lambda r: r["depth_mm"])
        sensor, distance, average = rs[0]["station"]
        noise = get_sensor(sensor).plane_rms(distance) / average**0.5 * 1e3
        fprs = sorted((float(f) for f in rs[0]["detected"]), reverse=True)

        def seq(values, fmt: str) -> str:
            return "(" + ", ".join(format(v, fmt) for v in values) + ")"

        det = ",\n              ".join(
            f"({f:g}, {seq((r['detected'][str(f)] for r in rs), '.3g')})" for f in fprs)
        depths = seq((r["depth_mm"] for r in rs), "g")
        aurocs = seq((r["auroc"] for r in rs), ".4g")
        width = "None" if w == "default" else float(w)
        print(f"    Measured({_station_name(rs[0])!r}, {noise:.2f}, {width},\n"
              f"             {depths},\n             {aurocs},\n             ({det},)),")
    print(")")


def print_summary(rows_path: Path, runs: list[Path], rate: float = 0.9) -> None:
    """Markdown tables of the rows of ``runs``: per depth, and the smallest depth found."""
    from calibration.sensitivity import DetectionCurve

    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    keep = [str(r) for r in runs]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted((r for r in rows if r["run"] in keep), key=lambda r: keep.index(r["run"])):
        groups.setdefault((r["run"], r["diameter_mm"]), []).append(r)
    first = next(iter(groups.values()))
    fprs = sorted((float(f) for f in first[0]["detected"]), reverse=True)
    depths = sorted(r["depth_mm"] for r in first)
    rates = " / ".join(f"{f:.1%}".replace(".0%", "%") for f in fprs)
    print(f"AUROC; share of dented parts found at FPR {rates}\n")
    print("| station | diameter mm | " + " | ".join(f"{d:g} mm deep" for d in depths) + " |")
    print("|---" * (2 + len(depths)) + "|")
    for (_, w), rs in groups.items():
        rs.sort(key=lambda r: r["depth_mm"])
        cells = [f"{r['auroc']:.3f}; " + " / ".join(f"{r['detected'][str(f)]:.2f}" for f in fprs)
                 for r in rs]
        print(f"| {_station_name(rs[0])} | {w} | " + " | ".join(cells) + " |")
    print(f"\nSmallest depth (mm) found in >= {rate:.0%} of dented parts at FPR {rates} "
          "(- = none up to the deepest)\n")
    widths = list(dict.fromkeys(w for _, w in groups))
    print("| station | " + " | ".join(f"{w} mm across" for w in widths) + " |")
    print("|---" * (1 + len(widths)) + "|")
    for run in keep:
        cells = []
        for w in widths:
            rs = sorted(groups.get((run, w), []), key=lambda r: r["depth_mm"])
            if not rs:
                cells.append("")
                continue
            out = []
            for f in fprs:
                c = DetectionCurve("", 0.0, tuple((r["depth_mm"], r["detected"][str(f)])
                                                  for r in rs))
                d = c.smallest_depth_mm(rate)
                out.append("-" if d is None else f"{d:.1f}")
            cells.append(" / ".join(out))
        name = next(_station_name(rs[0]) for (r, _), rs in groups.items() if r == run)
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="new test sets go here")
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--depths", nargs="+", type=float, default=[1, 2, 3, 4, 5], help="mm")
    p.add_argument("--diameters", nargs="+", default=["5", "10", "20"],
                   help="mm, or 'default' (the generator's own 10–15 mm)")
    p.add_argument("--n-good", type=int, default=120, help="good parts for the threshold")
    p.add_argument("--n-dent", type=int, default=20, help="dented parts per depth × diameter")
    p.add_argument("--fpr", nargs="+", type=float, default=[0.05, 0.01])
    p.add_argument("--stats", choices=["validation", "good"], default="validation",
                   help="score statistics from the run's validation split (trd-edge eval), or "
                   "refitted on the good parts like trd-edge calibrate does")
    p.add_argument("--jsonl", type=Path, default=None)
    p.add_argument("--constants", type=Path, default=None, metavar="ROWS.jsonl",
                   help="print calibration.sensitivity.MEASURED from these rows of --runs")
    p.add_argument("--summary", type=Path, default=None, metavar="ROWS.jsonl",
                   help="print markdown tables of these rows of --runs")
    a = p.parse_args()
    if a.summary:
        print_summary(a.summary, a.runs)
        return
    if a.constants:
        print_constants(a.constants, a.runs)
        return

    for run_dir in a.runs:
        t0 = time.perf_counter()
        info = json.loads((run_dir / "run.json").read_text())
        data_root, cat = info["config"]["data_root"], info["config"]["category"]
        station = _station(data_root)
        sensor, distance, average, size, seed = station
        tag = f"{sensor}-{distance:g}-x{average}-{size}-s{seed}"
        run = load_run(run_dir)
        pre = run.info.preprocess
        region = run.info.config.score_region or "frame"  # where eval and the station score
        val = list_samples(data_root, cat, "validation")
        calibration = calibrate_on(run.model, make_loader(val, cfg=pre, batch_size=8,
                                                           shuffle=False), region=region)
        good_root = _write(a.out / f"data-{tag}-good{a.n_good}", station, cat,
                           n_test_good=a.n_good, n_test_per_defect={})
        goods = list_samples(good_root, cat, "test")
        if a.stats == "good":  # as calibrate: statistics and threshold from the same good parts
            calibration = calibrate_on(run.model, make_loader(goods, cfg=pre, batch_size=8,
                                                               shuffle=False), region=region)
            good = np.asarray(calibration.validation_image_scores)
        else:
            good = score_samples(run.model, goods, pre, calibration.stats,
                                 region=region).scores["fused"]
        fits = {f: fit_threshold(good, f) for f in a.fpr}
        print(f"\n{run_dir.name}: {len(good)} good parts; thresholds "
              + ", ".join(f"FPR {f:g}: {fit.threshold:.3f} ({fit.method}, r={fit.rank})"
                          for f, fit in fits.items()), flush=True)
        print("| diameter mm | depth mm | AUROC | " + " | ".join(
            f"detected @ FPR {f:g}" for f in a.fpr) + " |")
        print("|---" * (3 + len(a.fpr)) + "|")
        for w in a.diameters:
            diameter = None if w == "default" else (float(w) / 1e3,) * 2
            for d in a.depths:
                name = f"data-{tag}-dent{d:g}" + ("" if diameter is None else f"-w{w}")
                root = _write(a.out / name, station, cat, n_test_good=0,
                              n_test_per_defect={"geometry": a.n_dent},
                              dent_depth=(d / 1e3, d / 1e3), dent_diameter=diameter)
                dent = score_samples(run.model, list_samples(root, cat, "test"), pre,
                                     calibration.stats, region=region).scores["fused"]
                y = np.r_[np.zeros(len(good)), np.ones(len(dent))]
                auroc = image_auroc(np.r_[good, dent], y)
                auroc20 = image_auroc(np.r_[good[:20], dent], y[len(good) - 20:])
                det = {f: float(np.mean(dent > fit.threshold)) for f, fit in fits.items()}
                print(f"| {w} | {d:g} | {auroc:.3f} | "
                      + " | ".join(f"{det[f]:.2f}" for f in a.fpr) + " |", flush=True)
                if a.jsonl:
                    with a.jsonl.open("a") as fh:
                        fh.write(json.dumps({
                            "run": str(run_dir), "category": cat,
                            "station": [sensor, distance, average],
                            "seed": seed, "preprocess": pre.pipeline,
                            "depth_smoothing": pre.depth_smoothing, "diameter_mm": w,
                            "depth_mm": d, "n_good": len(good), "n_dent": len(dent),
                            "stats": a.stats, "score_region": region,
                            "auroc": auroc, "auroc_first20_good": auroc20,
                            "detected": {str(f): v for f, v in det.items()},
                            "thresholds": {str(f): fit.threshold for f, fit in fits.items()},
                            "threshold_method": {str(f): fit.method for f, fit in fits.items()},
                        }) + "\n")
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
