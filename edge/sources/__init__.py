"""Frame sources for the edge runtime, chosen by a ``--camera`` spec.

=====================================  =================================================
spec                                   source
=====================================  =================================================
``realsense`` / ``realsense:SERIAL``   live Intel RealSense camera (`RealSenseSource`)
``file:PATH.db3`` / ``file:PATH.bag``  RealSense recording, same code path as live
``folder:DIR``                         MVTec 3D-AD style rgb/ + xyz/ files (`FolderSource`)
``synthetic[:CATEGORY]``               synthetic scene generator as a camera
=====================================  =================================================

Any spec may end in ``?key=value&...`` to override fields of the matching options model
(`edge.sources.options`), e.g. ``synthetic:bracket?defect_rate=0.5&seed=3`` or
``realsense?fps=15&decimation=2``; ``average_frames=N`` averages N frames of a still part,
once per stop (``average_mode=continuous``: every N frames; `edge.sources.averaging`). A bare
path is accepted too: a ``.db3``/``.bag`` file is a recording, a directory is a folder replay.

pyrealsense2 is imported only when a RealSense source is opened, so every other source works
without it (and nothing here imports torch).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from edge.sources.base import (
    FrameError,
    FrameSource,
    FrameTimeout,
    SourceError,
    SourceIdle,
    SourceStats,
)
from edge.sources.options import (
    FilterOptions,
    FolderOptions,
    RealSenseOptions,
    SourceOptions,
    SyntheticOptions,
    apply_overrides,
)

__all__ = [
    "SOURCE_KINDS",
    "FilterOptions",
    "FolderOptions",
    "FrameError",
    "FrameSource",
    "FrameTimeout",
    "RealSenseOptions",
    "SourceError",
    "SourceIdle",
    "SourceOptions",
    "SourceStats",
    "SyntheticOptions",
    "open_source",
    "parse_spec",
]

SOURCE_KINDS = ("realsense", "file", "folder", "synthetic")
_USAGE = "use realsense[:SERIAL], file:PATH.db3, folder:DIR or synthetic[:CATEGORY]"


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split a camera spec into ``(kind, argument, overrides)``.

    ``"synthetic:puck?seed=2"`` → ``("synthetic", "puck", {"seed": "2"})``; a bare recording
    path or directory becomes ``file``/``folder``. Raises `SourceError` for an unknown kind.
    """
    text = spec.strip()
    if not text:
        raise SourceError(f"empty camera spec; {_USAGE}")
    head, _, query = text.partition("?")
    overrides = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    kind, sep, arg = head.partition(":")
    if kind in SOURCE_KINDS:
        if kind in ("file", "folder") and not arg:
            raise SourceError(f"camera spec {spec!r}: {kind} needs a path, e.g. {kind}:/data/x")
        return kind, arg, overrides
    path = Path(head)
    if path.suffix.lower() in (".db3", ".bag"):
        return "file", head, overrides
    if path.is_dir():
        return "folder", head, overrides
    raise SourceError(f"unknown camera spec {spec!r}; {_USAGE}")


def _with(model, overrides: dict[str, str], spec: str):
    if not overrides:
        return model
    try:
        return apply_overrides(model, overrides)
    except ValueError as exc:
        raise SourceError(f"camera spec {spec!r}: {exc}") from None


def open_source(spec: str, config: SourceOptions | None = None) -> FrameSource:
    """Build (not yet open) the frame source a spec names; use it as a context manager.

    ``config`` supplies the settings (a `SourceOptions`, or the station config's camera
    section, which extends it); ``?key=value`` overrides in the spec win over it.
    Raises `SourceError` for a bad spec or option (opening may raise more, e.g. no camera).
    """
    options = config if config is not None else SourceOptions()
    kind, arg, overrides = parse_spec(spec)
    limit = options.max_consecutive_errors
    if kind in ("realsense", "file"):
        from edge.sources.realsense import RealSenseSource

        rs_opts = options.realsense
        if kind == "realsense" and arg:
            rs_opts = rs_opts.model_copy(update={"serial": arg})
        rs_opts = _with(rs_opts, overrides, spec)
        path = Path(arg).expanduser() if kind == "file" else None
        camera = RealSenseSource(path, rs_opts, max_consecutive_errors=limit)
        if rs_opts.average_frames > 1:
            from edge.sources.averaging import AveragingSource

            return AveragingSource(
                camera, rs_opts.average_frames, rs_opts.motion_threshold,
                rs_opts.motion_fraction, max_consecutive_errors=limit,
                mode=rs_opts.average_mode,
            )
        return camera
    if kind == "folder":
        from edge.sources.folder import FolderSource

        return FolderSource(
            Path(arg).expanduser(),
            _with(options.folder, overrides, spec),
            max_consecutive_errors=limit,
        )
    from edge.sources.synthetic import SyntheticSource

    syn_opts = options.synthetic
    if arg:
        syn_opts = syn_opts.model_copy(update={"category": arg})
    return SyntheticSource(_with(syn_opts, overrides, spec), max_consecutive_errors=limit)
