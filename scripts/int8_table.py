"""INT8 vs FP32 detection on a trained run (issue 16): the rows of docs/int8.md.

Exports the run into a bundle (FP32 ``model.onnx``), adds the INT8 graphs calibrated on the
training set's good parts (`export.int8.add_int8`), then runs onnxruntime FP32 and INT8 on the
same preprocessed validation and test samples. Each precision is calibrated on its own
validation maps (score statistics and threshold, as `trd-edge calibrate` does for the backend a
station deploys), then compared: image AUROC per defect type, P-AUROC, the raw-map floor on
good parts, and the verdict flips at the calibrated thresholds (defective parts FP32 flags that
INT8 passes, good parts that flip).

    python scripts/int8_table.py --run RUN --data DATA_ROOT --category bracket --out /tmp/i8

``--ablate-quantised-head`` measures why the score head stays FP32: it also quantises the
head's quantisable ops (Mul, the level sum's Add, Resize) and skips the export's check that
refuses such a graph (docs/int8.md). Not a product option.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import load_bundle, model_inputs
from edge.datasets.dataset_io import list_samples, load_raw
from edge.processing.preprocess import preprocess
from edge.processing.scoring import (
    StatsAccumulator,
    foreground_region,
    image_scores,
    score_maps,
)
from trainer.inference import threshold_from_scores
from trainer.metrics import compute_metrics


def _samples(bundle, data: Path, category: str, split: str):
    cfg = bundle.preprocess_config()
    out = []
    for rec in tqdm(list_samples(data, category, split), desc=f"preprocess {split}", leave=False):
        raw = load_raw(rec)
        sample = preprocess(raw.rgb, raw.xyz, cfg)
        gt = sample.mask_to_model(raw.gt) if raw.gt is not None else None
        out.append((rec, sample, gt))
    return out


def _maps(backend, samples) -> np.ndarray:
    return np.stack([
        np.stack(backend.infer(*model_inputs(backend.io, s)))
        for _, s, _ in tqdm(samples, desc=f"{backend.precision} maps", leave=False)
    ])


def _region(region: str, samples) -> np.ndarray | None:
    """The bundle's scoring region over ``samples`` (their foregrounds for "part")."""
    return foreground_region(region, np.stack([s.foreground for _, s, _ in samples]))


def evaluate_precision(
    val_maps: np.ndarray, test_maps: np.ndarray, test, val=(), region: str = "frame"
) -> dict:
    """Calibrate on validation maps, score the test maps: metrics, scores and verdicts (over
    the bundle's scoring ``region``, as the station scores)."""
    acc = StatsAccumulator()
    acc.add(val_maps[:, 0], val_maps[:, 1])
    stats = acc.result()
    val_scores = image_scores(
        score_maps(val_maps[:, 0], val_maps[:, 1], stats, region=_region(region, val)).fused
    )
    threshold, _ = threshold_from_scores(val_scores)
    test_region = _region(region, test)
    fused = score_maps(test_maps[:, 0], test_maps[:, 1], stats, region=test_region).fused
    scores = image_scores(fused)
    y = np.array([r.label for r, _, _ in test])
    s = fused.shape[-1]
    gt = np.stack([g if g is not None else np.zeros((s, s), np.float32) for _, _, g in test]) > 0.5
    metrics = compute_metrics(scores, y, fused, gt)
    types = [r.defect_type for r, _, _ in test]
    good = np.array([t == "good" for t in types])
    per = {}
    for t in sorted(set(types) - {"good"}):
        sel = good | np.array([x == t for x in types])
        per[t] = compute_metrics(scores[sel], y[sel], None, None)["image_auroc"]
    return {
        "stats": stats,
        "region": test_region,
        "metrics": metrics,
        "per_defect_type": per,
        "threshold": threshold,
        "scores": scores,
        "flagged": scores > threshold,
        "labels": y,
        "good_map_floor": float(test_maps[good].mean()),
    }


def _quantise_the_head_too() -> None:
    """Ablation: no head node excluded, Mul and Resize quantised as well, no head check."""
    import dataclasses

    import export.int8 as i8

    keep = i8.nodes_to_exclude

    def body_and_head(model, keep_fp32=()):
        return keep(model, keep_fp32) | {"score head": []}

    i8.nodes_to_exclude = body_and_head
    i8.check_int8_graph = lambda path, symmetric=True: i8.int8_graph_report(path)
    cpu = i8.RECIPES["model_int8"]
    i8.RECIPES["model_int8"] = dataclasses.replace(cpu, op_types=(*cpu.op_types, "Mul", "Resize"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="dataset root of the run")
    p.add_argument("--category", required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle and results go here")
    p.add_argument("--calibration-frames", default=None, help="default: the training set")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--method", default="minmax")
    p.add_argument("--keep-fp32", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jsonl", type=Path, default=None)
    p.add_argument("--ablate-quantised-head", action="store_true")
    a = p.parse_args()
    if a.ablate_quantised_head:
        _quantise_the_head_too()

    from export.int8 import add_int8
    from export.onnx_export import export_bundle

    bdir = a.out / f"bundle-{a.category}"
    if not (bdir / "manifest.json").is_file():
        export_bundle(a.run, bdir)
    bundle = load_bundle(bdir)
    t0 = time.perf_counter()
    add_int8(bundle, a.calibration_frames or str(a.data), a.frames, a.method, a.keep_fp32,
             graphs=("model_int8",))
    quant_s = time.perf_counter() - t0
    bundle = load_bundle(bdir)
    val = _samples(bundle, a.data, a.category, "validation")
    test = _samples(bundle, a.data, a.category, "test")
    res = {}
    for precision in ("fp32", "int8"):
        be = OnnxRuntimeBackend(bundle, precision=precision, intra_op_threads=a.threads)
        test_maps = _maps(be, test)
        res[precision] = evaluate_precision(_maps(be, val), test_maps, test, val,
                                            bundle.manifest.scoring.region)
        res[precision]["raw_test"] = test_maps
    f, q = res["fp32"], res["int8"]
    y = f["labels"]
    missed = int(np.sum(f["flagged"] & ~q["flagged"] & (y == 1)))
    good_flips = int(np.sum((f["flagged"] != q["flagged"]) & (y == 0)))
    n_good = int(np.sum(y == 0))
    diff = np.abs(f["raw_test"] - q["raw_test"])
    # What `trd-edge verify` sees: the INT8 maps scored with FP32's statistics and threshold.
    qm = q["raw_test"]
    same = image_scores(
        score_maps(qm[:, 0], qm[:, 1], f["stats"], region=f["region"]).fused
    ) > f["threshold"]
    row = {
        "category": a.category,
        "run": str(a.run),
        "calibration": bundle.manifest.quantization.model_dump(exclude={"excluded_nodes"}),
        "kept_fp32": a.keep_fp32 or [],
        "quantise_s": quant_s,
        "per_defect_type": {k: {"fp32": f["per_defect_type"][k], "int8": q["per_defect_type"][k]}
                            for k in f["per_defect_type"]},
        "image_auroc": {"fp32": f["metrics"]["image_auroc"], "int8": q["metrics"]["image_auroc"]},
        "pixel_auroc": {"fp32": f["metrics"]["pixel_auroc"], "int8": q["metrics"]["pixel_auroc"]},
        "aupro@0.3": {"fp32": f["metrics"]["aupro@0.3"], "int8": q["metrics"]["aupro@0.3"]},
        "good_map_floor": {"fp32": f["good_map_floor"], "int8": q["good_map_floor"]},
        "threshold": {"fp32": f["threshold"], "int8": q["threshold"]},
        "flagged_defective": {"fp32": int(np.sum(f["flagged"] & (y == 1))),
                              "int8": int(np.sum(q["flagged"] & (y == 1))),
                              "n": int(np.sum(y == 1))},
        "defective_fp32_flags_int8_passes": missed,
        "good_flips": good_flips,
        "n_good": n_good,
        "fp32_calibration_on_int8": {
            "defective_fp32_flags_int8_passes": int(np.sum(f["flagged"] & ~same & (y == 1))),
            "good_flips": int(np.sum((f["flagged"] != same) & (y == 0))),
        },
        "max_abs_map": float(diff.max()),
        "mean_abs_map": float(diff.mean()),
    }
    print(json.dumps(row, indent=1))
    per = " | ".join(f"{v['fp32']:.3f} / {v['int8']:.3f}" for v in row["per_defect_type"].values())
    print(f"| {a.category} | {per} | {row['pixel_auroc']['fp32']:.4f} / "
          f"{row['pixel_auroc']['int8']:.4f} | {row['good_map_floor']['fp32']:.4f} / "
          f"{row['good_map_floor']['int8']:.4f} | {missed} | {good_flips} / {n_good} |")
    if a.jsonl:
        with a.jsonl.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
