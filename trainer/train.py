"""The TRD training loop (trd-model.md §7): two students, one optimiser each, resumable."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge.datasets.dataset_io import dataset_kind, list_samples
from edge.processing.preprocess import (
    BILATERAL_RANGE,
    WHOLE_FRAME,
    PreprocessConfig,
    sobel_ksize_for,
)
from edge.sources.acquisition import read_acquisition
from trainer.choices import (
    MAX_IMAGES,
    AutoChoices,
    choose_from_data,
    depth_noise,
    describe,
    heights_for,
    model_px_per_frame_px,
    spread_sample,
    turns_parts,
)
from trainer.data import make_loader
from trainer.inference import calibrate_on
from trainer.loss import branch_loss
from trainer.model import TRD
from trainer.pretrain import recalibrate_teacher, wants_bn_recalibration
from trainer.run import (
    CALIBRATION_FILE,
    CHECKPOINT_FILE,
    DEFAULT_IMAGE_SIZE,
    RUN_FILE,
    EpochRecord,
    RunError,
    RunInfo,
    TrainConfig,
    git_revision,
    read_run_info,
    resolve_epochs,
    write_json,
)
from trainer.weights import resolve_teacher_weights

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the reference seeds all three)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def preprocess_config_for(cfg: TrainConfig) -> PreprocessConfig:
    """The preprocessing a run trains with; the bundle and the station reuse it verbatim."""
    ksize = cfg.sobel_ksize or sobel_ksize_for(cfg.category)
    return PreprocessConfig(
        image_size=cfg.image_size, modality=cfg.modality, sobel_ksize=ksize,
        align=cfg.align or "none",
        pipeline=cfg.preprocess, roi=cfg.roi, rgb_resize=cfg.rgb_resize,
        depth_smoothing=cfg.depth_smoothing or 0.0,
        depth_filter=cfg.depth_filter or "gaussian",
        depth_noise=cfg.depth_noise or 0.0,
        outline_smoothing=(cfg.outline_smoothing or 0.0) if cfg.preprocess == "working" else 0.0,
        fill_dropouts=bool(cfg.fill_dropouts) and cfg.preprocess == "working",
        heights=(cfg.heights or "camera") if cfg.preprocess == "working" else "camera",
    )


@contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """The GPU kernel choice for a run; the process-global flags are restored afterwards.

    On: the reference's ``setup_seed`` (``cudnn.deterministic=True``, ``benchmark=False``) plus
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, so a run (and a resumed one)
    repeats bit for bit on the same GPU; an op without a deterministic kernel warns instead of
    stopping a long run. Off: ``cudnn.benchmark`` picks the fastest kernels (the input size
    never changes), results vary in the last bits between runs. CPU training is unaffected.
    """
    cudnn = torch.backends.cudnn
    saved = (
        cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if enabled:  # deterministic cuBLAS needs this before its first handle; harmless elsewhere
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn.deterministic, cudnn.benchmark = enabled, not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


# Settings that change speed or where a run executes, not what it computes: free on resume.
_RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "deterministic"}


def _check_resume(out: Path, cfg: TrainConfig) -> RunInfo | None:
    if not (out / RUN_FILE).is_file():
        return None
    info = read_run_info(out)
    old = info.config.model_dump(exclude=_RESUMABLE_CHANGES)
    new = cfg.model_dump(exclude=_RESUMABLE_CHANGES)
    for d in (old, new):  # no ROI and the whole frame are one view (keep_resumed_choices)
        if d.get("roi") is not None and tuple(d["roi"]) == WHOLE_FRAME:
            d["roi"] = None
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise RunError(
            f"{out} holds a run with a different configuration ({', '.join(diff)} differ); "
            "choose another --out directory or delete that run."
        )
    return info


def _rng_state(loader: DataLoader) -> dict:
    """Every random stream the next epoch draws from, in types ``torch.load(weights_only=True)``
    accepts: the loader's own generator picks the shuffle order (re-seeded at a resume, it
    would repeat the first epoch's), the dataset's generator the rot90 augmentation."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "loader": loader.generator.get_state(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, gauss),
        "python": random.getstate(),
        "dataset": loader.dataset.rng.bit_generator.state,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, loader: DataLoader) -> None:
    """Undo `_rng_state` (the inverse, stream by stream). RNG states must be CPU tensors; a
    checkpoint loaded with ``map_location="cuda"`` has moved them."""
    loader.generator.set_state(state["loader"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    loader.dataset.rng.bit_generator.state = state["dataset"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


def _save_checkpoint(
    path: Path, model: TRD, optims: dict, scheds: dict, epoch: int, loader: DataLoader
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optims.items()},
        "schedulers": {k: s.state_dict() for k, s in scheds.items()},
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
        "rng": _rng_state(loader),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) a TRD run into `out` and calibrate it on the validation split.

    ``cfg.epochs`` None trains the authors' count for the dataset kind (`DEFAULT_EPOCHS`);
    ``cfg.deterministic`` selects the kernels (`determinism`).
    """
    if cfg.image_size is not None and cfg.image_size % 32:
        raise ValueError(f"--image-size {cfg.image_size} is not a multiple of 32 (try 256)")
    refuse_working_only(cfg)  # before any data is read
    kind = dataset_kind(cfg.data_root, cfg.category)
    cfg, epochs_source = resolve_epochs(cfg, kind)
    cfg = resolve_fill_dropouts(cfg, Path(out))  # before the choices: they see its inputs
    cfg = keep_resumed_choices(cfg, Path(out))
    cfg, choices = resolve_choices(cfg)
    cfg = resolve_heights(cfg)
    cfg = resolve_depth_smoothing(cfg)
    cfg = resolve_depth_filter(cfg)
    cfg = resolve_outline_smoothing(cfg)
    cfg = resolve_augment(cfg, kind, Path(out))
    cfg = resolve_score_region(cfg, kind, Path(out))
    cfg = resolve_score_fusion(cfg, Path(out))
    with determinism(cfg.deterministic):
        return _train(cfg, Path(out), kind, epochs_source, progress, choices)


def refuse_working_only(cfg: TrainConfig) -> None:
    """Raise ValueError naming the flag and the fix when ``cfg`` asks the reference pipeline
    (the authors' 3D image from camera z) for a setting only the working pipeline has. `train`
    calls it before reading any data; each resolver calls it too."""
    if cfg.preprocess == "working":
        return
    asked = [flag for flag, on in (
        ("--heights plane", cfg.heights == "plane"),
        ("--depth-filter bilateral", cfg.depth_filter == "bilateral"),
        ("--outline-smoothing", bool(cfg.outline_smoothing)),
        ("--augment outline", cfg.augment == "outline"),
    ) if on]
    if asked:
        raise ValueError(
            f"{' and '.join(asked)} {'applies' if len(asked) == 1 else 'apply'} to the working "
            "pipeline only (the reference pipeline computes the authors' 3D image from camera "
            f"z): drop --preprocess reference or {' and '.join(asked)}"
            + (" (--depth-filter gaussian smooths on the reference pipeline)"
               if cfg.depth_filter == "bilateral" else "")
        )


def resolve_choices(cfg: TrainConfig) -> tuple[TrainConfig, AutoChoices | None]:
    """``cfg`` with align and sobel_ksize filled in: chosen from the good training images when
    ``cfg.choose_from_data`` (printed; recorded in run.json), else the old defaults."""
    if not cfg.choose_from_data:
        update = {"align": cfg.align or "none",
                  "image_size": cfg.image_size or DEFAULT_IMAGE_SIZE}
        return cfg.model_copy(update=update), None
    records = list_samples(cfg.data_root, cfg.category, "train")
    base = preprocess_config_for(cfg.model_copy(
        update={"align": "none", "image_size": cfg.image_size or DEFAULT_IMAGE_SIZE}))
    choices = choose_from_data(records, base, cfg.align, cfg.sobel_ksize, cfg.image_size,
                               cfg.roi, cfg.heights,
                               smoothing=cfg.depth_smoothing is None
                               and not _sensor_record(cfg).is_file())
    print(describe(choices), flush=True)
    update: dict = {"align": choices.align.value}
    if choices.roi is not None:
        update["roi"] = choices.roi.value
    if choices.image_size is not None:
        update["image_size"] = choices.image_size.value
    if choices.sobel_ksize is not None:
        update["sobel_ksize"] = choices.sobel_ksize.value
    if choices.depth_smoothing is not None:
        update["depth_smoothing"] = choices.depth_smoothing.value
    return cfg.model_copy(update=update), choices


def keep_resumed_choices(cfg: TrainConfig, out: Path) -> TrainConfig:
    """``cfg`` with the input size, ROI, heights and depth smoothing left open (None) taken
    from the run being resumed in ``out``, so that the data cannot choose differently halfway;
    unchanged for a new run."""
    resumed = _resumed_config(out)
    if resumed is None:
        return cfg
    update: dict = {}
    if cfg.image_size is None:
        update["image_size"] = resumed.image_size
    if cfg.roi is None:  # a run that saw the whole frame (None) keeps it, not a new choice
        update["roi"] = resumed.roi or WHOLE_FRAME
    if cfg.heights is None:  # a run.json without the key: camera z
        update["heights"] = resumed.heights or "camera"
    if cfg.depth_smoothing is None:
        update["depth_smoothing"] = resumed.depth_smoothing or 0.0
    if cfg.depth_filter is None:  # a run.json without the key: a Gaussian
        update["depth_filter"] = resumed.depth_filter or "gaussian"
    if cfg.depth_noise is None:
        update["depth_noise"] = resumed.depth_noise or 0.0
    if cfg.outline_smoothing is None:  # a run.json without the key: none
        update["outline_smoothing"] = resumed.outline_smoothing or 0.0
    return cfg.model_copy(update=update)


def resolve_heights(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``heights`` filled in when None (after the alignment is chosen; a resumed
    run already has its own from `keep_resumed_choices`): `trainer.choices.heights_for`,
    printed. Heights above the table with the reference pipeline are refused (it computes the
    authors' 3D image)."""
    refuse_working_only(cfg)
    if cfg.heights is not None:
        return cfg
    heights = heights_for(cfg.preprocess, cfg.align or "none")
    why = ("parts are turned to their pose: the table's tilt would reach each from another side"
           if heights == "plane" else "no turn, or the reference pipeline: camera z as before")
    print(f"3D image from {'heights above the table' if heights == 'plane' else 'camera z'} "
          f"({why})", flush=True)
    return cfg.model_copy(update={"heights": heights})


def _resumed_config(out: Path | None) -> TrainConfig | None:
    """The configuration recorded by the run already in ``out`` (a resume), else None: what a
    resumed run keeps for the settings a new run would resolve."""
    if out is None or not (out / RUN_FILE).is_file():
        return None
    return read_run_info(out).config


def resolve_score_region(cfg: TrainConfig, kind: str, out: Path | None = None) -> TrainConfig:
    """``cfg`` with ``score_region`` filled in when None (printed): a run being resumed keeps
    its recorded one; else "part" for the working pipeline, whose foreground is the part found
    by the background-plane fit (background texture then cannot set the score:
    docs/any-shape.md), "frame" for the reference pipeline (the authors' scoring) and for
    preprocessed Eyecandies (its foreground is every pixel with a normal, the whole scene)."""
    if cfg.score_region is not None:
        return cfg
    resumed = _resumed_config(out)
    if resumed is not None:
        region, why = resumed.score_region or "frame", "the resumed run's"
    elif kind == "eyecandies":
        region, why = "frame", "preprocessed Eyecandies has no part mask (its normals cover the scene)"
    elif cfg.preprocess == "reference":
        region, why = "frame", "the reference pipeline scores as the authors do"
    else:
        region, why = "part", "the working pipeline's foreground is the part"
    print(f"score region: {region} ({why}; --score-region overrides)", flush=True)
    return cfg.model_copy(update={"score_region": region})


def resolve_score_fusion(cfg: TrainConfig, out: Path | None = None) -> TrainConfig:
    """``cfg`` with ``score_fusion`` filled in when None (printed): a run being resumed keeps
    its recorded one (a run.json without it: sum); else "max" for the working pipeline, where a
    defect only one branch sees must not be buried under the other branch's noise on the same
    part (docs/any-shape.md, "fusion by the larger branch"), "sum" for the reference
    pipeline (the authors')."""
    if cfg.score_fusion is not None:
        return cfg
    resumed = _resumed_config(out)
    if resumed is not None:
        fusion, why = resumed.score_fusion or "sum", "the resumed run's"
    elif cfg.preprocess == "reference":
        fusion, why = "sum", "the reference pipeline fuses as the authors do"
    else:
        fusion, why = "max", ("each branch in units of its good parts' image scores: a defect "
                              "one branch sees is not buried under the other's noise")
    print(f"score fusion: {fusion} ({why}; --score-fusion overrides)", flush=True)
    return cfg.model_copy(update={"score_fusion": fusion})


def resolve_fill_dropouts(cfg: TrainConfig, out: Path | None = None) -> TrainConfig:
    """``cfg`` with ``fill_dropouts`` filled in when None: a run being resumed keeps its
    recorded one (a run.json without it: off); else on for the working pipeline, whose 3D image
    would otherwise see a depth dropout inside the part as a spike (docs/any-shape.md), off for
    the reference pipeline (the authors' preprocessing)."""
    if cfg.fill_dropouts is not None:
        return cfg
    resumed = _resumed_config(out)
    if resumed is not None:
        fill, why = bool(resumed.fill_dropouts), "the resumed run's"
    else:
        fill = cfg.preprocess == "working"
        why = "working pipeline" if fill else "the reference pipeline keeps the authors' 3D image"
    print(f"depth dropouts inside the part: {'filled' if fill else 'left as they are'} ({why})",
          flush=True)
    return cfg.model_copy(update={"fill_dropouts": fill})


def _sensor_record(cfg: TrainConfig) -> Path:
    """Where a data set keeps its camera record (written by ``trd-edge synth --sensor``)."""
    return Path(cfg.data_root) / cfg.category / "calibration" / "sensor.json"


def resolve_depth_smoothing(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``depth_smoothing`` filled in when still None (not given, not chosen from
    the data: `resolve_choices`): from the data set's camera record
    (``<category>/calibration/sensor.json``) by `edge.datasets.sensors.depth_smoothing_for`,
    else 0 (off). The choice is printed."""
    if cfg.depth_smoothing is not None:
        return cfg
    record = _sensor_record(cfg)
    sigma = 0.0
    if record.is_file():
        from edge.datasets.dataset_io import load_raw
        from edge.datasets.sensors import depth_smoothing_for

        info = json.loads(record.read_text())
        first = list_samples(cfg.data_root, cfg.category, "train")[0]
        width = load_raw(first).rgb.shape[1]
        corr = float(info["noise_correlation_px"]) * model_px_per_frame_px(
            cfg.image_size, width, cfg.roi)
        sigma = depth_smoothing_for(corr)
        print(f"depth smoothing σ = {sigma:g} model px (the camera record's noise correlation "
              f"length is {corr:.1f} model px; edge.datasets.sensors.depth_smoothing_for)", flush=True)
    return cfg.model_copy(update={"depth_smoothing": sigma})


def resolve_depth_filter(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``depth_filter`` (None: bilateral for the working pipeline, a Gaussian for
    the reference one) and, for a bilateral filter that smooths, ``depth_noise`` (None: measured
    on the good training parts, `trainer.choices.depth_noise`) filled in; printed. A resumed
    run already has both from `keep_resumed_choices`."""
    refuse_working_only(cfg)
    kind = cfg.depth_filter or ("bilateral" if cfg.preprocess == "working" else "gaussian")
    update: dict = {"depth_filter": kind}
    if kind == "bilateral" and cfg.depth_smoothing and cfg.depth_noise is None:
        from edge.datasets.dataset_io import load_raw

        records = [r for r in list_samples(cfg.data_root, cfg.category, "train")
                   if r.kind != "eyecandies"]
        raws = [load_raw(r) for r in spread_sample(records, MAX_IMAGES)]
        noise = update["depth_noise"] = round(depth_noise(raws), 9)
        if noise > 0:
            print(f"depth smoothing bilateral: steps, holes and rims stay sharp (heights' noise "
                  f"{noise * 1e3:.3f} mm per pixel on {len(raws)} good training images; "
                  f"range {BILATERAL_RANGE:g}× that)", flush=True)
        else:
            print(f"depth smoothing bilateral: no noise in the heights of {len(raws)} good "
                  "training images, so nothing is smoothed (--depth-filter gaussian smooths "
                  "regardless)", flush=True)
    elif cfg.depth_noise is None:
        update["depth_noise"] = 0.0
    return cfg.model_copy(update=update)


def resolve_outline_smoothing(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``outline_smoothing`` filled in when None: 0 (off; a resumed run already
    has its own from `keep_resumed_choices`). Refused with the reference pipeline.

    Measured at `trainer.augment.OUTLINE_SIGMA` (docs/any-shape.md, "Edges that do not depend
    on the camera's grid"): on the bracket it lifts the 3D branch of the seed whose good test
    part lies along the camera's grid (0.970 → 0.990) but costs the other seeds their
    geometry-only rows (1.000 → 0.905, 0.997 → 0.962), so it is off unless asked for; the
    same σ on half the training parts only (``--augment outline``) keeps them."""
    refuse_working_only(cfg)
    if cfg.outline_smoothing is not None:
        return cfg
    return cfg.model_copy(update={"outline_smoothing": 0.0})


def resolve_augment(cfg: TrainConfig, kind: str, out: Path | None = None) -> TrainConfig:
    """``cfg`` with ``augment`` filled in when None (printed; after the alignment is chosen): a
    run being resumed keeps its recorded one; else "outline" where the working pipeline turns
    parts to their pose, "none" otherwise. ``outline`` with the reference pipeline or
    preprocessed Eyecandies is refused by name.

    A turned part's edges are resampled at the angle it lay at; a good part that lay along the
    camera's grid shows clean edges the model never saw, and the bracket's seed 2 scored one as
    a dent. Smoothing the outline of half the training parts (``trainer.augment``) teaches both
    (docs/any-shape.md, "Edges that do not depend on the camera's grid"). A fixtured part's
    edges always fall the same way (no turn): nothing to teach."""
    refuse_working_only(cfg)
    if cfg.augment is not None:
        return cfg
    resumed = _resumed_config(out)
    if resumed is not None:
        augment, why = resumed.augment or "none", "the resumed run's"
    elif turns_parts(cfg.preprocess, cfg.align) and kind != "eyecandies":
        augment, why = "outline", ("parts are turned to their pose: half the training parts "
                                   "with smoothed edges, so a part along the camera's grid is "
                                   "not new")
    else:
        augment, why = "none", ("no turn, the reference pipeline or preprocessed normals: "
                                "edges fall as in training")
    print(f"augmentation: {augment} ({why}; --augment overrides)", flush=True)
    return cfg.model_copy(update={"augment": augment})


def _train(
    cfg: TrainConfig, out: Path, kind: str, epochs_source: str, progress: bool,
    choices: AutoChoices | None = None,
) -> Path:
    """`train` with the epochs resolved, inside its determinism settings."""
    assert cfg.epochs is not None  # resolve_epochs filled it in
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    pre = preprocess_config_for(cfg)

    train_records = list_samples(cfg.data_root, cfg.category, "train")
    val_records = list_samples(cfg.data_root, cfg.category, "validation")
    loader_kw = dict(cfg=pre, num_workers=cfg.num_workers)
    train_loader = make_loader(
        train_records, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
        augment=cfg.augment, **loader_kw,
    )
    val_loader = make_loader(val_records, batch_size=cfg.batch_size, shuffle=False, **loader_kw)

    info = _check_resume(out, cfg)
    model = TRD(cfg.backbone, teacher_state=resolve_teacher_weights(cfg.teacher_weights, cfg.backbone))
    model.to(device)
    if wants_bn_recalibration(cfg.teacher_weights, cfg.backbone):
        # Offline teachers: BN statistics re-estimated on the good training images (on resume
        # the checkpoint restores the same buffers). docs/offline-teachers.md
        bn_loader = make_loader(train_records, batch_size=cfg.batch_size, **loader_kw)
        recalibrate_teacher(model, bn_loader, device)
    optims = {
        b: torch.optim.Adam(model.student_parameters(b), lr=cfg.lr, betas=cfg.betas)
        for b in ("rgb", "3d")
    }
    scheds = {b: torch.optim.lr_scheduler.ExponentialLR(o, gamma=cfg.gamma) for b, o in optims.items()}
    start = 0
    ckpt_path = out / CHECKPOINT_FILE
    if info is not None and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        for b in optims:
            optims[b].load_state_dict(ckpt["optimizers"][b])
            scheds[b].load_state_dict(ckpt["schedulers"][b])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if "rng" in ckpt:  # checkpoints before it restore torch's RNG only
            _restore_rng(ckpt["rng"], train_loader)
        start = int(ckpt["epoch"])
        log.info("resuming %s at epoch %d/%d", out, start, cfg.epochs)
    if info is None:
        info = RunInfo(
            config=cfg,
            preprocess=pre,
            git_revision=git_revision(),
            dataset_kind=kind,
            torch_version=torch.__version__,
        )
    info.config = cfg  # epochs may have been raised for a resume
    info.acquisition = read_acquisition(Path(cfg.data_root) / cfg.category)
    if info.acquisition.filtering:
        print(f"training data acquired with {info.acquisition.describe()} "
              f"({info.acquisition.source}); the bundle records it, the station repeats it",
              flush=True)
    info.auto_choices = choices
    info.epochs_source = epochs_source
    info.n_train, info.n_validation = len(train_records), len(val_records)
    write_json(out / RUN_FILE, info)

    bar = tqdm(
        range(start, cfg.epochs), desc=f"train {cfg.category}", unit="epoch",
        initial=start, total=cfg.epochs, disable=not progress,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        sums = {"rgb": 0.0, "3d": 0.0}
        n = 0
        model.train()
        for batch in train_loader:
            rgb, x3d = batch["rgb"].to(device), batch["x3d"].to(device)
            t_rgb, t_3d = model.teacher_features(rgb, x3d)
            own = {"rgb": t_rgb, "3d": t_3d}
            for b in ("rgb", "3d"):  # reference order: RGB student step, then 3D student step
                loss = branch_loss(model.branch(b, t_rgb, t_3d), own[b])
                optims[b].zero_grad(set_to_none=True)
                loss.backward()
                optims[b].step()
                sums[b] += float(loss.detach()) * rgb.shape[0]
            n += rgb.shape[0]
        lr = scheds["rgb"].get_last_lr()[0]
        for s in scheds.values():
            s.step()
        rec = EpochRecord(
            epoch=epoch + 1, loss_rgb=sums["rgb"] / n, loss_3d=sums["3d"] / n, lr=lr,
            seconds=time.perf_counter() - t0,
        )
        info.history.append(rec)
        info.epochs_done = epoch + 1
        _save_checkpoint(ckpt_path, model, optims, scheds, epoch + 1, train_loader)
        write_json(out / RUN_FILE, info)
        bar.set_postfix(loss_rgb=f"{rec.loss_rgb:.4f}", loss_3d=f"{rec.loss_3d:.4f}")
        if not progress:
            log.info("epoch %d/%d loss rgb %.4f 3d %.4f (%.1fs)", rec.epoch, cfg.epochs,
                     rec.loss_rgb, rec.loss_3d, rec.seconds)
    bar.close()

    calibration = calibrate_on(model, val_loader, str(device), cfg.score_region or "frame",
                               cfg.score_fusion or "sum")
    write_json(out / CALIBRATION_FILE, calibration)
    return out
