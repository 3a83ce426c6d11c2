"""Teacher weights: ``imagenet`` | ``random`` | a path to a torchvision-format state dict.

TRD's teacher is the torchvision ``IMAGENET1K_V1`` checkpoint of its backbone (trd-model.md §2:
``wide_resnet50_2-95faca4d.pth``, not V2). These machines are offline, so ``imagenet`` only
works where torch.hub can download the file or already has it in its cache; otherwise the
error says which file to fetch elsewhere and where to put it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from trainer.backbones import BACKBONES, backbone_spec, build_encoder, split_teacher_state

__all__ = ["TeacherWeightsError", "check_teacher_state", "resolve_teacher_weights"]

# Keys a torchvision checkpoint may lack: BatchNorm fills them on load (older file versions).
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_WRAPPER_KEYS = ("state_dict", "model")


class TeacherWeightsError(RuntimeError):
    """The teacher weights cannot be obtained or do not fit the backbone."""


def hub_checkpoint_dir() -> Path:
    """Directory where torch.hub caches downloaded checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_teacher_weights(spec: str, backbone: str) -> dict[str, Tensor] | None:
    """Turn a ``--teacher-weights`` value into a teacher state dict.

    Args:
        spec: ``"imagenet"`` (torchvision IMAGENET1K_V1 via the torch.hub cache),
            ``"offline"`` (the fractal-pretrained teacher shipped in ``trainer/assets``),
            ``"random"`` (keep the random init; deterministic under ``torch.manual_seed``),
            or a path to a torchvision-format state dict (optionally wrapped under
            ``"state_dict"`` or ``"model"``).
        backbone: ``"resnet18"`` or ``"wide_resnet50_2"``.

    Returns:
        The state dict (``layer4``/``fc`` entries may remain; :class:`trainer.model.TRD`
        ignores them), or None for ``random``.

    Raises:
        TeacherWeightsError: download impossible, missing or unreadable file, or a state dict
            that does not fit ``backbone``.
    """
    bspec = backbone_spec(backbone)
    key = spec.strip()
    if key.lower() == "random":
        return None
    if key.lower() == "imagenet":
        state = _download_imagenet(bspec.weights_url, bspec.weights_file)
        source = f"ImageNet weights {bspec.weights_file}"
    elif key.lower() == "offline":  # shipped fractal-pretrained teacher (docs/offline-teachers.md)
        from trainer.pretrain import offline_teacher_path

        try:
            state = _load_file(offline_teacher_path(backbone))
        except FileNotFoundError as exc:
            raise TeacherWeightsError(str(exc)) from exc
        source = f"shipped offline teacher for {backbone}"
    else:
        state = _load_file(Path(key).expanduser())
        source = f"teacher weights file {key}"
    check_teacher_state(state, backbone, source)
    return state


def _download_imagenet(url: str, file_name: str) -> dict[str, Tensor]:
    cache = hub_checkpoint_dir()
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, file_name=file_name
        )
    except OSError as exc:  # URLError, socket errors, no route to host, read-only cache...
        raise TeacherWeightsError(
            f"cannot download the ImageNet teacher weights {file_name} from {url} ({exc}). "
            f"This machine looks offline: download {file_name} elsewhere and either pass "
            f"--teacher-weights /path/to/{file_name} or copy it into the torch hub cache "
            f"directory {cache}/ (or use --teacher-weights random for a smoke test)."
        ) from exc
    except RuntimeError as exc:  # torch.hub's hash check
        raise TeacherWeightsError(
            f"the cached ImageNet weights {cache / file_name} are corrupt ({exc}); "
            f"delete the file and download {url} again."
        ) from exc
    return _as_state_dict(state, f"{cache / file_name}")


def _load_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise TeacherWeightsError(
            f"teacher weights file {path} does not exist; pass 'imagenet', 'random' or the "
            f"path of a torchvision-format .pth state dict to --teacher-weights."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / weights_only errors all mean "not loadable"
        raise TeacherWeightsError(
            f"teacher weights file {path} is not a loadable torch state dict ({exc}); "
            f"save it with torch.save(model.state_dict(), path)."
        ) from exc
    return _as_state_dict(obj, str(path))


def _as_state_dict(obj: object, where: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in _WRAPPER_KEYS:
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise TeacherWeightsError(
            f"{where} does not hold a state dict (a mapping of parameter names to tensors, "
            f"optionally under 'state_dict' or 'model'); got {type(obj).__name__}."
        )
    # Strip a DataParallel prefix so such checkpoints load too.
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def check_teacher_state(
    state: Mapping[str, Tensor], backbone: str, source: str = "teacher weights"
) -> None:
    """Raise :class:`TeacherWeightsError` unless ``state`` loads strictly into the teacher.

    ``layer4.*``/``fc.*`` are ignored; every other key must exist with the expected shape.
    The check builds the encoder on the meta device, so it costs no memory.
    """
    expected = build_encoder(backbone, device="meta").state_dict()
    kept, _ = split_teacher_state(state)
    missing = [k for k in expected if k not in kept and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in kept if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs expected {tuple(expected[k].shape)}"
        for k, v in kept.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {'; '.join(mismatched[:3])})")
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    fits = [name for name in BACKBONES if name != backbone and _fits(state, name)]
    hint = f" It looks like a {fits[0]} checkpoint: use --backbone {fits[0]}." if fits else ""
    raise TeacherWeightsError(
        f"{source} do not fit backbone {backbone!r}: {'; '.join(problems)}.{hint} "
        f"Expected a torchvision {backbone} state dict."
    )


def _fits(state: Mapping[str, Tensor], backbone: str) -> bool:
    expected = build_encoder(backbone, device="meta").state_dict()
    kept, _ = split_teacher_state(state)
    return all(
        k in kept and tuple(kept[k].shape) == tuple(v.shape)
        for k, v in expected.items()
        if not k.endswith(_OPTIONAL_SUFFIXES)
    ) and all(k in expected for k in kept)


def default_cache_hint(backbone: str) -> str:
    """Where ``imagenet`` weights for ``backbone`` are looked up (for CLI help texts)."""
    return os.fspath(hub_checkpoint_dir() / backbone_spec(backbone).weights_file)
