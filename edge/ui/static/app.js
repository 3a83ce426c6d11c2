// trd-edge live view. Plain JavaScript, no build step, nothing loaded from the network.
// The station pushes Server-Sent Events (/api/events): "state" about once a second and
// "verdicts" as they come; pictures are fetched by URL (/img/<n>/...), each once.
"use strict";

const STAGES = ["capture", "preprocess", "h2d", "inference", "d2h", "postprocess", "publish", "total"];
const MIN_CANVAS = 640; // small frames (64 px) are drawn larger so boxes and labels stay crisp
const $ = (id) => document.getElementById(id);

const view = {
  current: null, // {doc, imgs: {frame, heat, depth}}
  state: null,
  drawn: null, // ROI drawn by the user: [x0, y0, x1, y1] in frame pixels
  drag: null,
  byN: new Map(), // history entries by hand-off number
};

// ---------------------------------------------------------------- helpers

function fmt(v, digits = 2) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}

function fmtDate(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot load " + url));
    img.src = url;
  });
}

async function loadImages(doc) {
  if (!doc.images) return null;
  const [frame, heat, depth] = await Promise.all(
    [doc.images.frame, doc.images.heat, doc.images.depth].map(loadImage));
  return { frame, heat, depth };
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// ---------------------------------------------------------------- drawing

function sizeCanvas(canvas, size) {
  const k = Math.max(1, MIN_CANVAS / size[0]);
  const w = Math.round(size[0] * k), h = Math.round(size[1] * k);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  return k;
}

function label(ctx, text, x, y, colour) {
  ctx.font = "bold 13px system-ui, sans-serif";
  const w = ctx.measureText(text).width + 8;
  ctx.fillStyle = "rgba(0,0,0,.65)";
  ctx.fillRect(x, y - 16, w, 16);
  ctx.fillStyle = colour;
  ctx.fillText(text, x + 4, y - 4);
}

function drawOverlays(ctx, k, geo, opts) {
  const [vx0, vy0, vx1, vy1] = geo.view;
  if (opts.roi) {
    ctx.save();
    ctx.setLineDash([8, 5]);
    ctx.strokeStyle = "#ffd166";
    ctx.lineWidth = 2;
    ctx.strokeRect(vx0 * k + 1, vy0 * k + 1, (vx1 - vx0) * k - 2, (vy1 - vy0) * k - 2);
    ctx.restore();
    label(ctx, "model ROI", vx0 * k + 2, vy0 * k + 18, "#ffd166");
  }
  if (opts.boxes) {
    for (const [x0, y0, x1, y1, peak] of geo.regions) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 3;
      ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
      ctx.strokeStyle = "#e5484d";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
      label(ctx, "peak " + fmt(peak, 1), x0 * k, Math.max(16, y0 * k - 2), "#ff8a8d");
    }
  }
  if (opts.drawn && view.drawn) {
    const [x0, y0, x1, y1] = view.drawn;
    ctx.strokeStyle = "#3ee0d0";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
    label(ctx, "new ROI", x0 * k + 2, y1 * k - 2, "#3ee0d0");
  }
}

function drawPicture(canvas, imgs, geo, opts) {
  const k = sizeCanvas(canvas, geo.size);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (opts.rgb) ctx.drawImage(imgs.frame, 0, 0, canvas.width, canvas.height);
  if (opts.heat) {
    const [vx0, vy0, vx1, vy1] = geo.view;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(imgs.heat, vx0 * k, vy0 * k, (vx1 - vx0) * k, (vy1 - vy0) * k);
  }
  drawOverlays(ctx, k, geo, opts);
}

function drawDepth(canvas, imgs, geo, opts) {
  const k = sizeCanvas(canvas, geo.size);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(imgs.depth, 0, 0, canvas.width, canvas.height);
  drawOverlays(ctx, k, geo, { roi: opts.roi, boxes: opts.boxes, drawn: opts.drawn });
}

function toggles() {
  return {
    rgb: $("t-rgb").checked, heat: $("t-heat").checked, boxes: $("t-boxes").checked,
    roi: $("t-roi").checked, depth: $("t-3d").checked, drawn: true,
  };
}

function redraw() {
  const opts = toggles();
  $("view-3d").classList.toggle("hidden", !opts.depth);
  if (!view.current) return;
  const { doc, imgs } = view.current;
  // each picture at most 62 % of the window's height, so the page stays in view
  const [w, h] = doc.overlay.size;
  const maxWidth = Math.round((window.innerHeight * 0.62 * w) / h) + "px";
  for (const fig of document.querySelectorAll(".views .view")) fig.style.maxWidth = maxWidth;
  drawPicture($("picture"), imgs, doc.overlay, opts);
  if (opts.depth) drawDepth($("depth"), imgs, doc.overlay, opts);
  $("picture-caption").textContent =
    `camera · verdict #${doc.verdict.sequence} · heatmap over the model's ROI`;
}

// ---------------------------------------------------------------- verdicts

function showVerdict(doc) {
  const v = doc.verdict;
  const dec = $("decision");
  dec.textContent = v.decision === "defect" ? "DEFECT" : "OK";
  dec.className = "decision " + v.decision;
  dec.dataset.sequence = v.sequence;
  dec.dataset.n = doc.n;
  const when = new Date(v.host_timestamp).toLocaleTimeString();
  $("v-meta").textContent = `#${v.sequence} · frame ${v.frame_number} · ${when}`;
  $("v-score").textContent = fmt(v.image_score);
  $("v-threshold").textContent = fmt(v.threshold);
  const top = Math.max(v.threshold * 2, v.image_score * 1.1, 1e-6);
  const bar = $("v-bar");
  bar.style.width = Math.min(100, (100 * v.image_score) / top) + "%";
  bar.className = "fill " + v.decision;
  $("v-thr").style.left = (100 * v.threshold) / top + "%";
  $("v-rgb").textContent = fmt(v.scores.rgb);
  $("v-3d").textContent = fmt(v.scores["3d"]);
  $("v-regions").textContent = String(v.regions.length);
  $("v-latency").textContent = fmt(v.latency_ms.total, 0) + " ms";
  const truth = v.extra && v.extra.ground_truth;
  $("v-truth").textContent = truth ? `${truth.defect_type ?? ""} (synthetic ground truth)` : "–";
}

function thumb(doc) {
  const v = doc.verdict;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "thumb " + v.decision;
  b.dataset.n = doc.n;
  b.dataset.sequence = v.sequence;
  b.title = `#${v.sequence}: ${v.decision}, score ${fmt(v.image_score)}`;
  if (doc.images) {
    const img = document.createElement("img");
    img.src = doc.images.thumb;
    img.alt = v.decision;
    b.appendChild(img);
  } else {
    const d = document.createElement("span");
    d.className = "nopic";
    d.textContent = "no picture";
    b.appendChild(d);
  }
  const cap = document.createElement("span");
  cap.className = "cap";
  cap.textContent = `#${v.sequence} ${v.decision === "defect" ? "DEFECT" : "ok"} ${fmt(v.image_score, 1)}`;
  b.appendChild(cap);
  b.addEventListener("click", () => openDetail(doc.n));
  return b;
}

function addVerdicts(docs) {
  // docs may come twice (the list at start, then the stream) and out of order (a reconnect
  // sends the history again): the strip is kept sorted by hand-off number, newest first
  docs = docs.filter((d) => !view.byN.has(d.n));
  if (!docs.length) return;
  const strip = $("strip");
  const limit = (view.state && view.state.ui && view.state.ui.history) || 50;
  for (const doc of docs) {
    view.byN.set(doc.n, { doc, el: thumb(doc) });
  }
  const order = [...view.byN.keys()].sort((a, b) => b - a);
  for (const n of order.slice(limit)) view.byN.delete(n);
  strip.replaceChildren(...order.slice(0, limit).map((n) => view.byN.get(n).el));
  const newest = docs.reduce((a, b) => (b.n > a.n ? b : a));
  const shownN = Number($("decision").dataset.n ?? -1);
  if (newest.n < shownN) return;
  const pictured = docs.filter((d) => d.images).reduce((a, b) => (!a || b.n > a.n ? b : a), null);
  if (pictured) {
    loadImages(pictured).then((imgs) => {
      if (!view.current || view.current.doc.n <= pictured.n) {
        view.current = { doc: pictured, imgs };
        redraw();
      }
    }).catch(() => {});
  }
  showVerdict(newest);
}

async function openDetail(n) {
  const entry = view.byN.get(n);
  if (!entry) return;
  const doc = entry.doc;
  const v = doc.verdict;
  $("d-title").textContent = `verdict #${v.sequence} · ${v.decision.toUpperCase()} · score ` +
    `${fmt(v.image_score)} / ${fmt(v.threshold)} · frame ${v.frame_number}`;
  $("d-json").textContent = JSON.stringify(v, null, 2);
  const pics = document.querySelector(".d-pictures");
  pics.hidden = !doc.images;
  $("d-nopic").textContent = doc.images ? "" :
    "No pictures for this verdict: the station draws at most a few verdicts a second (the " +
    "newest, and the newest defect), never slowing the line for this page.";
  $("detail").showModal();
  if (!doc.images) return;
  const imgs = await loadImages(doc);
  const geo = doc.overlay;
  drawPicture($("d-frame"), imgs, geo, { rgb: true, heat: false, boxes: true, roi: true });
  drawPicture($("d-heat"), imgs, geo, { rgb: true, heat: true, boxes: false, roi: false });
  drawDepth($("d-depth"), imgs, geo, { roi: true, boxes: true });
}

// ---------------------------------------------------------------- station state

function spark(values) {
  if (!values || values.length < 2) return "";
  const w = 90, h = 18;
  const max = Math.max(...values), min = Math.min(...values);
  const span = max - min || 1;
  const pts = values.map((v, i) =>
    `${((i / (values.length - 1)) * w).toFixed(1)},${(h - 1 - ((v - min) / span) * (h - 2)).toFixed(1)}`);
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline points="${pts.join(" ")}"/></svg>`;
}

function kpi(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = cls || "";
}

function showState(s) {
  view.state = s;
  if (s.station) $("station").textContent = s.station;
  if (s.model) {
    $("model-id").textContent = s.model.id;
    $("model-variant").textContent = `(${s.model.variant}${s.model.backend ? ", " + s.model.backend : ""})`;
    $("calibrated").textContent = fmtDate(s.model.calibrated_at);
  }
  const f = s.frames || {};
  kpi("s-fps", fmt(f.fps ?? f.fps_average, 1));
  kpi("s-processed", String(f.processed ?? "–"));
  kpi("s-defects", String(f.defects ?? "–"), f.defects ? "bad" : "");
  kpi("s-dropped", String(f.dropped ?? "–"), f.dropped ? "bad" : "");
  kpi("s-errors", String((f.errors ?? 0) + (f.source_errors ?? 0)),
    (f.errors || f.source_errors) ? "bad" : "");
  const b = s.broker || {};
  if (!b.enabled) kpi("s-broker", "none");
  else kpi("s-broker", b.connected ? "connected" : "away" + (b.away_s ? ` ${fmt(b.away_s, 0)} s` : ""),
    b.connected ? "good" : "bad");
  const o = s.outbox;
  kpi("s-waiting", o ? `${o.waiting}` : "–", o && o.waiting > 10 ? "bad" : "");
  kpi("s-odropped", o ? String(o.dropped) : "–", o && o.dropped ? "bad" : "");
  kpi("s-refused", o ? String(o.refused) : "–", o && o.refused ? "bad" : "");
  const rows = [];
  const lat = s.latency_ms || {};
  for (const stage of STAGES) {
    const q = lat[stage];
    if (!q) continue;
    rows.push(`<tr><td>${stage}</td><td>${fmt(q.p50, 1)}</td><td>${fmt(q.p99, 1)}</td>` +
      `<td>${spark(q.recent)}</td></tr>`);
  }
  $("latency").innerHTML = rows.join("");
  const ui = s.ui || {};
  $("s-foot").textContent = `camera ${s.camera ?? "–"} · pictures at most ` +
    `${fmt(ui.picture_rate_hz, 0)}/s (${ui.pictures_rendered ?? 0} drawn, ` +
    `${fmt(ui.render_ms_p50, 1)} ms each, in the UI's own thread)`;
  showRoi();
}

// ---------------------------------------------------------------- ROI helper

function showRoi() {
  const s = view.state;
  const roi = s && s.roi;
  $("roi-current").textContent = roi && roi.fractions ?
    roi.fractions.map((v) => v.toFixed(3)).join(",") + ` (${roi.pipeline} pipeline)` :
    "whole frame (no --roi)";
  if (!view.drawn || !view.current) return;
  const geo = view.current.doc.overlay;
  const [pw, ph] = geo.size;
  const [cx0, cy0, cx1, cy1] = geo.picture_fractions; // the part of the camera the picture shows
  const fx = (x) => cx0 + (x / pw) * (cx1 - cx0);
  const fy = (y) => cy0 + (y / ph) * (cy1 - cy0);
  const [x0, y0, x1, y1] = view.drawn;
  const frac = [fx(x0), fy(y0), fx(x1), fy(y1)].map((v) => Math.min(1, Math.max(0, v)).toFixed(3));
  const text = frac.join(",");
  $("roi-drawn").textContent = text;
  const cat = (roi && roi.category) || "CATEGORY";
  $("roi-command").textContent =
    `trd-edge train --data-root DATA --category ${cat} --out RUN \\\n` +
    `    --preprocess working --roi ${text}`;
  $("roi-copy").disabled = false;
}

function framePoint(ev) {
  const canvas = $("picture");
  if (!view.current) return null;
  const geo = view.current.doc.overlay;
  const r = canvas.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * geo.size[0];
  const y = ((ev.clientY - r.top) / r.height) * geo.size[1];
  return [Math.min(geo.size[0], Math.max(0, x)), Math.min(geo.size[1], Math.max(0, y))];
}

function setupRoiHelper() {
  const canvas = $("picture");
  canvas.addEventListener("pointerdown", (ev) => {
    const p = framePoint(ev);
    if (!p) return;
    view.drag = p;
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!view.drag) return;
    const p = framePoint(ev);
    const [ax, ay] = view.drag;
    view.drawn = [Math.min(ax, p[0]), Math.min(ay, p[1]), Math.max(ax, p[0]), Math.max(ay, p[1])];
    redraw();
  });
  canvas.addEventListener("pointerup", () => {
    view.drag = null;
    if (view.drawn && (view.drawn[2] - view.drawn[0] < 2 || view.drawn[3] - view.drawn[1] < 2)) {
      view.drawn = null; // a click, not a drag
    }
    redraw();
    showRoi();
  });
  $("roi-copy").addEventListener("click", async () => {
    const text = $("roi-command").textContent.replace(/\\\n\s*/g, "");
    try {
      await navigator.clipboard.writeText(text);
      $("roi-copy").textContent = "copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("roi-command"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("roi-copy").textContent = "selected: press Ctrl+C";
    }
    setTimeout(() => { $("roi-copy").textContent = "copy command"; }, 2000);
  });
}

// ---------------------------------------------------------------- start

function connect() {
  const es = new EventSource("/api/events");
  es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "conn on"; };
  es.onerror = () => { $("conn").textContent = "reconnecting"; $("conn").className = "conn off"; };
  es.addEventListener("state", (ev) => showState(JSON.parse(ev.data)));
  es.addEventListener("verdicts", (ev) => addVerdicts(JSON.parse(ev.data)));
}

async function start() {
  // the token came once in the address; the server keeps it in a cookie: take it out of sight
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  for (const id of ["t-rgb", "t-heat", "t-boxes", "t-roi", "t-3d"]) {
    $(id).addEventListener("change", redraw);
  }
  $("d-close").addEventListener("click", () => $("detail").close());
  window.addEventListener("resize", redraw);
  setupRoiHelper();
  try {
    showState(await getJSON("/api/state"));
    const { verdicts } = await getJSON("/api/verdicts");
    addVerdicts(verdicts.slice().reverse());
  } catch (err) {
    $("conn").textContent = String(err.message || err);
  }
  connect();
}

start();
