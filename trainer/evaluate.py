"""`trd-edge eval`: validation statistics, test-split metrics per modality and per defect type."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.datasets.dataset_io import list_samples
from edge.processing.scoring import image_scores, score_maps
from trainer.data import make_loader
from trainer.inference import calibrate_on, iter_maps
from trainer.metrics import compute_metrics
from trainer.run import CALIBRATION_FILE, METRICS_FILE, load_run, write_json

log = logging.getLogger(__name__)

BRANCHES = ("fused", "rgb", "3d")


@dataclass
class ScoredSamples:
    """Per-image scores and maps of scored samples (in the order of the samples)."""

    scores: dict[str, np.ndarray]  # branch ("fused", "rgb", "3d") → image scores
    maps: dict[str, np.ndarray]  # branch → N×H×W score maps
    gt: np.ndarray  # N×H×W bool masks
    labels: np.ndarray  # 1 = defective
    types: list[str]  # defect type per image ("good", ...)
    names: list[str]


def score_samples(
    model, samples: list, pre, stats, device: str = "cpu", batch_size: int = 8,
    progress: bool = False, desc: str = "eval test", region: str = "frame",
) -> ScoredSamples:
    """Score ``samples`` with a loaded model and the validation statistics ``stats``, over
    ``region`` ("frame" | "part": the run's ``score_region``).

    Writes nothing: `evaluate` and scripts that need per-image scores (e.g. a detection rate at a
    false-alarm target, scripts/sensitivity_table.py) share it.
    """
    maps: dict[str, list[np.ndarray]] = {b: [] for b in BRANCHES}
    gts, labels, types, names = [], [], [], []
    loader = make_loader(samples, cfg=pre, batch_size=batch_size, shuffle=False)
    for mb in tqdm(iter_maps(model, loader, device), total=len(loader), desc=desc,
                   unit="batch", disable=not progress):
        scored = score_maps(mb.map_rgb, mb.map_3d, stats, region=mb.region(region))
        maps["fused"].append(scored.fused)
        maps["rgb"].append(scored.rgb)
        maps["3d"].append(scored.x3d)
        gts.append(mb.batch["mask"][:, 0].numpy() > 0.5)
        labels.extend(int(v) for v in mb.batch["label"])
        types.extend(mb.batch["defect_type"])
        names.extend(mb.batch["name"])
    all_maps = {b: np.concatenate(v) for b, v in maps.items()}
    return ScoredSamples(
        scores={b: image_scores(m) for b, m in all_maps.items()}, maps=all_maps,
        gt=np.concatenate(gts), labels=np.asarray(labels), types=types, names=names,
    )


def evaluate(
    run_dir: str | Path,
    data_root: str | Path,
    category: str,
    json_out: str | Path | None = None,
    report_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    report_samples: int = 12,
    progress: bool = True,
) -> dict:
    """Evaluate a run on `<data_root>/<category>` the way the paper does.

    Statistics are refitted on the validation split of the given data (TRD §8.3) and stored in
    the run; the test split is scored with them, over the run's ``score_region`` (the whole
    map, or the part only; run.json without it: the whole map). Image labels come from the
    folder (a defect folder is a defect even if its mask vanishes at the model's resolution:
    trd-model.md §13.15).
    """
    run = load_run(run_dir, device=device)
    pre = run.info.preprocess
    region = run.info.config.score_region or "frame"
    val = list_samples(data_root, category, "validation")
    test = list_samples(data_root, category, "test")
    kw = dict(cfg=pre, batch_size=batch_size, shuffle=False)
    calibration = calibrate_on(run.model, make_loader(val, **kw), device, region,
                               run.info.config.score_fusion or "sum")
    write_json(Path(run_dir) / CALIBRATION_FILE, calibration)
    scored = score_samples(run.model, test, pre, calibration.stats, device, batch_size,
                           progress, region=region)
    all_maps, gt, y, types, names = (scored.maps, scored.gt, scored.labels, scored.types,
                                     scored.names)
    scores = scored.scores

    result: dict = {b: compute_metrics(scores[b], y, all_maps[b], gt) for b in BRANCHES}
    result["per_defect_type"] = {}
    good = np.asarray([t == "good" for t in types])
    for t in sorted(set(types) - {"good"}):
        sel = good | np.asarray([x == t for x in types])
        sub = compute_metrics(scores["fused"][sel], y[sel], None, None)
        result["per_defect_type"][t] = {"image_auroc": sub["image_auroc"]}
    result["threshold"] = calibration.threshold
    result["score_region"] = region
    result["n_test"] = len(y)
    result["category"] = category
    result["run"] = str(run_dir)

    text = json.dumps(result, indent=2)
    write_json(Path(run_dir) / METRICS_FILE, result)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text + "\n")
    if report_dir:
        from trainer.report_builder import build_report

        build_report(
            Path(report_dir), test, pre, all_maps, scores, y, gt, types, names,
            calibration.threshold, report_samples,
        )
    return result
