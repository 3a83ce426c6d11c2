"""Validated settings for every frame source (pydantic), plus the query-string overrides.

A source spec such as ``synthetic:puck?defect_rate=0.5`` or ``realsense?fps=15&decimation=2``
picks a source and overrides individual fields of these models; a config file supplies the
rest. Unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "FilterOptions",
    "FolderOptions",
    "RealSenseOptions",
    "SourceOptions",
    "SyntheticOptions",
    "Z16_MAX",
    "apply_overrides",
    "check_depth_units",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterOptions(_Strict):
    """RealSense post-processing filters, applied in the upstream order: decimation →
    depth-to-disparity → spatial → temporal → disparity-to-depth → hole filling.

    The disparity transforms wrap the spatial/temporal filters automatically (Intel recommends
    edge-preserving filtering in the disparity domain). Decimation lowers the depth resolution;
    depth is aligned to colour afterwards, so frames keep the colour resolution.
    """

    decimation: int = Field(1, ge=1, le=8, description="1 = off; 2..8 = magnitude")
    spatial: bool = False
    spatial_alpha: float = Field(0.5, gt=0.0, le=1.0)
    spatial_delta: float = Field(20.0, ge=1.0, le=50.0)
    temporal: bool = False
    temporal_alpha: float = Field(0.4, gt=0.0, le=1.0)
    temporal_delta: float = Field(20.0, ge=1.0, le=100.0)
    hole_filling: int = Field(
        -1,
        ge=-1,
        le=2,
        description="-1 = off; 0 fill from left, 1 farthest from around, 2 nearest from around",
    )

    @property
    def any_enabled(self) -> bool:
        """Whether any filter would run."""
        return self.decimation > 1 or self.spatial or self.temporal or self.hole_filling >= 0


class RealSenseOptions(_Strict):
    """Live camera / recording playback settings."""

    serial: str | None = Field(None, description="camera serial number; None = the only one")
    width: int = Field(640, gt=0)
    height: int = Field(480, gt=0)
    fps: int = Field(30, gt=0)
    color_format: Literal["rgb8", "bgr8"] = "rgb8"
    color_width: int | None = Field(
        None, gt=0, description="live camera: colour stream width; None = `width` (e.g. depth "
        "1280×720 with colour 1920×1080)"
    )
    color_height: int | None = Field(None, gt=0, description="colour stream height; None = `height`")
    max_sync_skew_ms: float | None = Field(
        None,
        gt=0.0,
        description="depth and colour of one pair may be this far apart; None = half a frame "
        "period (librealsense's own matching rule, right for moving conveyors); raise it for "
        "parts that stand still, or recordings made at low frame rates",
    )
    filters: FilterOptions = Field(default_factory=FilterOptions)
    depth_units: float | None = Field(
        None,
        gt=0.0,
        le=0.01,
        description="live camera: metres per Z16 depth step (rs.option.depth_units), e.g. "
        "0.0001 for 0.1 mm steps on a D435; None = the camera's default (D435 1 mm, D405 "
        "0.1 mm). Z16 has 65535 steps, so the unit must cover max_depth_m",
    )
    max_depth_m: float = Field(
        2.0, gt=0.0, description="farthest depth the station must measure (support plane plus "
        "margin); a finer depth_units than max_depth_m / 65535 is refused",
    )
    average_frames: int = Field(
        1,
        ge=1,
        le=64,
        description="deliver the mean of this many consecutive frames of a part that stands "
        "still (depth noise falls by ~√N; frames are never averaged across motion, see "
        "edge.sources.averaging); 1 = off",
    )
    average_mode: Literal["per-stop", "continuous"] = Field(
        "per-stop",
        description="averaging: 'per-stop' delivers one mean per stop of a part (then nothing "
        "until motion is seen: one verdict per part at a stop-and-go station); 'continuous' "
        "one mean per average_frames still frames (a part standing k frames gives k // N)",
    )
    motion_threshold: float = Field(
        5.0, gt=0.0, description="averaging: a pixel changed when its colour or depth moved "
        "by more than this many noise σ (measured from the frames)"
    )
    motion_fraction: float = Field(
        0.005, gt=0.0, le=1.0, description="averaging: the part moved when more than this "
        "share of pixels changed; the window then restarts"
    )
    acquisition_check: Literal["refuse", "warn", "off"] = Field(
        "refuse", description="the bundle records the filters and average_frames its training "
        "data was acquired with (edge.sources.acquisition): settings left unset here are "
        "taken from it; one set differently refuses to start (refuse), is logged (warn) or "
        "not checked at all (off: nothing is taken from the bundle either)"
    )
    wait_timeout_s: float = Field(
        5.0, gt=0.0, description="no frame for this long = camera lost; reconnect"
    )
    reconnect_initial_s: float = Field(0.5, gt=0.0, description="first reconnect back-off")
    reconnect_max_s: float = Field(10.0, gt=0.0, description="back-off ceiling (doubles up to it)")
    give_up_after_s: float | None = Field(
        None, gt=0.0, description="raise after this long without a camera; None = keep trying"
    )
    record_to: Path | None = Field(
        None, description="live camera only: also record the session to this .db3 file"
    )

    @model_validator(mode="after")
    def _check_depth_units(self) -> RealSenseOptions:
        if self.depth_units is not None:
            check_depth_units(self.depth_units, self.max_depth_m)
        return self


# Z16: raw depth is an unsigned 16-bit count of depth units (0 = no depth).
Z16_MAX = 65535


def check_depth_units(units: float, max_depth_m: float) -> None:
    """Raise ValueError when ``units`` (m per Z16 step) cannot hold depths up to ``max_depth_m``."""
    if units * Z16_MAX < max_depth_m:
        raise ValueError(
            f"depth_units {units:g} m reaches only {units * Z16_MAX:.3f} m (Z16: {Z16_MAX} "
            f"steps) but the station measures up to max_depth_m {max_depth_m:g} m: use a "
            f"unit of at least {max_depth_m / Z16_MAX:.2g} m or lower max_depth_m"
        )


class SyntheticOptions(_Strict):
    """The synthetic RGB-D camera (edge.datasets.synthetic.SceneGenerator)."""

    category: str = "puck"
    defect_rate: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = 0
    size: int = Field(128, ge=16)
    fps: float | None = Field(
        None, gt=0.0, description="pace frames like a camera; None = flat out"
    )
    max_frames: int | None = Field(None, ge=0, description="end after N frames; None = endless")


class FolderOptions(_Strict):
    """Replay of MVTec 3D-AD style rgb/ + xyz/ folders."""

    split: str | None = Field(None, description="only this split (train/validation/test)")
    fps: float | None = Field(
        None, gt=0.0, description="pace frames like a camera; None = flat out"
    )
    loop: bool = Field(False, description="start over at the end instead of ending")


class SourceOptions(_Strict):
    """Settings for all sources; `open_source` uses the part that matches the spec."""

    realsense: RealSenseOptions = Field(default_factory=RealSenseOptions)
    synthetic: SyntheticOptions = Field(default_factory=SyntheticOptions)
    folder: FolderOptions = Field(default_factory=FolderOptions)
    max_consecutive_errors: int = Field(
        50, ge=1, description="this many unusable frames in a row is a fatal SourceError"
    )


def apply_overrides(model: _Strict, overrides: dict[str, str]) -> Any:
    """Return a copy of ``model`` with string ``overrides`` validated into its fields.

    Keys may name a field of the model or of a nested model (``decimation`` reaches
    ``RealSenseOptions.filters.decimation``). Raises ``ValueError`` naming unknown keys and the
    valid ones, or the pydantic validation problem.
    """
    data = model.model_dump()
    nested = {
        name: info
        for name, info in type(model).model_fields.items()
        if isinstance(getattr(model, name), BaseModel)
    }
    unknown = []
    for key, value in overrides.items():
        if key in type(model).model_fields and key not in nested:
            data[key] = value
            continue
        for name in nested:
            sub = getattr(model, name)
            if key in type(sub).model_fields:
                data[name][key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        valid = sorted(
            [k for k in type(model).model_fields if k not in nested]
            + [k for n in nested for k in type(getattr(model, n)).model_fields]
        )
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(problems) from None
