"""A stand-in for an open page, for `trd-edge bench --ui`: the UI's cost with someone watching.

`PageClient` does what the page's script does, from a thread: it holds the event stream
(``/api/events``) open and fetches every picture a ``verdicts`` event announces. `bench_view`
starts a live view on a free loopback port with one such page open.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from edge.ui import LiveUi, serve
from edge.ui.config import UiConfig

__all__ = ["PageClient", "bench_view"]

log = logging.getLogger(__name__)


class PageClient:
    """Reads a live view's event stream and fetches the pictures it announces (one thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.events = 0
        self.pictures = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="ui-page", daemon=True)

    def start(self) -> PageClient:
        self._thread.start()
        return self

    def _fetch(self, path: str) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path)
            data = conn.getresponse().read()
            self.pictures += 1
            self.bytes += len(data)
        finally:
            conn.close()

    def _run(self) -> None:
        try:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self._conn.request("GET", "/api/events")
            stream = self._conn.getresponse()
            event = ""
            while not self._stop.is_set():
                line = stream.readline()
                if not line:
                    return
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    self.events += 1
                    if event == "verdicts":
                        for doc in json.loads(text[6:]):
                            for url in (doc.get("images") or {}).values():
                                self._fetch(url)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if not self._stop.is_set():
                log.debug("bench page: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.sock and self._conn.sock.shutdown(2)  # type: ignore[func-returns-value]
            self._conn.close()
        self._thread.join(timeout=5.0)


@contextlib.contextmanager
def bench_view(static: dict[str, Any] | None = None) -> Iterator[tuple[LiveUi, PageClient]]:
    """A live view on a free loopback port with one page open; closed on exit."""
    ui = serve(UiConfig(enabled=True, port=0), lambda: {}, static or {"station": "bench"})
    page = PageClient("127.0.0.1", ui.server.port).start()
    try:
        yield ui, page
    finally:
        ui.state.close()  # ends the event stream, so the page's thread returns
        page.close()
        ui.server.close()
