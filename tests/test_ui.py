"""The live view (edge/ui/) in a real headless Chromium, on a station that really runs.

`trd-edge run --ui PORT` runs in a subprocess on the synthetic camera with the toy ONNX bundle
and a real mosquitto; Chromium (Debian's ``chromium``, driven over the DevTools protocol by
tests/cdp.py) loads the page, and what the page shows is checked against what the station
published over MQTT. The HTTP rules (127.0.0.1 by default, token, 404, read-only) are checked
on the same station with plain HTTP requests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from broker import Subscriber, free_port, start_broker, wait_until  # noqa: E402
from cdp import Chromium, find_chromium  # noqa: E402
from conftest_export import write_toy_bundle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
TOKEN = "s3cret-line-3"
# the toy model's scores on this camera spread around 6, so both decisions appear
THRESHOLD = 6.0
ROI = (0.125, 0.125, 0.875, 0.875)  # the model looks at the middle 48×48 px of a 64 px frame


def _bundle(folder: Path) -> Path:
    bundle = write_toy_bundle(folder, size=SIZE, fp16=False, pipeline="working", roi=ROI)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["scoring"]["threshold"] = THRESHOLD
    manifest["scoring"]["fitted_at"] = "2026-11-30T08:00:00+00:00"
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle


def _get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _answers(url: str, token: str) -> bool:
    try:
        return _get(url, token)[0] == 200
    except (urllib.error.URLError, ConnectionError):  # not listening yet
        return False


def _listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(addr)
    return found


def test_ui_is_off_by_default_and_local_when_on() -> None:
    from edge.config import load_config

    config = load_config(None, env={})
    assert config.ui.enabled is False
    on = load_config(None, env={"TRD_EDGE_UI_TOKEN": "t0k"},
                     overrides={"ui.enabled": True, "ui.port": 9000})
    assert on.ui.bind == "127.0.0.1" and on.ui.port == 9000
    assert on.ui.token is not None and on.ui.token.get_secret_value() == "t0k"
    assert "t0k" not in repr(on) and "t0k" not in str(on.model_dump())


def test_ui_address_flag() -> None:
    from edge.ui.config import parse_ui_address, ui_overrides

    assert parse_ui_address("8080") == (None, 8080)
    assert parse_ui_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_ui_address("[::1]:9000") == ("::1", 9000)
    assert ui_overrides("8081") == {"ui.enabled": True, "ui.port": 8081, "ui.bind": None}
    for bad in ("http", ":80", "host:99999", "[::1]80"):
        with pytest.raises(ValueError, match="--ui"):
            parse_ui_address(bad)


def test_station_without_ui_serves_nothing(tmp_path: Path) -> None:
    from edge.commands.run_cmd import assemble
    from edge.config import load_config

    config = load_config(None, env={}, overrides={
        "bundle": str(_bundle(tmp_path / "bundle")),
        "camera.source": f"synthetic:puck?size={SIZE}&fps=50",
        "outbox.path": str(tmp_path / "o.sqlite3"),
    })
    with assemble(config, max_frames=2, console=False, mqtt_enabled=False) as station:
        station.loop.run()
        assert station.ui is None and station.loop.on_verdict is None


@pytest.mark.mqtt
def test_live_view_in_chromium_shows_what_mqtt_got(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found on PATH (apt-get install chromium; scripts/install.sh "
                    "does) and $CHROMIUM not set")
    broker = start_broker(tmp_path)
    sub = Subscriber(broker.port, "trd/st1/verdict", client_id="mes")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(REPO), TRD_EDGE_UI_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--bundle", str(_bundle(tmp_path / "bundle")),
         "--camera", f"synthetic:puck?size={SIZE}&fps=5&defect_rate=0.5&seed=3",
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--station", "st1",
         "--outbox", str(tmp_path / "outbox.sqlite3"), "--quiet", "--ui", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until(lambda: proc.poll() is not None or _answers(f"{base}/api/state", TOKEN),
                   60, "the live view to answer")
        assert proc.poll() is None, proc.communicate()[0]

        # bound to 127.0.0.1 only (not 0.0.0.0): --ui PORT without a host
        assert _listen_addresses(port) == {"0100007F"}

        # the token is enforced on every route; read-only; unknown paths 404
        for path in ("/", "/api/state", "/api/verdicts", "/api/events", "/static/app.js",
                     "/img/0/frame.jpg"):
            code, _, headers = _get(base + path)
            assert code == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert _get(f"{base}/api/state", "wrong")[0] == 401
        assert _get(f"{base}/api/state?token=wrong")[0] == 401
        code, body, _ = _get(f"{base}/api/state", TOKEN)
        state = json.loads(body)
        assert code == 200 and state["station"] == "st1" and state["model"]["threshold"] == THRESHOLD
        for path in ("/nope", "/api/nope", "/static/../config.py", "/static/missing.js",
                     "/img/999999/frame.jpg", "/img/0/secret.txt", "/api/verdicts/999999"):
            assert _get(base + path, TOKEN)[0] == 404, path
        for method in ("POST", "PUT", "DELETE"):
            assert _get(f"{base}/api/state", TOKEN, method)[0] == 405

        with Chromium(tmp_path, chromium) as browser:
            page = browser.page()
            page.set_viewport(1400, 1000)
            page.navigate(f"{base}/?token={TOKEN}")
            page.wait_for("document.querySelectorAll('#strip .thumb').length >= 4", 20,
                          "four verdicts on the page")
            # the token went into an HttpOnly cookie and out of the address bar
            assert page.evaluate("location.search") == ""
            assert page.evaluate("document.cookie") == ""
            page.wait_for("document.getElementById('conn').textContent === 'live'", 10,
                          "the event stream to open")
            # one evaluation: the strip and the big verdict as they are at the same moment
            shown, last = page.evaluate(
                "[[...document.querySelectorAll('#strip .thumb')].map(b => "
                "[Number(b.dataset.sequence), b.classList.contains('defect') ? 'defect' : 'ok']),"
                " [Number(document.getElementById('decision').dataset.sequence), "
                "document.getElementById('decision').textContent]]")
            # every verdict since the first is there, none missed between list and stream
            seqs = sorted(seq for seq, _ in shown)
            assert seqs == list(range(seqs[0], seqs[-1] + 1))
            assert [seq for seq, _ in shown] == seqs[::-1]  # newest first
            # what the page shows is what the station published
            sub.wait_for_sequences({seq for seq, _ in shown} | {last[0]}, timeout=10)
            published = {m.json()["sequence"]: m.json()["decision"] for m in sub.on("verdict")}
            assert {seq: published[seq] for seq, _ in shown} == dict(shown)
            assert last[1] == {"defect": "DEFECT", "ok": "OK"}[published[last[0]]]
            assert last[0] == max(seq for seq, _ in shown)

            # the picture was drawn (not a black canvas), the station state is filled in
            lit = page.wait_for(
                "(() => { const c = document.getElementById('picture');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];"
                " return s / (d.length / 4) / 3; })()", 10, "a drawn picture")
            assert lit > 20
            page.wait_for("document.getElementById('s-broker').textContent === 'connected'", 5)
            assert float(page.evaluate("document.getElementById('s-fps').textContent")) > 1
            assert page.evaluate("document.querySelectorAll('#latency tr').length") >= 5
            assert "2026" in page.evaluate("document.getElementById('calibrated').textContent")
            assert page.evaluate("document.getElementById('roi-current').textContent") \
                .startswith("0.125,0.125,0.875,0.875")

            # ROI helper: a drag on the picture gives the fractions and the train command
            box = page.evaluate("(() => { const r = document.getElementById('picture')"
                                ".getBoundingClientRect(); return [r.left, r.top, r.width, "
                                "r.height]; })()")
            x, y, w, h = box
            page.drag((x + 0.25 * w, y + 0.2 * h), (x + 0.75 * w, y + 0.9 * h))
            drawn = page.wait_for("document.getElementById('roi-command').textContent", 5)
            fractions = [float(v) for v in drawn.split("--roi ")[1].split(",")]
            assert fractions == pytest.approx([0.25, 0.2, 0.75, 0.9], abs=0.02)
            assert "trd-edge train" in drawn and "--category" in drawn

            # a thumbnail opens the verdict's pictures and JSON
            page.evaluate("document.querySelector('#strip .thumb img').closest('button').click()")
            detail = json.loads(page.wait_for(
                "document.getElementById('detail').open && "
                "document.getElementById('d-json').textContent", 5, "the verdict dialog"))
            sub.wait_for_sequences({detail["sequence"]}, timeout=10)
            published = {m.json()["sequence"]: m.json()["decision"] for m in sub.on("verdict")}
            assert detail["decision"] == published[detail["sequence"]]
            page.evaluate("document.getElementById('d-close').click()")

            shot = page.screenshot(tmp_path / "live-view.png")
            assert shot.stat().st_size > 20_000
            if os.environ.get("TRD_UI_SCREENSHOT"):  # keep it, e.g. for the README
                shutil.copy(shot, os.environ["TRD_UI_SCREENSHOT"])
            page.close()

        code, body, _ = _get(f"{base}/api/verdicts?limit=5", TOKEN)
        docs = json.loads(body)["verdicts"]
        assert code == 200 and 1 <= len(docs) <= 5
        for d in docs:
            assert d["verdict"]["decision"] == published.get(
                d["verdict"]["sequence"], d["verdict"]["decision"])
        pictured = next(d for d in docs if d["images"])
        # the heatmap and boxes are drawn over the bundle's ROI, in frame pixels
        assert pictured["overlay"]["view"] == [8.0, 8.0, 56.0, 56.0]
        assert pictured["overlay"]["size"] == [SIZE, SIZE]
        for x0, y0, x1, y1, _ in pictured["overlay"]["regions"]:
            assert 8 <= x0 < x1 <= 56 and 8 <= y0 < y1 <= 56
        for name in ("frame", "heat", "depth", "thumb"):
            code, data, headers = _get(base + pictured["images"][name], TOKEN)
            assert code == 200 and len(data) > 100
            assert headers["Content-Type"] in ("image/jpeg", "image/png")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert f"live view: http://127.0.0.1:{port}/ (token required)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        broker.cleanup()


def test_bench_ui_handoff_costs_the_loop_under_a_millisecond(tmp_path: Path) -> None:
    """`trd-edge bench --ui`: the run loop's hand-off with a page open, timed per frame."""
    from edge.bundle import load_bundle
    from edge.commands.bench import bench_backend, publish_stage
    from edge.commands.run_cmd import model_ref
    from edge.ui.client import bench_view

    bundle = _bundle(tmp_path / "bundle")
    ref = model_ref(load_bundle(bundle), "bench")
    with publish_stage("outbox", tmp_path, ref) as publish, bench_view() as (ui, page):
        result = bench_backend(bundle, "onnxruntime", f"synthetic:puck?size={SIZE}", 60, 2,
                               publish, ui=ui)
        # the UI thread catches up on its own time: the newest verdict, with pictures
        wait_until(lambda: ui.state.verdicts(1)[0]["verdict"]["sequence"] == 61, 10,
                   "the UI to file the last verdict")
        wait_until(lambda: page.pictures >= 8, 10, "the page to fetch pictures")
        shown = ui.state.verdicts()
    assert len(result.ui_ms) == 60
    assert result.as_dict()["ui_handoff"]["p50_ms"] <= 1.0
    # the UI drew some verdicts (not all: at most picture_rate_hz), and kept the last 50
    assert 1 <= ui.state.rendered < 62 and len(shown) == 50
    assert shown[0]["verdict"]["sequence"] == 61 and shown[0]["images"] is not None


def test_grid_frames_map_the_picture_to_the_camera_roi(tmp_path: Path) -> None:
    """A camera that registers at the bundle's working grid delivers the ROI only: the page
    must know the picture is that part of the camera frame (for the ROI helper)."""
    from edge.backends import create_backend
    from edge.bundle import load_bundle
    from edge.comms.sinks import make_verdict
    from edge.comms.verdict import ModelRef
    from edge.frames import Frame
    from edge.inspector import Inspector
    from edge.sources import open_source
    from edge.ui.state import LiveView, UiState

    bundle = load_bundle(_bundle(tmp_path / "bundle"))
    inspector = Inspector(bundle, create_backend("onnxruntime", bundle))
    with open_source(f"synthetic:puck?size={SIZE}") as source:
        raw = source.read(5.0)
    frame = Frame(rgb=raw.rgb, xyz=raw.xyz, frame_number=0, meta={
        "working_grid": inspector.working_grid, "camera_size": (480, 640)})
    ins = inspector.inspect(frame)
    live = LiveView()
    state = UiState(live, lambda: {}, {"roi": {"fractions": list(ROI)}}).start()
    try:
        live.on_verdict(make_verdict(ins, "st1", 0, ModelRef(id="m", sha256="0" * 64,
                                                             variant="toy")), ins)
        wait_until(lambda: state.verdicts(), 5, "the verdict filed")
    finally:
        state.close()
    doc = state.verdicts()[0]
    assert doc["overlay"]["picture_fractions"] == list(ROI)
    assert doc["overlay"]["view"] == [0.0, 0.0, float(SIZE), float(SIZE)]
    assert set(doc["images"]) == {"frame", "heat", "depth", "thumb"}
    assert state.image(0, "frame.jpg")[:2] == b"\xff\xd8"  # JPEG
    assert state.image(0, "heat.png")[:4] == b"\x89PNG"
