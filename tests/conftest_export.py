"""Helpers for the export/backend tests: a small run directory without a training loop.

``make_run`` writes exactly what ``trainer.run.load_run`` reads (run.json, checkpoint.pt,
calibration.json) for a randomly initialised resnet18 TRD at 64 px, with validation statistics
and threshold computed from the model's own maps on the synthetic validation split. It is much
faster than training and keeps these tests independent of the training loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 64


def prepared_split(root: Path, split: str, size: int = IMAGE_SIZE, category: str = "puck"):
    """(samples, labels) for one split of a synthetic dataset, preprocessed (PreparedSample)."""
    from edge.datasets.dataset_io import list_samples, load_raw
    from edge.processing.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig(image_size=size, modality="depth")
    samples, labels = [], []
    for rec in list_samples(root, category, split):
        raw = load_raw(rec)
        samples.append(preprocess(raw.rgb, raw.xyz, cfg))
        labels.append(rec.label)
    return samples, np.array(labels)


def write_run_recorded_before(folder: Path, config, key: str) -> Path:
    """A run.json of ``config`` (a working-pipeline TrainConfig) in ``folder`` without the
    config's ``key``: a run recorded before that setting existed."""
    import json

    from trainer.run import RunInfo, write_json
    from trainer.train import preprocess_config_for

    info = RunInfo(config=config,
                   preprocess=preprocess_config_for(config.model_copy(update={"align": "none"})))
    write_json(folder / "run.json", info)
    raw = json.loads((folder / "run.json").read_text())
    del raw["config"][key]
    (folder / "run.json").write_text(json.dumps(raw))
    return folder / "run.json"


def make_run(run_dir: Path, data_root: Path, seed: int = 0, size: int = IMAGE_SIZE) -> Path:
    """Write a loadable run directory for a random-weight resnet18 TRD."""
    import torch

    from edge.processing.preprocess import PreprocessConfig
    from edge.processing.scoring import StatsAccumulator, image_scores, score_maps
    from trainer.model import TRD
    from trainer.run import Calibration, RunInfo, TrainConfig, write_json

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TRD("resnet18").eval()
    cfg = TrainConfig(
        data_root=str(data_root),
        category="puck",
        backbone="resnet18",
        image_size=size,
        epochs=1,
        batch_size=4,
        teacher_weights="random",
        seed=seed,
    )
    info = RunInfo(
        config=cfg,
        preprocess=PreprocessConfig(image_size=size, modality="depth"),
        git_revision="test",
        epochs_done=1,
    )
    write_json(run_dir / "run.json", info)
    torch.save({"model": model.state_dict()}, run_dir / "checkpoint.pt")

    samples, _ = prepared_split(data_root, "validation", size)
    rgb = np.stack([p.rgb for p in samples])
    x3d = np.stack([p.x3d for p in samples])
    with torch.inference_mode():
        m_rgb, m_3d = model(torch.from_numpy(rgb), torch.from_numpy(x3d))
    acc = StatsAccumulator()
    acc.add(m_rgb.numpy(), m_3d.numpy())
    stats = acc.result()
    scores = image_scores(score_maps(m_rgb.numpy(), m_3d.numpy(), stats).fused)
    calib = Calibration(
        stats=stats,
        threshold=float(scores.max()),
        threshold_method="max-validation",
        validation_image_scores=[float(s) for s in scores],
    )
    write_json(run_dir / "calibration.json", calib)
    return run_dir


def write_toy_bundle(
    folder: Path, size: int = 32, fp16: bool = True, scale: float = 1.0, **preprocess
) -> Path:
    """A torch-free bundle whose 'model' is a tiny ONNX graph built with onnx.helper.

    Extra keyword arguments go into the manifest's preprocessing (e.g. ``align=...``).

    ``map_rgb = scale * mean_c(rgb²)``, ``map_3d = mean_c(|x3d|)``, each (1,1,S,S). The FP16
    file casts to half for the squares and back to float for the output, like the real export.
    """
    import onnx
    from onnx import TensorProto, helper

    from edge.bundle import (
        Manifest,
        ModelSpec,
        ScoringSpec,
        StatsSpec,
        atomic_write_text,
        default_io,
        file_entry,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def graph(half: bool) -> onnx.ModelProto:
        inputs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, size, size])
            for n in ("rgb", "x3d")
        ]
        outputs = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, size, size])
            for n in ("map_rgb", "map_3d")
        ]
        dt = TensorProto.FLOAT16 if half else TensorProto.FLOAT
        k = helper.make_tensor("k", dt, [], [scale])
        nodes = [
            helper.make_node("Cast", ["rgb"], ["rgb_c"], to=dt),
            helper.make_node("Cast", ["x3d"], ["x3d_c"], to=dt),
            helper.make_node("Mul", ["rgb_c", "rgb_c"], ["sq"]),
            helper.make_node("Mul", ["sq", "k"], ["sqk"]),
            helper.make_node("ReduceMean", ["sqk"], ["m_rgb_c"], axes=[1], keepdims=1),
            helper.make_node("Abs", ["x3d_c"], ["ab"]),
            helper.make_node("ReduceMean", ["ab"], ["m_3d_c"], axes=[1], keepdims=1),
            helper.make_node("Cast", ["m_rgb_c"], ["map_rgb"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["m_3d_c"], ["map_3d"], to=TensorProto.FLOAT),
        ]
        g = helper.make_graph(nodes, "toy", inputs, outputs, initializer=[k])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    files = {"model": "model.onnx"}
    onnx.save(graph(False), folder / "model.onnx")
    if fp16:
        files["model_fp16"] = "model.fp16.onnx"
        onnx.save(graph(True), folder / "model.fp16.onnx")
    manifest = Manifest(
        model=ModelSpec(backbone="toy", image_size=size, modality="depth", variant=f"toy-{size}"),
        preprocess={"image_size": size, "modality": "depth", **preprocess},
        io=default_io(size, host_normalised=True),  # the schema-1.0 contract: float32 in
        files={k: file_entry(folder, v) for k, v in files.items()},
        scoring=ScoringSpec(
            stats=StatsSpec(rgb_mean=1.0, rgb_std=0.5, x3d_mean=0.8, x3d_std=0.3, n_maps=4),
            threshold=3.0,
            threshold_method="test",
        ),
    )
    atomic_write_text(folder / "manifest.json", manifest.model_dump_json(indent=2))
    return folder
