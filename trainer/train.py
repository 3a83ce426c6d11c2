"""The TRD training loop (trd-model.md §7): two students, one optimiser each, resumable."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge.dataset_io import dataset_kind, list_samples
from edge.preprocess import PreprocessConfig, sobel_ksize_for
from trainer.data import make_loader
from trainer.inference import calibrate_on
from trainer.loss import branch_loss
from trainer.model import TRD
from trainer.pretrain import recalibrate_teacher, wants_bn_recalibration
from trainer.run import (
    CALIBRATION_FILE,
    CHECKPOINT_FILE,
    RUN_FILE,
    EpochRecord,
    RunError,
    RunInfo,
    TrainConfig,
    git_revision,
    read_run_info,
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
        image_size=cfg.image_size, modality=cfg.modality, sobel_ksize=ksize, align=cfg.align,
        pipeline=cfg.preprocess, roi=cfg.roi, rgb_resize=cfg.rgb_resize,
    )


def _check_resume(out: Path, cfg: TrainConfig) -> RunInfo | None:
    if not (out / RUN_FILE).is_file():
        return None
    info = read_run_info(out)
    old = info.config.model_dump(exclude={"epochs", "device", "num_workers"})
    new = cfg.model_dump(exclude={"epochs", "device", "num_workers"})
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise RunError(
            f"{out} holds a run with a different configuration ({', '.join(diff)} differ); "
            "choose another --out directory or delete that run."
        )
    return info


def _save_checkpoint(path: Path, model: TRD, optims: dict, scheds: dict, epoch: int) -> None:
    state = {
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optims.items()},
        "schedulers": {k: s.state_dict() for k, s in scheds.items()},
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> Path:
    """Train (or resume) a TRD run into `out` and calibrate it on the validation split."""
    if cfg.image_size % 32:
        raise ValueError(f"--image-size {cfg.image_size} is not a multiple of 32 (try 256)")
    out = Path(out)
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
        torch.set_rng_state(ckpt["torch_rng"])
        start = int(ckpt["epoch"])
        log.info("resuming %s at epoch %d/%d", out, start, cfg.epochs)
    if info is None:
        info = RunInfo(
            config=cfg,
            preprocess=pre,
            git_revision=git_revision(),
            dataset_kind=dataset_kind(cfg.data_root, cfg.category),
            torch_version=torch.__version__,
        )
    info.config = cfg  # epochs may have been raised for a resume
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
        _save_checkpoint(ckpt_path, model, optims, scheds, epoch + 1)
        write_json(out / RUN_FILE, info)
        bar.set_postfix(loss_rgb=f"{rec.loss_rgb:.4f}", loss_3d=f"{rec.loss_3d:.4f}")
        if not progress:
            log.info("epoch %d/%d loss rgb %.4f 3d %.4f (%.1fs)", rec.epoch, cfg.epochs,
                     rec.loss_rgb, rec.loss_3d, rec.seconds)
    bar.close()

    calibration = calibrate_on(model, val_loader, str(device))
    write_json(out / CALIBRATION_FILE, calibration)
    return out
