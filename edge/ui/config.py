"""The `ui:` section of the station config and the `--ui [HOST:]PORT` flag.

Off by default. When on, it binds 127.0.0.1 unless told otherwise: the page shows the line's
parts and the station's state, so reaching it from another machine is a choice (an SSH tunnel
from a laptop needs nothing else; see the README).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["ENV_TOKEN", "UiConfig", "parse_ui_address", "ui_overrides"]

ENV_TOKEN = "TRD_EDGE_UI_TOKEN"  # short form of TRD_EDGE_UI__TOKEN (edge.config.env_layer)
DEFAULT_PORT = 8080


class UiConfig(BaseModel):
    """The station's live view page (read-only HTTP; see edge/ui/)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="serve the live view page (`--ui [HOST:]PORT`)")
    bind: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address to listen on; 127.0.0.1 = this machine only (reach it from a "
        "laptop with an SSH tunnel); 0.0.0.0 = every interface (set a token)",
    )
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port; 0 = any free port")
    token: SecretStr | None = Field(
        None,
        description=f"bearer token the page and the JSON API require (env {ENV_TOKEN}); None = "
        "no token; the browser passes it once as ?token=... and keeps it in a cookie",
    )
    picture_rate_hz: float = Field(
        4.0,
        gt=0,
        le=30,
        description="at most this many verdicts per second get pictures (JPEG-encoded in the "
        "UI's own thread, never on the inference path); the newest defect is always among them",
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the pictures")
    max_side: int = Field(
        960, ge=64, le=4096, description="pictures are shrunk to at most this many pixels a side"
    )
    history: int = Field(50, ge=1, le=500, description="verdicts kept for the thumbnail strip")

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    def url(self, port: int | None = None) -> str:
        """The page's address as a browser on this machine writes it."""
        return browser_url(self.bind, self.port if port is None else port)


def browser_url(bind: str, port: int) -> str:
    """``http://host:port/`` for a server bound to ``bind``: a wildcard bind is reached on
    127.0.0.1 from this machine, an IPv6 address goes in brackets."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def parse_ui_address(text: str) -> tuple[str | None, int]:
    """``"8080"`` → (None, 8080); ``"0.0.0.0:8080"`` → ("0.0.0.0", 8080); ``"[::1]:80"`` too.

    Raises ValueError with the expected form.
    """
    spec = text.strip()
    host: str | None = None
    port_text = spec
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0 or spec[end + 1 : end + 2] != ":":
            raise ValueError(f"--ui {text!r}: write [HOST]:PORT for an IPv6 address")
        host, port_text = spec[1:end], spec[end + 2 :]
    elif ":" in spec:
        host, _, port_text = spec.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--ui {text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--ui {text!r}: the port must be 0-65535")
    if host is not None and not host:
        raise ValueError(f"--ui {text!r}: empty host; write PORT alone for 127.0.0.1")
    return host, port


def ui_overrides(text: str) -> dict[str, Any]:
    """Config overrides (dotted keys, for `edge.config.load_config`) of ``--ui [HOST:]PORT``."""
    host, port = parse_ui_address(text)
    return {"ui.enabled": True, "ui.port": port, "ui.bind": host}
