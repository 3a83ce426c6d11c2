"""What the live view knows: the run loop's hand-off, the pictures, the history, the state.

The run loop's only contact with the UI is `LiveView.on_verdict`, called once per verdict on the
inference thread: it stores two references and appends to a bounded deque, and returns (about a
microsecond; ``trd-edge bench --ui`` measures it). Everything else happens in `UiState`'s own
thread: at most ``picture_rate_hz`` times a second it takes the newest verdict (and the newest
defect, so a rejected part is never skipped), JPEG-encodes its pictures, files every verdict
since the last pass into the history, and pushes the news to the pages' event queues. A page
that reads slowly or not at all only loses old events of its own queue.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.comms.verdict import Verdict
from edge.inspector import Inspection

__all__ = ["LiveView", "StationStatus", "UiState", "render_pictures"]

log = logging.getLogger(__name__)

IMAGE_NAMES = ("frame.jpg", "heat.png", "depth.jpg", "thumb.jpg")
THUMB_WIDTH = 160
SPARK_POINTS = 60  # latency values per stage in the sparklines
STATS_WINDOW = 500  # latency values per stage behind p50/p99
FPS_WINDOW_S = 5.0
EVENT_QUEUE = 64  # events a page may fall behind before its oldest are dropped


class LiveView:
    """The run loop's hand-off to the UI: `on_verdict` keeps references and returns at once.

    Only the loop's thread calls `on_verdict`; the UI thread reads the attributes. Reading a
    reference or a deque while another thread appends is safe in CPython, and nothing here
    takes a lock the UI thread could hold for long.
    """

    def __init__(self, history: int = 50) -> None:
        self.latest: tuple[int, Verdict, Inspection] | None = None
        self.latest_defect: tuple[int, Verdict, Inspection] | None = None
        self.recent: collections.deque[tuple[int, Verdict]] = collections.deque(maxlen=history)
        self.handed = 0  # verdicts handed over so far (numbers them for the UI thread)
        self.wake = threading.Event()

    def on_verdict(self, verdict: Verdict, ins: Inspection) -> None:
        """`RunLoop.on_verdict` hook: called after the sinks, when the verdict is final."""
        n = self.handed
        item = (n, verdict, ins)
        self.latest = item
        if verdict.decision == "defect":
            self.latest_defect = item
        self.recent.append((n, verdict))
        self.handed = n + 1
        self.wake.set()


# --------------------------------------------------------------------------- pictures


def _shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def heat_rgba(fused: np.ndarray, threshold: float) -> np.ndarray:
    """The fused map as a BGRA image: JET colours, more opaque where the score is higher.

    The colour scale spans at least threshold ± 1 (as `edge.comms.sinks.heatmap_image`), so a good
    part stays blue instead of being stretched to full range.
    """
    lo = min(float(fused.min()), threshold - 1.0)
    hi = max(float(fused.max()), threshold + 1.0)
    norm = np.clip((fused - lo) / (hi - lo), 0.0, 1.0)
    heat = cv2.applyColorMap((norm * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (60.0 + 170.0 * norm).astype(np.uint8)  # faint where normal, strong where not
    return np.dstack([heat, alpha])


def depth_bgr(xyz: np.ndarray) -> np.ndarray:
    """The cloud's depth as a colour image: near = warm, no return = black."""
    z = xyz[..., 2]
    valid = z > 0
    out = np.zeros((*z.shape, 3), np.uint8)
    if not valid.any():
        return out
    sample = z[::4, ::4]
    sample = sample[sample > 0]
    if sample.size == 0:
        sample = z[valid]
    lo, hi = float(sample.min()), float(sample.max())
    norm = np.clip((hi - z) / max(hi - lo, 1e-6), 0.0, 1.0)
    colour = cv2.applyColorMap((norm * 255.0).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[valid] = colour[valid]
    return out


def overlay_geometry(ins: Inspection, picture_fractions: tuple[float, ...]) -> dict[str, Any]:
    """Where things are on the picture, in the frame's pixels (the page scales them).

    ``view``: the rectangle the model's maps cover (the bundle's ROI); ``regions``: defect
    boxes ``[x0, y0, x1, y1, peak]``; ``picture_fractions``: the part of the full camera image
    the picture shows (the ROI itself when the camera delivers the bundle's working grid).
    """
    h, w = ins.frame.size
    x0, y0, x1, y1 = ins.view_frame or (0.0, 0.0, float(w), float(h))
    s = ins.fused.shape[0]
    sx, sy = (x1 - x0) / s, (y1 - y0) / s
    regions = [
        [x0 + r.x * sx, y0 + r.y * sy, x0 + (r.x + r.w) * sx, y0 + (r.y + r.h) * sy, r.peak]
        for r in ins.regions
    ]
    return {
        "size": [w, h],
        "view": [x0, y0, x1, y1],
        "regions": [[round(float(v), 2) for v in box] for box in regions],
        "picture_fractions": [float(v) for v in picture_fractions],
    }


def render_pictures(ins: Inspection, quality: int = 80, max_side: int = 960) -> dict[str, bytes]:
    """Encode one inspection's pictures: the frame, the heatmap, the depth, a thumbnail.

    The heatmap is the bare S×S map (PNG with alpha); the page lays it over the frame's ROI
    itself, so the overlay can be switched on and off without another picture.
    """
    bgr = cv2.cvtColor(ins.frame.rgb, cv2.COLOR_RGB2BGR)
    small = _shrink(bgr, max_side)
    heat = heat_rgba(ins.fused, ins.threshold)
    ok, png = cv2.imencode(".png", heat)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    # thumbnail: frame with the heatmap blended over the ROI and the boxes drawn
    h, w = bgr.shape[:2]
    tw = THUMB_WIDTH
    th = max(1, round(h * tw / w))
    thumb = cv2.resize(bgr, (tw, th), interpolation=cv2.INTER_AREA)
    k = tw / w
    x0, y0, x1, y1 = ins.view_frame or (0.0, 0.0, float(w), float(h))
    tx0, ty0 = int(round(x0 * k)), int(round(y0 * k))
    tx1, ty1 = max(tx0 + 1, int(round(x1 * k))), max(ty0 + 1, int(round(y1 * k)))
    tx1, ty1 = min(tx1, tw), min(ty1, th)
    patch = cv2.resize(heat, (tx1 - tx0, ty1 - ty0), interpolation=cv2.INTER_LINEAR)
    a = patch[..., 3:4].astype(np.float32) / 255.0
    roi = thumb[ty0:ty1, tx0:tx1].astype(np.float32)
    thumb[ty0:ty1, tx0:tx1] = (roi * (1 - a) + patch[..., :3].astype(np.float32) * a).astype(
        np.uint8
    )
    s = ins.fused.shape[0]
    sx, sy = (x1 - x0) / s * k, (y1 - y0) / s * k
    for r in ins.regions:
        p0 = (int(tx0 + r.x * sx), int(ty0 + r.y * sy))
        p1 = (int(tx0 + (r.x + r.w) * sx), int(ty0 + (r.y + r.h) * sy))
        cv2.rectangle(thumb, p0, p1, (255, 255, 255), 1)
    return {
        "frame.jpg": _jpeg(small, quality),
        "heat.png": png.tobytes(),
        "depth.jpg": _jpeg(_shrink(depth_bgr(ins.frame.xyz), max_side), quality),
        "thumb.jpg": _jpeg(thumb, quality),
    }


# --------------------------------------------------------------------------- station state


def _snapshot(values: Any) -> list:
    """A copy of a deque another thread appends to (retried if it moved while copied)."""
    for _ in range(5):
        try:
            return list(values)
        except RuntimeError:  # "deque mutated during iteration"
            continue
    return []


def _tail(values: Any, n: int) -> list[float]:
    """The last ``n`` values of a deque another thread appends to."""
    return [float(v) for v in _snapshot(values)[-n:]]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class StationStatus:
    """The station's state for the page, read from the parts `edge.commands.run_cmd.assemble` made.

    Everything it reads is either a counter the loop updates (read without locking) or the
    publisher's outbox gauges (one short SQLite read, as the health monitor does each second).
    """

    def __init__(self, station: Any, backend: str = "") -> None:
        self.station = station
        self.backend = backend.rsplit("/", 1)[-1]  # "variant/backend-precision" → backend
        self._fps: collections.deque[tuple[float, int]] = collections.deque()

    def static(self) -> dict[str, Any]:
        """What does not change while the station runs: station, model, ROI."""
        st = self.station
        bundle, inspector = st.bundle, st.inspector
        m = bundle.manifest
        scoring = m.scoring
        calibrated = scoring.fitted_at or (
            scoring.history[-1].fitted_at if scoring.history else None
        )
        pre = inspector.pre
        roi = list(pre.roi) if pre.roi else None
        prov = m.provenance
        return {
            "station": st.config.station,
            "model": {
                "id": bundle.model_id,
                "variant": m.model.variant,
                "backend": self.backend,
                "image_size": m.model.image_size,
                "modality": m.model.modality,
                "threshold": inspector.threshold,
                "threshold_method": scoring.threshold_method,
                "calibrated_at": calibrated,
                "exported_at": prov.created,
                "category": prov.category or None,
            },
            "roi": {
                "fractions": roi,
                "pipeline": pre.pipeline,
                "category": prov.category or None,
            },
        }

    def _recent_fps(self, processed: int, now: float) -> float | None:
        self._fps.append((now, processed))
        while len(self._fps) > 2 and now - self._fps[0][0] > FPS_WINDOW_S:
            self._fps.popleft()
        (t0, n0), (t1, n1) = self._fps[0], self._fps[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 > 0.5 else None

    def __call__(self) -> dict[str, Any]:
        st = self.station
        loop = st.loop
        stats = loop.stats
        now = time.monotonic()
        source_errors = max(stats.source_errors, loop.source.stats.errors)
        latency: dict[str, Any] = {}
        for stage, values in list(stats.stage_ms.items()):
            tail = _tail(values, STATS_WINDOW)
            if not tail:
                continue
            latency[stage] = {
                "p50": _pct(tail, 50),
                "p99": _pct(tail, 99),
                "recent": [round(v, 2) for v in tail[-SPARK_POINTS:]],
            }
        doc: dict[str, Any] = {
            "frames": {
                "fps": self._recent_fps(stats.processed, now),
                "fps_average": stats.as_dict()["fps"],
                "captured": stats.captured,
                "processed": stats.processed,
                "dropped": stats.dropped,
                "defects": stats.defects,
                "errors": stats.errors,
                "source_errors": source_errors,
            },
            "latency_ms": latency,
            "broker": {"enabled": False, "connected": None, "url": None, "away_s": None},
            "outbox": None,
            "camera": st.config.camera.source,
        }
        pub = st.publisher
        if pub is not None:
            doc["broker"] = {"enabled": True, "connected": bool(pub.connected),
                             "url": st.config.mqtt.url, "away_s": None}
            try:
                gauges = pub.outbox_state()
                counters = pub.outbox.counters
            except Exception as exc:  # noqa: BLE001 - the outbox may be closing at shutdown
                log.debug("ui: outbox state unavailable: %s", exc)
            else:
                doc["broker"]["away_s"] = gauges["broker_away_s"] or None
                doc["outbox"] = {
                    "waiting": int(gauges["outbox_waiting"]),
                    "capacity": int(gauges["outbox_capacity"]),
                    "oldest_age_s": gauges["outbox_oldest_age_s"],
                    "refused": int(gauges["outbox_refused"]),
                    "dropped": int(counters.get("dropped_total", 0)),
                    "delivered": int(counters.get("acked_total", 0)),
                }
        return doc


# --------------------------------------------------------------------------- the UI thread


@dataclass
class _Entry:
    """One verdict in the history, as the page gets it."""

    n: int
    doc: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)


class UiState:
    """The UI's own thread and everything the HTTP server answers from.

    Args:
        live: the hand-off the run loop feeds.
        status: returns the station's changing state (`StationStatus`), called here about
            once a second, never on the loop's thread.
        static: what does not change (`StationStatus.static`).
        picture_rate_hz, jpeg_quality, max_side, history: see `edge.ui.config.UiConfig`.
    """

    def __init__(
        self,
        live: LiveView,
        status: Callable[[], dict[str, Any]],
        static: dict[str, Any] | None = None,
        *,
        picture_rate_hz: float = 4.0,
        jpeg_quality: int = 80,
        max_side: int = 960,
        history: int = 50,
        state_period_s: float = 1.0,
    ) -> None:
        self.live = live
        self.status = status
        self.static = static or {}
        self.min_interval = 1.0 / picture_rate_hz
        self.quality, self.max_side = jpeg_quality, max_side
        self.state_period_s = state_period_s
        roi = (self.static.get("roi") or {}).get("fractions")
        self._roi = tuple(roi) if roi else (0.0, 0.0, 1.0, 1.0)
        self._lock = threading.Lock()
        self._history: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        self._history_len = history
        self._state: dict[str, Any] = {}
        self._subscribers: list[queue.Queue] = []
        self._seen = -1  # newest hand-off number filed in the history
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-render", daemon=True)
        self.rendered = 0
        self.render_ms: collections.deque[float] = collections.deque(maxlen=200)

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> UiState:
        self._refresh_state()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and end every page's event stream."""
        self._stop.set()
        self.live.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for q in subscribers:
            self._offer(q, None)

    # -- read side (HTTP threads) ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """``/api/state``: station, model, ROI, counters, latency, broker, outbox, UI."""
        with self._lock:
            return dict(self._state)

    def verdicts(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``/api/verdicts``: the history, newest first."""
        with self._lock:
            docs = [e.doc for e in reversed(self._history.values())]
        return docs[:limit] if limit is not None else docs

    def verdict(self, sequence: int) -> dict[str, Any] | None:
        with self._lock:
            for e in self._history.values():
                if e.doc["verdict"]["sequence"] == sequence:
                    return e.doc
        return None

    def image(self, n: int, name: str) -> bytes | None:
        """A picture of history entry ``n`` (``IMAGE_NAMES``), None when it has none."""
        with self._lock:
            e = self._history.get(n)
            return e.images.get(name) if e is not None else None

    def subscribe(self) -> queue.Queue:
        """An event queue for one page: ``(event, data)`` tuples; None = the end."""
        q: queue.Queue = queue.Queue(maxsize=EVENT_QUEUE)
        with self._lock:
            self._subscribers.append(q)
            # the state and the history first: nothing filed before the page connected (or
            # while it reconnected) is missed
            self._offer(q, ("state", self._state))
            self._offer(q, ("verdicts", [e.doc for e in self._history.values()]))
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    @property
    def pages(self) -> int:
        """Pages connected to the event stream now."""
        with self._lock:
            return len(self._subscribers)

    # -- the UI thread -----------------------------------------------------------------------

    @staticmethod
    def _offer(q: queue.Queue, item: Any) -> None:
        """Put without blocking; a page that fell behind loses its oldest event instead."""
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()

    def _publish(self, event: str, data: Any) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            self._offer(q, (event, data))

    def _run(self) -> None:
        last_render = last_state = 0.0
        while not self._stop.is_set():
            self.live.wake.wait(timeout=self.state_period_s)
            if self._stop.is_set():
                break
            now = time.monotonic()
            wait = self.min_interval - (now - last_render)
            if wait > 0 and self.live.handed - 1 > self._seen:
                # pictures at most picture_rate_hz: let verdicts gather meanwhile
                self._stop.wait(min(wait, self.state_period_s))
            self.live.wake.clear()
            try:
                if self.live.handed - 1 > self._seen:
                    self._file_new()
                    last_render = time.monotonic()
                if time.monotonic() - last_state >= self.state_period_s:
                    self._refresh_state()
                    self._publish("state", self.state())
                    last_state = time.monotonic()
            except Exception:  # noqa: BLE001 - the page must never stop the station
                log.exception("live view: update failed")
                self._stop.wait(1.0)

    def _file_new(self) -> None:
        """Put every verdict since the last pass in the history; pictures for the newest and
        the newest defect."""
        live = self.live
        recent = _snapshot(live.recent)
        to_draw = [x for x in (live.latest, live.latest_defect) if x is not None]
        drawn: dict[int, tuple[dict[str, bytes], dict[str, Any]]] = {}
        for n, verdict, ins in to_draw:
            if n <= self._seen or n in drawn:
                continue
            t0 = time.perf_counter()
            try:
                images = render_pictures(ins, self.quality, self.max_side)
                geometry = overlay_geometry(ins, self._picture_fractions(ins))
            except Exception as exc:  # noqa: BLE001 - a frame the page cannot draw
                log.warning("live view: no pictures for verdict %s: %s", verdict.sequence, exc)
                continue
            self.render_ms.append((time.perf_counter() - t0) * 1000.0)
            self.rendered += 1
            drawn[n] = (images, geometry)
        new: list[dict[str, Any]] = []
        with self._lock:
            for n, verdict in recent:
                if n <= self._seen:
                    continue
                images, geometry = drawn.get(n, ({}, None))
                doc = {
                    "n": n,
                    "verdict": json.loads(verdict.to_json()),
                    "images": {k.split(".")[0]: f"/img/{n}/{k}" for k in images} or None,
                    "overlay": geometry,
                }
                self._history[n] = _Entry(n, doc, images)
                new.append(doc)
            while len(self._history) > self._history_len:
                self._history.popitem(last=False)
            if recent:
                self._seen = max(self._seen, recent[-1][0])
        if new:
            self._publish("verdicts", new)

    def _picture_fractions(self, ins: Inspection) -> tuple[float, ...]:
        # a camera that registers at the bundle's working grid delivers the ROI only
        if ins.frame.meta.get("working_grid") is not None:
            return self._roi
        return (0.0, 0.0, 1.0, 1.0)

    def _refresh_state(self) -> None:
        try:
            dynamic = self.status()
        except Exception as exc:  # noqa: BLE001 - e.g. the station closing
            log.debug("live view: station state unavailable: %s", exc)
            dynamic = {}
        render = list(self.render_ms)
        doc = {
            **self.static,
            **dynamic,
            "ui": {
                "picture_rate_hz": 1.0 / self.min_interval,
                "history": self._history_len,
                "verdicts_handed": self.live.handed,
                "pictures_rendered": self.rendered,
                "render_ms_p50": _pct(render, 50),
                "pages": len(self._subscribers),
            },
            "time": time.time(),
        }
        _finite(doc)
        with self._lock:
            self._state = doc


def _finite(node: Any) -> None:
    """Replace NaN/inf by None in place (JSON has neither)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    for k, v in list(items):
        if isinstance(v, float) and not math.isfinite(v):
            node[k] = None
        elif isinstance(v, (dict, list)):
            _finite(v)
