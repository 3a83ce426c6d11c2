"""Training-loop fidelity to the authors' recipe (issue 14): resume, epochs per dataset, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trainer.run import TrainConfig  # noqa: E402
from trainer.train import train  # noqa: E402


def _cfg(data: Path, epochs: int, **over) -> TrainConfig:
    base = dict(
        data_root=str(data), category="puck", backbone="resnet18", image_size=64,
        epochs=epochs, batch_size=4, teacher_weights="random", seed=3, modality="depth",
        augment="rot90",
    )
    base.update(over)
    return TrainConfig(**base)


def _history(run: Path) -> list[tuple[float, float]]:
    info = json.loads((run / "run.json").read_text())
    return [(h["loss_rgb"], h["loss_3d"]) for h in info["history"]]


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    """Shuffle order and augmentation of epochs 2-3 continue where epoch 1 left them."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_cfg(tiny_dataset, 3), straight, progress=False)
    train(_cfg(tiny_dataset, 1), resumed, progress=False)  # "interrupted" after epoch 1
    train(_cfg(tiny_dataset, 3), resumed, progress=False)
    assert _history(resumed) == _history(straight)  # every epoch's losses, bit for bit
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _eyecandies(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """A preprocessed-Eyecandies tree (trd-model.md §9.5) with good train/validation samples."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("validation", n_val)):
        for i in range(n):
            for sub in ("rgb", "normals"):
                d = root / "CandyCane" / split / "good" / sub
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{i:03d}.png"), rng.integers(0, 256, (48, 48, 3), np.uint8))
    return root


def test_epochs_default_to_the_authors_count_per_dataset(tmp_path: Path) -> None:
    from trainer.run import DEFAULT_EPOCHS, resolve_epochs

    assert DEFAULT_EPOCHS == {"mvtec3d": 200, "eyecandies": 100}
    cfg = TrainConfig(data_root=str(tmp_path), category="x")
    assert cfg.epochs is None
    assert resolve_epochs(cfg, "eyecandies")[0].epochs == 100
    assert resolve_epochs(cfg, "mvtec3d") == (cfg.model_copy(update={"epochs": 200}),
                                              "dataset-default")
    explicit = cfg.model_copy(update={"epochs": 7})
    assert resolve_epochs(explicit, "eyecandies") == (explicit, "explicit")


@pytest.mark.slow
def test_cli_records_epochs_determinism_and_resize(tmp_path: Path, monkeypatch) -> None:
    """`trd-edge train` without --epochs on Eyecandies: the dataset's count, recorded in run.json
    with where it came from, the kernel choice and the reference resize."""
    import trainer.train as tt
    from edge.cli import main
    from trainer.run import DEFAULT_EPOCHS

    monkeypatch.setitem(DEFAULT_EPOCHS, "eyecandies", 1)  # 100 in earnest; 1 keeps this quick
    seen: list[tuple[bool, bool, bool]] = []
    real_loss = tt.branch_loss

    def spy(*args, **kwargs):
        seen.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                     torch.are_deterministic_algorithms_enabled()))
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(tt, "branch_loss", spy)
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled())
    data, run = _eyecandies(tmp_path / "eye"), tmp_path / "run"
    args = ["train", "--data-root", str(data), "--category", "CandyCane", "--out", str(run),
            "--backbone", "resnet18", "--image-size", "32", "--batch-size", "2",
            "--teacher-weights", "random", "--preprocess", "reference",
            "--rgb-resize", "pil-bilinear"]
    assert main([*args, "--no-deterministic"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["dataset_kind"] == "eyecandies" and info["epochs_done"] == 1
    assert info["config"]["epochs"] == 1 and info["epochs_source"] == "dataset-default"
    assert info["config"]["deterministic"] is False
    assert info["preprocess"]["rgb_resize"] == "pil-bilinear"
    assert set(seen) == {(False, True, False)}  # benchmark kernels while training
    # the default, on resume with more epochs (--epochs wins; the kernel choice may change)
    seen.clear()
    assert main([*args, "--epochs", "2"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["epochs"] == 2 and info["epochs_source"] == "explicit"
    assert info["config"]["deterministic"] is True and info["epochs_done"] == 2
    assert set(seen) == {(True, False, True)}  # the reference's setup_seed
    after = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())
    assert after == before  # process-global flags are restored
