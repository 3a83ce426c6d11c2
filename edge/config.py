"""Station configuration: one pydantic tree, loaded from YAML/TOML, env vars and CLI flags.

Precedence, lowest first: defaults < file < environment < CLI overrides.

- Environment: ``TRD_EDGE_<SECTION>__<FIELD>`` (nested with more ``__``, e.g.
  ``TRD_EDGE_MQTT__TLS__CA``), ``TRD_EDGE_STATION`` for top-level fields, and the short forms
  ``TRD_EDGE_MQTT_USERNAME`` / ``TRD_EDGE_MQTT_PASSWORD`` / ``TRD_EDGE_UI_TOKEN``.
- Overrides: a dict with dotted keys (``{"mqtt.url": ..., "station": ...}``); ``None`` values
  are ignored so argparse defaults can be passed straight through (see `cli_overrides`).

Secrets: the password is a `SecretStr`; credentials written into ``mqtt.url``
(``mqtt://user:pass@host``) are moved into ``mqtt.username`` / ``mqtt.password`` before
validation, so no string form of the config, its errors or the URL carries the password.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.sources.options import SourceOptions
from edge.ui.config import UiConfig

ENV_PREFIX = "TRD_EDGE_"
SOURCE_KINDS = ("realsense", "file", "folder", "synthetic")


class ConfigError(ValueError):
    """A configuration could not be loaded; `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} configuration problem(s):\n  " + "\n  ".join(self.problems)
        )


# --------------------------------------------------------------------------- MQTT URLs


@dataclass(frozen=True)
class MqttEndpoint:
    """A parsed broker URL. `str()` and `repr()` never show the password."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None

    @property
    def url(self) -> str:
        """The URL without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        user = f", username={self.username!r}" if self.username else ""
        pw = ", password='**********'" if self.password else ""
        return f"MqttEndpoint({self.url!r}{user}{pw})"


_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@(?P<rest>.*)$"
)


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Split ``scheme://user:pass@host...`` into (url without credentials, user, password)."""
    m = _USERINFO.match(url.strip())
    if not m:
        return url.strip(), None, None
    user, sep, password = m["userinfo"].partition(":")
    return (
        m["scheme"] + m["rest"],
        unquote(user) or None,
        unquote(password) if sep else None,
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to log)."""
    m = _USERINFO.match(url.strip())
    if not m:
        return url
    user, sep, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}{':***' if sep else ''}@{m['rest']}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Parse ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...`` (default ports 1883 / 8883).

    Raises ValueError naming the problem (scheme, host, port, path) with the password redacted.
    """
    shown = redact_url(url)
    bare, user, password = split_url_credentials(url)
    try:
        parts = urlsplit(bare)
    except ValueError as exc:
        raise ValueError(f"MQTT URL {shown!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        hint = "mqtt://HOST:1883 or mqtts://HOST:8883"
        if not scheme:
            raise ValueError(f"MQTT URL {shown!r} has no scheme; write {hint}")
        raise ValueError(f"MQTT URL {shown!r}: unsupported scheme {scheme!r}; use {hint}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {shown!r} has no host; write {scheme}://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"MQTT URL {shown!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"MQTT URL {shown!r}: the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"MQTT URL {shown!r}: a path or query is not part of a broker URL; "
            "set the topic prefix with mqtt.topic_prefix"
        )
    return MqttEndpoint(
        host=parts.hostname,
        port=port or (8883 if scheme == "mqtts" else 1883),
        tls=scheme == "mqtts",
        username=user,
        password=SecretStr(password) if password is not None else None,
    )


# --------------------------------------------------------------------------- the model tree


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TlsConfig(_Section):
    """TLS towards the broker (used with ``mqtts://`` URLs)."""

    ca: Path | None = Field(None, description="CA bundle (PEM); None = the system CAs")
    cert: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key: Path | None = Field(None, description="private key (PEM) of the client certificate")
    insecure: bool = Field(
        False, description="skip the broker host-name check (testing only, never in production)"
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both tls.cert and tls.key for a client certificate, or neither")
        return self

    @property
    def configured(self) -> bool:
        """Whether any TLS setting differs from the defaults."""
        return any(v is not None for v in (self.ca, self.cert, self.key)) or self.insecure


class MqttConfig(_Section):
    """Broker connection and topics."""

    url: str | None = Field(
        None,
        description="mqtt://[user:pass@]host:port or mqtts://...; None = no broker given (the "
        "demo starts a local mosquitto if installed, else prints verdicts to the console)",
    )
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version")
    topic_prefix: str = Field(
        "trd/{station}/",
        description="prefix of every topic; {station} is replaced by the station id; a "
        "trailing '/' is added when missing",
    )
    keepalive: int = Field(30, ge=5, le=65535, description="keep-alive interval in seconds")
    client_id: str = Field(
        "trd-edge-{station}", description="MQTT client id; {station} is replaced"
    )
    username: str | None = Field(None, description="broker user (env TRD_EDGE_MQTT_USERNAME)")
    password: SecretStr | None = Field(
        None, description="broker password (env TRD_EDGE_MQTT_PASSWORD); never logged"
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings")
    reconnect_min_s: float = Field(1.0, gt=0, description="first reconnect delay (doubles)")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")
    inflight_window: int = Field(
        100, ge=1, le=65535, description="verdicts sent but not yet acknowledged, at most"
    )
    tls_check_after_failures: int = Field(
        3,
        ge=0,
        description="with mqtts://, repeat the TLS pre-flight handshake (which names a wrong "
        "CA, host name or expired certificate) after this many failed connects; 0 = only at "
        "start-up",
    )

    @model_validator(mode="before")
    @classmethod
    def _move_url_credentials(cls, data: Any) -> Any:
        # Before field validation, so that no error message ever echoes the password.
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        bare, user, password = split_url_credentials(data["url"])
        if user is None and password is None:
            return data
        data = dict(data)
        data["url"] = bare
        for key, value in (("username", user), ("password", password)):
            if value is None:
                continue
            given = data.get(key)
            if isinstance(given, SecretStr):
                given = given.get_secret_value()
            if given is not None and given != value:
                raise ValueError(
                    f"mqtt.url and mqtt.{key} disagree; give the credentials in one place only"
                )
            data[key] = value
        return data

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        parse_mqtt_url(value)
        return value.strip()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_str(cls, value: Any) -> Any:
        aliases = {"5": "5", "5.0": "5", "v5": "5", "311": "3.1.1", "3.1.1": "3.1.1"}
        text = str(value).strip().lower()
        return aliases.get(text, text)

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\0"):
            raise ValueError("topic_prefix must not contain the wildcards '+' or '#'")
        if value.startswith("/"):
            raise ValueError("topic_prefix must not start with '/' (it makes an empty level)")
        _check_placeholders(value)
        return value if value.endswith("/") else value + "/"

    @field_validator("client_id")
    @classmethod
    def _valid_client_id(cls, value: str) -> str:
        if not value:
            raise ValueError("client_id must not be empty (a persistent identity is needed)")
        _check_placeholders(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.url and self.tls.configured and not self.endpoint().tls:
            raise ValueError(
                "tls settings are given but mqtt.url is plain mqtt://; use mqtts:// for TLS"
            )
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username (mqtt.username or mqtt://user:pass@)")
        return self

    def endpoint(self) -> MqttEndpoint:
        """The broker endpoint with credentials; raises ValueError when no URL is set."""
        if not self.url:
            raise ValueError("no broker URL: set mqtt.url or pass --mqtt mqtt://HOST:PORT")
        ep = parse_mqtt_url(self.url)
        return MqttEndpoint(ep.host, ep.port, ep.tls, self.username, self.password)


def _check_placeholders(template: str) -> None:
    try:
        template.format(station="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"only the {{station}} placeholder is supported ({exc})") from None


class OutboxConfig(_Section):
    """The durable on-disk outbox (SQLite) that holds verdicts until the broker acknowledges."""

    path: Path = Field(
        Path("~/.local/state/trd-edge/{station}/outbox.sqlite3"),
        description="SQLite file; {station} is replaced, ~ is expanded",
    )
    max_messages: int = Field(100_000, ge=1, description="bound on messages held")
    when_full: Literal["drop_oldest"] = Field(
        "drop_oldest",
        description="policy when full: the oldest waiting message is deleted and counted in "
        "the persistent dropped_total (newest verdicts matter most to a running line)",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite fsync level: FULL survives power loss (Jetson on a line); NORMAL "
        "survives a process crash only but writes faster",
    )


class HeatmapConfig(_Section):
    """Optional anomaly heatmap images on `<prefix>heatmap` (QoS 0, not stored)."""

    enabled: bool = Field(False, description="publish heatmaps")
    max_rate_hz: float = Field(1.0, gt=0, le=100, description="at most this many per second")
    format: Literal["jpeg", "png"] = Field("jpeg", description="image encoding")
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality")


class PublishConfig(_Section):
    """What is published besides verdicts and status."""

    heatmap: HeatmapConfig = Field(default_factory=HeatmapConfig, description="heatmaps")
    metrics_period_s: float = Field(
        10.0, ge=0, description="period of `<prefix>metrics` messages; 0 = off"
    )
    verdict_expiry_s: int | None = Field(
        None,
        ge=1,
        description="MQTT 5 message expiry of verdicts; older ones are dropped from the "
        "outbox and counted; None = never expire",
    )


class CameraConfig(SourceOptions):
    """Frame source and its settings (see `edge.sources.options` for every option)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    source: str = Field(
        "synthetic",
        description="realsense | file:PATH.db3|.bag | folder:DIR | synthetic[:CATEGORY], "
        "optionally with ?key=value overrides",
    )

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str) -> str:
        spec = value.strip()
        head = spec.split("?", 1)[0]
        kind, _, arg = head.partition(":")
        if kind not in SOURCE_KINDS:
            raise ValueError(
                f"unknown camera source {kind!r}; use realsense, file:PATH.db3, folder:DIR "
                "or synthetic"
            )
        if kind in ("file", "folder") and not arg:
            raise ValueError(f"camera source {kind}: needs a path, e.g. {kind}:/data/x")
        if kind == "file" and Path(arg).suffix.lower() not in (".db3", ".bag"):
            raise ValueError(f"camera source file:{arg} must be a .db3 or .bag recording")
        return spec


class HealthConfig(_Section):
    """When the station reports itself `degraded` (see docs/mqtt-health.md)."""

    broker_away_s: float = Field(
        60.0, gt=0, description="degraded when the broker has been unreachable this long"
    )
    outbox_fraction: float = Field(
        0.5, gt=0, le=1, description="degraded when the outbox is fuller than this fraction"
    )
    loss_window_s: float = Field(
        900.0,
        gt=0,
        description="degraded for this long after a verdict was dropped (outbox full) or a "
        "camera frame was unusable; refused verdicts keep it degraded while they are kept",
    )


class RuntimeConfig(_Section):
    """The run loop."""

    backend: Literal["auto", "tensorrt", "onnxruntime"] = Field(
        "auto", description="inference backend; auto = TensorRT when available"
    )
    precision: Literal["fp32", "fp16", "int8"] | None = Field(
        None,
        description="model precision; None = the backend's default (TensorRT fp16, onnxruntime "
        "fp32); int8 needs a bundle exported with --int8 and a station calibrated with it "
        "(docs/int8.md)",
    )
    capture_queue: int = Field(2, ge=1, le=256, description="frames waiting for preprocessing")
    inference_queue: int = Field(2, ge=1, le=256, description="frames waiting for the model")
    publish_queue: int = Field(32, ge=1, le=4096, description="verdicts waiting to be stored")
    overflow_policy: Literal["drop_oldest"] = Field(
        "drop_oldest",
        description="when inference falls behind, the oldest queued frame is dropped and "
        "counted (the newest frame is the one the line needs)",
    )


class StationConfig(_Section):
    """Everything a station needs. Every field has a default; see `load_config`."""

    station: str = Field(
        "station-1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="station id: letters, digits, '_', '.', '-' (used in topics and client id)",
    )
    bundle: Path | None = Field(None, description="model bundle directory")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker and topics")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="durable outbox")
    publish: PublishConfig = Field(default_factory=PublishConfig, description="extra topics")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="frame source")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="run loop")
    health: HealthConfig = Field(default_factory=HealthConfig, description="degraded limits")
    ui: UiConfig = Field(default_factory=UiConfig, description="live view page (edge/ui/)")

    def topic(self, name: str) -> str:
        """Full topic of one message kind, e.g. ``topic("verdict") -> "trd/st1/verdict"``."""
        return self.mqtt.topic_prefix.format(station=self.station) + name

    def client_id(self) -> str:
        """The MQTT client id with the station filled in."""
        return self.mqtt.client_id.format(station=self.station)

    def outbox_path(self) -> Path:
        """The outbox file with the station filled in and ~ expanded."""
        return Path(str(self.outbox.path).format(station=self.station)).expanduser()

    def filesystem_problems(self) -> list[str]:
        """Files the config names that do not exist (checked by `check_config`, not on load)."""
        return [f"{'.'.join(k)}: {m}" for k, m in _path_problems(self.model_dump(mode="json"))]


def _path_problems(tree: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """(key path, problem) for every named file or folder that does not exist.

    Works on the raw settings too, so `check_config` reports these beside schema errors.
    """

    def get(*path: str) -> Any:
        node: Any = tree
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    problems: list[tuple[tuple, str]] = []
    for key in ("ca", "cert", "key"):
        value = get("mqtt", "tls", key)
        if isinstance(value, (str, Path)) and not Path(value).expanduser().is_file():
            problems.append((("mqtt", "tls", key), f"file not found: {value}"))
    bundle = get("bundle")
    if (
        isinstance(bundle, (str, Path))
        and not (Path(bundle).expanduser() / "manifest.json").is_file()
    ):
        problems.append((("bundle",), f"no manifest.json in {bundle} (export a bundle first)"))
    source = get("camera", "source")
    if isinstance(source, str):
        kind, _, arg = source.split("?", 1)[0].partition(":")
        if kind == "file" and arg and not Path(arg).expanduser().is_file():
            problems.append((("camera", "source"), f"recording not found: {arg}"))
        if kind == "folder" and arg and not Path(arg).expanduser().is_dir():
            problems.append((("camera", "source"), f"folder not found: {arg}"))
    return problems


# --------------------------------------------------------------------------- loading


def _read_file(path: Path) -> tuple[dict, dict[tuple, int]]:
    """Parse a YAML/TOML file into a dict plus the line of every key path (best effort)."""
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
            lines = _yaml_lines(yaml.compose(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([f"{path}{where}: not valid YAML: {problem}"]) from None
    elif suffix == ".toml":
        toml = _toml_module()
        try:
            data = toml.loads(text)
        except toml.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        lines = _toml_lines(text)
    else:
        raise ConfigError([f"{path}: unsupported config type {suffix!r}; use .yaml, .yml or .toml"])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data, lines


def _toml_module() -> Any:
    # tomllib is 3.11+; JetPack 6 ships Python 3.10, where the tomli backport does the same.
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise ConfigError(
                [
                    "TOML configs need Python 3.11+ or `pip install tomli`; or write the config in YAML"
                ]
            ) from None


def _yaml_lines(node: Any, path: tuple = ()) -> dict[tuple, int]:
    import yaml

    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            lines[sub] = key.start_mark.line + 1
            lines.update(_yaml_lines(value, sub))
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            lines[path + (i,)] = value.start_mark.line + 1
            lines.update(_yaml_lines(value, path + (i,)))
    return lines


_TOML_TABLE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=")


def _toml_lines(text: str) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    table: tuple = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TOML_TABLE.match(line):
            table = tuple(p.strip().strip("\"'") for p in m[1].split("."))
            lines.setdefault(table, number)
        elif m := _TOML_KEY.match(line):
            key = table + tuple(p.strip().strip("\"'") for p in m[1].split("."))
            lines.setdefault(key, number)
    return lines


def _parse_env_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    if stripped.lower() in ("null", "none"):
        return None
    return text


def env_layer(env: Mapping[str, str]) -> dict[tuple, tuple[Any, str]]:
    """Settings from ``TRD_EDGE_*`` variables: {key path: (value, variable name)}.

    Variables whose first part is not a known section or field are ignored (other tools may
    share the prefix); the rest are validated like file settings.
    """
    fields = StationConfig.model_fields
    out: dict[tuple, tuple[Any, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in ("MQTT_USERNAME", "MQTT_PASSWORD"):
            out[("mqtt", rest.split("_", 1)[1].lower())] = (value, name)
            continue
        if rest == "UI_TOKEN":  # short form of TRD_EDGE_UI__TOKEN
            out[("ui", "token")] = (value, name)
            continue
        path = tuple(p.lower() for p in rest.split("__"))
        if path[0] in fields and all(path):
            out[path] = (_parse_env_value(value), name)
    return out


def _flatten(data: Mapping[str, Any], prefix: tuple = ()) -> dict[tuple, Any]:
    flat: dict[tuple, Any] = {}
    for key, value in data.items():
        path = prefix + tuple(str(key).split("."))
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _assign(tree: dict, path: tuple, value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[path[-1]] = value


def _split_layer_credentials(layer: dict[tuple, tuple[Any, str]]) -> None:
    # A URL with credentials in a layer sets that layer's username/password, so a later layer
    # (env, CLI) can still override them and the merged URL never carries a secret.
    entry = layer.get(("mqtt", "url"))
    if not entry or not isinstance(entry[0], str):
        return
    bare, user, password = split_url_credentials(entry[0])
    layer[("mqtt", "url")] = (bare, entry[1])
    if user is not None:
        layer[("mqtt", "username")] = (user, entry[1])
    if password is not None:
        layer[("mqtt", "password")] = (password, entry[1])


def _suggest(loc: tuple[str, ...]) -> str:
    """'; did you mean ...' from the valid keys of the section holding `loc`."""
    model: Any = StationConfig
    for part in loc[:-1]:
        info = model.model_fields.get(part) if isinstance(model, type) else None
        model = getattr(info, "annotation", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    valid = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], valid, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid here: {', '.join(valid)}"


def _format_error(err: dict, origins: dict[tuple, str]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    origin = ""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            origin = f" [{origins[loc[:n]]}]"
            break
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting" + _suggest(loc)
    elif err["type"] == "missing":
        msg = "required"
    value = err.get("input")
    secret = any("password" in p for p in loc)
    if (
        not secret
        and err["type"] not in ("extra_forbidden", "missing", "value_error")
        and isinstance(value, (str, int, float, bool))
        and len(repr(value)) <= 60
    ):
        shown = redact_url(value) if isinstance(value, str) else value
        msg += f" (got {shown!r})"
    return f"{key}{origin}: {msg}"


def _merge(layers: list[dict[tuple, tuple[Any, str]]]) -> tuple[dict, dict[tuple, str]]:
    tree: dict = {}
    origins: dict[tuple, str] = {}
    for layer in layers:
        _split_layer_credentials(layer)
        for path, (value, origin) in layer.items():
            _assign(tree, path, value)
            origins[path] = origin
    return tree, origins


def _validate(tree: dict, origins: dict[tuple, str]) -> tuple[StationConfig | None, list[str]]:
    try:
        return StationConfig.model_validate(tree), []
    except ValidationError as exc:
        return None, [_format_error(e, origins) for e in exc.errors()]


def _file_layer(path: Path) -> dict[tuple, tuple[Any, str]]:
    data, lines = _read_file(path)
    layer: dict[tuple, tuple[Any, str]] = {}
    for key, value in _flatten(data).items():
        line = lines.get(key)
        layer[key] = (value, f"{path.name} line {line}" if line else path.name)
    return layer


def load_config(
    path: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StationConfig:
    """Load a station config: defaults < file (YAML/TOML) < ``env`` < ``overrides``.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment. Raises
    `ConfigError` listing every problem with its key path and where the value came from.
    """
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[tuple, tuple[Any, str]]]] = []
    if path is not None:
        layers.append(("file", _file_layer(Path(path))))
    layers.append(("env", env_layer(env)))
    if overrides:
        flat = _flatten({k: v for k, v in overrides.items() if v is not None})
        layers.append(("cli", {k: (v, f"override {'.'.join(k)}") for k, v in flat.items()}))
    config, problems = _validate(*_merge([layer for _, layer in layers]))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def check_config(path: str | os.PathLike) -> list[str]:
    """Every problem in a config file at once (schema and missing files); [] when valid.

    The environment is not consulted: this checks the file as it would ship.
    """
    try:
        layer = _file_layer(Path(path))
    except ConfigError as exc:
        return exc.problems
    tree, origins = _merge([layer])
    _, problems = _validate(tree, origins)
    for loc, message in _path_problems(tree):
        problems.append(_format_error({"loc": loc, "msg": message, "type": "path"}, origins))
    return problems


def run_config_check(args: argparse.Namespace) -> int:
    """`trd-edge config --check FILE`: print every problem; exit 0 when valid, 1 otherwise."""
    path = getattr(args, "check", None) or getattr(args, "file", None)
    if not path:
        print("trd-edge config: give a file to check: trd-edge config --check FILE")
        return 2
    problems = check_config(path)
    if not problems:
        print(f"{path}: OK")
        return 0
    print(f"{path}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")
    return 1


# argparse destination -> config key, for `trd-edge run` flags that override the config file.
CLI_KEYS = {
    "mqtt": "mqtt.url",
    "station": "station",
    "backend": "runtime.backend",
    "precision": "runtime.precision",
    "bundle": "bundle",
    "camera": "camera.source",
    "outbox": "outbox.path",
}


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides dict for `load_config` from parsed `trd-edge run` flags (unset = None)."""
    return {key: getattr(args, dest, None) for dest, key in CLI_KEYS.items()}
