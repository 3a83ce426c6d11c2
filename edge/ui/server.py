"""The live view's HTTP server: one page, its static files, pictures, JSON and an event stream.

Standard library only (``http.server`` in daemon threads, as `edge.comms.health`); read-only: every
method but GET and HEAD answers 405. Routes:

- ``/`` the page; ``/static/<file>`` its script and style (shipped in the package, no CDN);
- ``/api/state`` station, model, ROI, counters, per-stage latency, broker, outbox (JSON);
- ``/api/verdicts`` the last verdicts, newest first (``?limit=N``); ``/api/verdicts/<seq>`` one;
- ``/api/events`` Server-Sent Events: ``state`` about once a second, ``verdicts`` as they come;
- ``/img/<n>/{frame.jpg,heat.png,depth.jpg,thumb.jpg}`` a verdict's pictures (immutable).

With a token (``ui.token`` or ``TRD_EDGE_UI_TOKEN``) every route needs it: as
``Authorization: Bearer <token>`` (scripts), or once as ``?token=<token>`` in the address,
after which the server sets an HttpOnly cookie so the page's own requests (images, the event
stream, which cannot send headers) carry it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from edge.ui.config import browser_url
from edge.ui.state import IMAGE_NAMES, UiState

__all__ = ["UiServer"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "trd_ui_token"
KEEPALIVE_S = 15.0
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}
# the page loads nothing from elsewhere, and nothing may frame it
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_IMAGE = re.compile(r"^/img/(\d+)/([a-z]+\.(?:jpg|png))$")
_VERDICT = re.compile(r"^/api/verdicts/(\d+)$")


class UiServer:
    """Serves `UiState` over HTTP on ``bind:port`` until `close`.

    Args:
        state: what the pages are shown.
        bind: address to listen on (127.0.0.1 = this machine only).
        port: TCP port; 0 picks a free one (see `port`).
        token: bearer token every request must carry, None for none.
    """

    def __init__(self, state: UiState, bind: str = "127.0.0.1", port: int = 8080,
                 token: str | None = None) -> None:
        self.state = state
        self.bind = bind
        self.token = token or None
        self._closing = threading.Event()
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        handler = _make_handler(self)
        family_server = _server_class(bind)
        try:
            self._server = family_server((bind, port), handler)
        except OSError as exc:
            raise OSError(
                f"cannot serve the live view on {bind}:{port}: {exc}; choose another port "
                "(--ui [HOST:]PORT, ui.port) or stop the process using it"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ui-http", daemon=True
        )

    def start(self) -> UiServer:
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The page's address for a browser on this machine."""
        return browser_url(self.bind, self.port)

    def close(self) -> None:
        """Stop serving; open event streams end (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- used by the handler -----------------------------------------------------------------

    def authorised(self, header: str | None, cookie: str | None, query: str | None) -> bool:
        if self.token is None:
            return True
        given = []
        if header and header.lower().startswith("bearer "):
            given.append(header[7:].strip())
        given += [v for v in (cookie, query) if v]
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given)


def _server_class(bind: str) -> type[ThreadingHTTPServer]:
    if ":" not in bind:
        return ThreadingHTTPServer
    import socket

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return V6


def _make_handler(ui: UiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "trd-edge-ui"
        protocol_version = "HTTP/1.1"
        timeout = 60  # an idle keep-alive connection or a page that stopped reading is let go

        # -- read-only: GET and HEAD ---------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            self._route(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._route(body=False)

        def _refuse(self) -> None:
            self._send(405, b"read-only: GET and HEAD only\n", "text/plain; charset=utf-8",
                       extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

        # -- routing -------------------------------------------------------------------------
        def _route(self, body: bool) -> None:
            parts = urlsplit(self.path)
            path, params = parts.path, parse_qs(parts.query)
            query_token = (params.get("token") or [None])[0]
            cookie = _cookie(self.headers.get("Cookie", ""), COOKIE)
            if not ui.authorised(self.headers.get("Authorization"), cookie, query_token):
                self._unauthorised(path, body)
                return
            extra: dict[str, str] = {}
            if ui.token is not None and query_token:
                # remember it for the page's own requests (img, EventSource send no headers)
                extra["Set-Cookie"] = (f"{COOKIE}={quote(query_token, safe='')}; Path=/; "
                                       "HttpOnly; SameSite=Strict")
            state = ui.state
            if path in ("/", "/index.html"):
                self._file("index.html", body, extra)
            elif path.startswith("/static/"):
                self._file(path[len("/static/"):], body, extra)
            elif path == "/api/state":
                self._json(state.state(), body, extra)
            elif path == "/api/verdicts":
                limit = _int((params.get("limit") or [None])[0])
                self._json({"verdicts": state.verdicts(limit)}, body, extra)
            elif m := _VERDICT.match(path):
                doc = state.verdict(int(m[1]))
                if doc is None:
                    self._not_found(body, f"no verdict {m[1]} in the last verdicts")
                else:
                    self._json(doc, body, extra)
            elif m := _IMAGE.match(path):
                data = state.image(int(m[1]), m[2]) if m[2] in IMAGE_NAMES else None
                if data is None:
                    self._not_found(body, "no such picture (only the newest verdicts keep "
                                          "pictures)")
                else:
                    ctype = CONTENT_TYPES[Path(m[2]).suffix]
                    self._send(200, data, ctype, body,
                               {**extra, "Cache-Control": "private, max-age=3600, immutable"})
            elif path == "/api/events":
                self._events(body, extra)
            else:
                self._not_found(body)

        # -- replies -------------------------------------------------------------------------
        def _send(self, code: int, data: bytes, ctype: str, body: bool = True,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            headers = {"Cache-Control": "no-store", **SECURITY_HEADERS, **(extra or {})}
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, doc: Any, body: bool, extra: dict[str, str]) -> None:
            data = json.dumps(doc, allow_nan=False).encode()
            self._send(200, data, "application/json", body, extra)

        def _file(self, name: str, body: bool, extra: dict[str, str]) -> None:
            path = ui._static.get(name)  # only the files shipped: no path from the request
            if path is None:
                self._not_found(body)
                return
            self._send(200, path.read_bytes(),
                       CONTENT_TYPES.get(path.suffix, "application/octet-stream"), body, extra)

        def _not_found(self, body: bool, why: str = "") -> None:
            text = (why or "not found: the page is /, the data /api/state, /api/verdicts, "
                    "/api/events") + "\n"
            self._send(404, text.encode(), "text/plain; charset=utf-8", body)

        def _unauthorised(self, path: str, body: bool) -> None:
            text = ("this station's live view needs its token: open /?token=TOKEN once in the "
                    "browser, or send 'Authorization: Bearer TOKEN'\n")
            self._send(401, text.encode(), "text/plain; charset=utf-8", body,
                       {"WWW-Authenticate": 'Bearer realm="trd-edge live view"'})

        def _events(self, body: bool, extra: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for k, v in {"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                         **SECURITY_HEADERS, **extra}.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if not body:
                return
            q = ui.state.subscribe()
            try:
                self.wfile.write(b"retry: 2000\n\n")
                self.wfile.flush()
                while not ui._closing.is_set():
                    try:
                        item = q.get(timeout=KEEPALIVE_S)
                    except queue.Empty:
                        self.wfile.write(b": keep-alive\n\n")  # finds a vanished page
                        self.wfile.flush()
                        continue
                    if item is None:
                        break
                    event, data = item
                    payload = json.dumps(data, allow_nan=False)
                    self.wfile.write(f"event: {event}\ndata: {payload}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the page went away
            finally:
                ui.state.unsubscribe(q)

        def log_message(self, fmt: str, *args: Any) -> None:  # pictures are polled: keep quiet
            log.debug("ui http: " + fmt, *args)

    return Handler


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return unquote(value)
    return None


def _int(text: str | None) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return max(0, int(text))  # type: ignore[arg-type]
    return None
