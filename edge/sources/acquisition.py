"""The station's depth acquisition chain as one record: data set → run → bundle → station.

A model learns the depth its training data had. Depth that passed librealsense's spatial,
temporal or hole-filling filters, or the mean of N still frames (`edge.sources.averaging`),
is smoother, has fewer holes and other rims than raw depth, so a station must deliver the
depth the same way the training data was acquired. `Acquisition` says how:

* ``trd-edge record`` writes it beside the data (``<category>/calibration/acquisition.json``)
  from what the source actually applied: a RealSense camera or recording its filters and
  ``average_frames``; folder replays and the synthetic camera filter nothing (``source`` says
  which, ``filters`` are all off);
* ``trd-edge synth`` writes it for the sensor model (``--filters``, ``--average-frames``);
* ``trd-edge train`` reads it (`read_acquisition`), records it in run.json, and export copies
  it into the bundle manifest (optional section ``acquisition``);
* the station (`resolve_station_chain`) adopts the bundle's chain where its configuration
  leaves a setting unset and refuses to start where it sets one differently.

Data written before this record existed maps to a well-defined record: a ``sensor.json``
(``trd-edge synth --sensor``) gives no filters and its ``average_frames``; nothing at all gives
no filters, one frame (``origin`` says which).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.sources.options import FilterOptions, RealSenseOptions

__all__ = [
    "ACQUISITION_FILE",
    "CHECK_MODES",
    "Acquisition",
    "AcquisitionMismatch",
    "ChainDecision",
    "chain_settings",
    "explicit_settings",
    "filter_tag",
    "parse_filter_spec",
    "read_acquisition",
    "resolve_station_chain",
    "source_acquisition",
    "station_options",
    "write_acquisition",
]

log = logging.getLogger(__name__)

ACQUISITION_FILE = "acquisition.json"
ACQUISITION_SCHEMA = "1.0"
CHECK_MODES = ("refuse", "warn", "off")
# The settings a station must repeat: every filter option and the frames averaged.
CHAIN_FIELDS = (*FilterOptions.model_fields, "average_frames")


class Acquisition(BaseModel):
    """How the depth of a data set (or a bundle's training data) was acquired.

    ``filters`` and ``average_frames`` are the chain the station must repeat; the other
    fields describe the data and are not checked.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: str = ACQUISITION_SCHEMA
    source: str = Field(
        "unknown", description="what delivered the depth: realsense, file (a RealSense "
        "recording), synthetic, folder, sensor-model (trd-edge synth --sensor), unknown"
    )
    filters: FilterOptions = Field(default_factory=FilterOptions)
    average_frames: int = Field(1, ge=1, le=64)
    depth_units_m: float | None = Field(
        None, gt=0, description="metres per Z16 step of the depth (information, not checked: "
        "a recording keeps its unit, and calibrate measures the noise it gives)"
    )
    frames_per_part: int | None = Field(
        None, ge=1, description="trd-edge synth: still frames of each part passed through the "
        "filters (the temporal filter's history); the last, or their mean, is the sample"
    )
    origin: Literal["recorded", "sensor.json", "default"] = Field(
        "recorded", description="recorded = written with the data; sensor.json / default = "
        "mapped from data written before this record existed"
    )
    note: str = ""

    @property
    def filtering(self) -> bool:
        """Whether the chain does anything (any filter, or averaging)."""
        return self.filters.any_enabled or self.average_frames > 1

    def describe(self) -> str:
        """One line: the chain in the station's order."""
        return describe_chain(chain_settings(self.filters, self.average_frames))


def chain_settings(filters: FilterOptions, average_frames: int) -> dict[str, Any]:
    """The settings that change the depth, keyed by their config names: a switched-off
    filter's parameters are left out (they do nothing)."""
    out: dict[str, Any] = {"decimation": filters.decimation, "spatial": filters.spatial}
    if filters.spatial:
        out |= {"spatial_alpha": filters.spatial_alpha, "spatial_delta": filters.spatial_delta}
    out["temporal"] = filters.temporal
    if filters.temporal:
        out |= {"temporal_alpha": filters.temporal_alpha, "temporal_delta": filters.temporal_delta}
    out["hole_filling"] = filters.hole_filling
    out["average_frames"] = average_frames
    return out


def describe_chain(settings: dict[str, Any]) -> str:
    """``spatial(0.5, 20) → temporal(0.4, 20) → hole_filling 1 → mean of 8 frames`` or
    ``no filters, one frame``."""
    parts = []
    if settings.get("decimation", 1) > 1:
        parts.append(f"decimation {settings['decimation']}")
    if settings.get("spatial"):
        parts.append(f"spatial({settings['spatial_alpha']:g}, {settings['spatial_delta']:g})")
    if settings.get("temporal"):
        parts.append(f"temporal({settings['temporal_alpha']:g}, {settings['temporal_delta']:g})")
    if settings.get("hole_filling", -1) >= 0:
        parts.append(f"hole_filling {settings['hole_filling']}")
    if settings.get("average_frames", 1) > 1:
        parts.append(f"mean of {settings['average_frames']} frames")
    return " → ".join(parts) if parts else "no filters, one frame"


def write_acquisition(category_dir: str | Path, acquisition: Acquisition) -> Path:
    """Write ``<category_dir>/calibration/acquisition.json``; returns its path."""
    calib = Path(category_dir) / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    path = calib / ACQUISITION_FILE
    path.write_text(acquisition.model_dump_json(indent=2) + "\n")
    return path


def read_acquisition(category_dir: str | Path) -> Acquisition:
    """The acquisition record of a data set's category folder.

    ``calibration/acquisition.json`` when present; else mapped from ``calibration/sensor.json``
    (no filters, its ``average_frames``: the sensor model before filters existed), else no
    filters and one frame (``origin="default"``). Raises ValueError for a file that is not a
    valid record, naming the file and the fix.
    """
    calib = Path(category_dir) / "calibration"
    path = calib / ACQUISITION_FILE
    if path.is_file():
        try:
            return Acquisition.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise ValueError(
                f"{path} is not a valid acquisition record ({exc.errors()[0]['msg']} at "
                f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}); write it again with "
                "`trd-edge record` / `trd-edge synth` or delete it"
            ) from None
    sensor = calib / "sensor.json"
    if sensor.is_file():
        info = json.loads(sensor.read_text())
        spec = info.get("sensor") or {}
        return Acquisition(
            source="sensor-model", average_frames=int(info.get("average_frames", 1)),
            depth_units_m=spec.get("depth_unit_m"), origin="sensor.json",
            note="written before acquisition.json existed: the sensor model without filters",
        )
    return Acquisition(origin="default", note="the data set has no acquisition record")


# ---------------------------------------------------------------------------- the station
class AcquisitionMismatch(ValueError):
    """The station's configuration sets the depth chain differently from the bundle's data."""


@dataclass
class ChainDecision:
    """What `resolve_station_chain` decided: the options to open the camera with, and the
    lines to log."""

    realsense: RealSenseOptions
    adopted: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)


def explicit_settings(options: RealSenseOptions, overrides: dict[str, str]) -> set[str]:
    """The chain settings a station's configuration sets itself: fields set in the config
    (pydantic ``model_fields_set``, file, environment or flags) and ``?key=value`` overrides
    of the camera spec."""
    names = {k for k in overrides if k in CHAIN_FIELDS}
    if "average_frames" in options.model_fields_set:
        names.add("average_frames")
    if "filters" in options.model_fields_set:
        names |= set(options.filters.model_fields_set)
    return names


def resolve_station_chain(
    options: RealSenseOptions, overrides: dict[str, str], bundle_chain: Acquisition | None,
    mode: str = "refuse", what: str = "the bundle",
) -> ChainDecision:
    """Decide the depth chain a RealSense station (camera or recording) runs with.

    ``options`` are the station's RealSense options before the camera spec's ``overrides``;
    ``bundle_chain`` the bundle's record (None: an older bundle, nothing is checked). Settings
    the configuration leaves unset are taken from the bundle (logged in one line); a setting it
    sets to another value than the bundle's raises `AcquisitionMismatch` naming each one, the
    bundle's and the station's value and the fix, unless ``mode`` is ``warn`` (logged, the
    station's value kept) or ``off`` (no check, nothing adopted).
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"acquisition_check {mode!r}: choose one of {', '.join(CHECK_MODES)}")
    if bundle_chain is None or mode == "off":
        return ChainDecision(realsense=options)
    effective = options
    if overrides:
        from edge.sources.options import apply_overrides

        try:
            effective = apply_overrides(options, overrides)
        except ValueError:  # a bad spec: open_source says what is wrong with it
            return ChainDecision(realsense=options)
    explicit = explicit_settings(options, overrides)
    wanted = chain_settings(bundle_chain.filters, bundle_chain.average_frames)
    station = chain_settings(effective.filters, effective.average_frames)
    current = effective.filters.model_dump() | {"average_frames": effective.average_frames}
    # settings the station sets itself and that change the depth differently
    differ = []
    for name in CHAIN_FIELDS:
        if name not in explicit:
            continue
        mine, theirs = station.get(name), wanted.get(name)
        if mine is None or theirs is None:  # a parameter of a filter that one side has off
            continue
        if mine != theirs:
            differ.append((name, theirs, mine))
    # (a parameter of a filter the bundle has off does nothing: not adopted)
    adopted = {n: v for n, v in wanted.items() if n not in explicit and v != current[n]}
    filters = effective.filters.model_copy(
        update={k: v for k, v in adopted.items() if k != "average_frames"})
    update: dict[str, Any] = {"filters": filters}
    if "average_frames" in adopted:
        update["average_frames"] = adopted["average_frames"]
    lines = []
    if differ:
        listing = "; ".join(f"{n}: {what} {_fmt(t)}, station {_fmt(m)}" for n, t, m in differ)
        text = (
            f"the station's depth chain differs from the one {what} was trained on ({listing}). "
            f"{what.capitalize()}'s data: {bundle_chain.describe()}. Fix: remove or change "
            "these settings in camera.realsense (or the camera spec's ?key=value) so the "
            "station delivers depth as the training data had it, or record the data again "
            "with the station's settings and retrain; camera.realsense.acquisition_check: "
            "warn runs anyway (scores are then not comparable)"
        )
        if mode == "refuse":
            raise AcquisitionMismatch(text)
        lines.append("WARNING (acquisition_check: warn): " + text)
        # warn: keep the station's explicit values, adopt the rest
    if adopted:
        lines.append(
            f"depth chain from {what}: {bundle_chain.describe()} (adopted "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in adopted.items())
            + "; set them in camera.realsense to choose yourself)"
        )
    return ChainDecision(
        realsense=options.model_copy(update=update), adopted=adopted, log_lines=lines
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------- --filters
# What a filter named without values switches on (librealsense's defaults: hole filling
# "farthest from around", spatial/temporal alpha and delta as in FilterOptions).
_DEFAULT_HOLE_FILLING = 1


def parse_filter_spec(text: str) -> FilterOptions:
    """``spatial,temporal`` / ``spatial=0.5:20+temporal+hole_filling=1`` → `FilterOptions`.

    Items are separated by ``,`` or ``+``: ``spatial[=ALPHA:DELTA]``,
    ``temporal[=ALPHA:DELTA]``, ``hole_filling[=MODE]`` (MODE 0 fill from left, 1 farthest
    from around (default), 2 nearest from around), ``decimation=N``, or any `FilterOptions`
    field as ``name=value`` (the camera spec's ``?key=value`` names, e.g. ``spatial_alpha=0.6``).
    ``none`` or an empty text is no filter. Raises ValueError naming the bad item.
    """
    data: dict[str, Any] = {}
    items = [t.strip() for t in text.replace("+", ",").split(",") if t.strip()]
    for item in items:
        if item == "none":
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            if name in ("spatial", "temporal"):
                data[name] = True
                if sep:
                    alpha, _, delta = value.partition(":")
                    data[f"{name}_alpha"] = float(alpha)
                    if delta:
                        data[f"{name}_delta"] = float(delta)
            elif name == "hole_filling":
                data[name] = int(value) if sep else _DEFAULT_HOLE_FILLING
            elif name in FilterOptions.model_fields and sep:
                data[name] = value
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"filter {item!r}: use spatial[=ALPHA:DELTA], temporal[=ALPHA:DELTA], "
                "hole_filling[=0|1|2], decimation=N or FIELD=VALUE with a field of "
                f"{', '.join(FilterOptions.model_fields)}"
            ) from None
    try:
        return FilterOptions.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"filters {text!r}: {'.'.join(map(str, err['loc']))}: {err['msg']}") \
            from None


def filter_tag(filters: FilterOptions) -> str:
    """A short name of the filters for file and row names (``spatial+temporal``; parameters
    only when they differ from the defaults), ``""`` for none."""
    default = FilterOptions()
    parts = []
    if filters.decimation > 1:
        parts.append(f"decimation={filters.decimation}")
    for name in ("spatial", "temporal"):
        if getattr(filters, name):
            a, d = getattr(filters, f"{name}_alpha"), getattr(filters, f"{name}_delta")
            same = (a, d) == (getattr(default, f"{name}_alpha"), getattr(default, f"{name}_delta"))
            parts.append(name if same else f"{name}={a:g}:{d:g}")
    if filters.hole_filling >= 0:
        parts.append("hole_filling" if filters.hole_filling == _DEFAULT_HOLE_FILLING
                     else f"hole_filling={filters.hole_filling}")
    return "+".join(parts)


def station_options(options: Any, spec: str, chain: Acquisition | None,
                    what: str = "the bundle") -> Any:
    """The source options a station opens ``spec`` with, given its bundle's chain.

    ``options`` is a `SourceOptions` (or the station config's camera section). A RealSense
    camera or recording (``realsense``, ``file:``) gets `resolve_station_chain`'s decision
    (adopt unset settings, refuse differing ones: `AcquisitionMismatch`, a ValueError);
    other sources deliver their frames as they are: nothing is checked, one line is logged
    when the bundle's data was filtered or averaged. Returns ``options`` or an updated copy.
    """
    from edge.sources import parse_spec

    kind, _, overrides = parse_spec(spec)
    if chain is None:
        return options
    if kind not in ("realsense", "file"):
        if chain.filtering:
            log.info("%s's training data was acquired with %s; a %s source is not a RealSense "
                     "camera, so its frames are used as they are (not checked)", what,
                     chain.describe(), kind)
        return options
    rs_opts = options.realsense
    mode = overrides.get("acquisition_check", rs_opts.acquisition_check)
    decision = resolve_station_chain(rs_opts, overrides, chain, mode, what)
    for line in decision.log_lines:
        (log.warning if line.startswith("WARNING") else log.info)("%s", line)
    if decision.realsense is rs_opts:
        return options
    return options.model_copy(update={"realsense": decision.realsense})


def source_acquisition(spec: str, options: Any, source: Any = None) -> Acquisition:
    """What a source opened from ``spec`` with ``options`` (a `SourceOptions`) applies to the
    depth: a RealSense camera or recording its filters and ``average_frames`` (with the
    ``?key=value`` overrides; the depth unit read from ``source`` once it has been opened);
    folder replays and the synthetic camera nothing (the frames as they are delivered)."""
    from edge.sources import parse_spec

    kind, _, overrides = parse_spec(spec)
    if kind not in ("realsense", "file"):
        return Acquisition(source=kind, note=f"a {kind} source: no RealSense filters, one "
                           "frame per sample, as the source delivered it")
    rs_opts = options.realsense
    if overrides:
        from edge.sources.options import apply_overrides

        rs_opts = apply_overrides(rs_opts, overrides)
    inner = getattr(source, "inner", source)  # an AveragingSource wraps the camera
    units = getattr(inner, "depth_scale", None)
    return Acquisition(
        source=kind, filters=rs_opts.filters, average_frames=rs_opts.average_frames,
        depth_units_m=float(units) if units else None,
        note="trd-edge record: the filters and averaging the source applied",
    )
