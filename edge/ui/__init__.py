"""The station's live view: a page served by the station itself (`trd-edge run --ui PORT`).

Three parts, each in its own module:

- `edge.ui.config`: the ``ui:`` config section and the ``--ui [HOST:]PORT`` flag;
- `edge.ui.state`: `LiveView`, the run loop's only contact with the UI (its ``on_verdict``
  stores references and returns), and `UiState`, the UI's own thread that encodes pictures
  at most a few times a second, keeps the last verdicts and reads the station's state;
- `edge.ui.server`: the read-only HTTP server (page, JSON, Server-Sent Events, pictures);
- ``static/``: the page (HTML, JavaScript, CSS; no build step, nothing from the network).

Usage (what `edge.commands.run_cmd.assemble` does)::

    with open_ui(config.ui, station, backend="onnxruntime-fp32") as ui:
        station.loop.on_verdict = ui.live.on_verdict
        print(ui.url)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge.ui.config import ENV_TOKEN, UiConfig

__all__ = ["LiveUi", "UiConfig", "open_ui", "serve"]

log = logging.getLogger(__name__)


@dataclass
class LiveUi:
    """A running live view: the hand-off, the UI thread and the HTTP server."""

    live: Any  # edge.ui.state.LiveView
    state: Any  # edge.ui.state.UiState
    server: Any  # edge.ui.server.UiServer

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.state.close()  # ends the event streams first, so the server stops at once
        self.server.close()


def serve(config: UiConfig, status: Any, static: dict[str, Any]) -> LiveUi:
    """Start the UI thread and the server for any source of verdicts (`trd-edge bench` too).

    ``status`` returns the changing state (`edge.ui.state.StationStatus`), ``static`` what
    does not change. The caller feeds ``result.live.on_verdict`` and calls ``close``.
    """
    from edge.ui.server import UiServer
    from edge.ui.state import LiveView, UiState

    # the config is the one way in: it reads TRD_EDGE_UI_TOKEN (edge.config.env_layer)
    token = config.token.get_secret_value() if config.token is not None else None
    live = LiveView(config.history)
    state = UiState(
        live, status, static, picture_rate_hz=config.picture_rate_hz,
        jpeg_quality=config.jpeg_quality, max_side=config.max_side, history=config.history,
    )
    server = UiServer(state, config.bind, config.port, token)  # binds now: fails early
    state.start()
    server.start()
    if config.bind not in ("127.0.0.1", "localhost", "::1") and token is None:
        log.warning("live view listens on %s without a token: anyone who reaches this machine "
                    "sees the line (set ui.token or %s)", config.bind, ENV_TOKEN)
    return LiveUi(live, state, server)


@contextlib.contextmanager
def open_ui(config: UiConfig, station: Any, backend: str = "") -> Iterator[LiveUi]:
    """The live view of an assembled `edge.commands.run_cmd.Station`; closed on exit."""
    from edge.ui.state import StationStatus

    status = StationStatus(station, backend)
    ui = serve(config, status, status.static())
    try:
        log.info("live view: %s%s", ui.url,
                 " (token required)" if ui.server.token is not None else "")
        yield ui
    finally:
        ui.close()
