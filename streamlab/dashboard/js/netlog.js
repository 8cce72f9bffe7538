// The Testing-session network log: a DevTools-like waterfall over the session's log.
//
// Rows are sorted by request start, on a time window with a ruler and zoom (follows the
// live edge unless the tester pans); bars are sized by TTFB and transfer time; blocking
// playlist reloads can be hidden; the Name column shows the file, the LL-HLS query
// (_HLS_msn / _HLS_part) and the byte range; a click opens the details pane (timing
// breakdown, request and response headers from GET /api/session/{id}/network/entry/{seq}).
// Failed rows (socket faults, timeouts, client gave up) are drawn as failures; the Fault
// column shows the label the tester chose.  Control changes ("markers") appear on the
// ruler and as rows at the time they happened.

import { get, enc } from "./api.js";
import { h, clear, select, fmtBytes, fmtNum, fmtClock, errorLine } from "./ui.js";

const ZOOMS = [[5, "5 s"], [15, "15 s"], [30, "30 s"], [60, "1 min"], [120, "2 min"], [300, "5 min"], [600, "10 min"], [0, "all"]];
const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
const MAX_ROWS = 300;
const KEEP = 30000;

const SVG_NS = "http://www.w3.org/2000/svg";
function svgIcon(paths, title) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-label", title);
  const t = document.createElementNS(SVG_NS, "title");
  t.textContent = title;
  svg.append(t);
  for (const d of paths) {
    const p = document.createElementNS(SVG_NS, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}
// Inline SVG icons: every font renders them (the old "⏱" was an empty box with Debian's fonts).
const ICONS = {
  timer: () => svgIcon(["M6 1h4", "M8 1v2", "M8 15a6 6 0 1 0 0-12a6 6 0 0 0 0 12z", "M8 6v3.5l2 1.5"], "transfer timeout"),
  cut: () => svgIcon(["M4 4l8 8", "M12 4l-8 8", "M3 3a1.5 1.5 0 1 0 .01 0", "M3 11a1.5 1.5 0 1 0 .01 0"], "socket fault"),
  back: () => svgIcon(["M6 4L2 8l4 4", "M2 8h8a4 4 0 0 1 0 8"], "client gave up"),
  flag: () => svgIcon(["M3 15V2", "M3 2h9l-2 3 2 3H3"], "control change"),
};

/** The glyph cell content of an entry: "!" + icon by category. */
export function glyphOf(e) {
  if (e.fault_category === "client_disconnect") return ["!", ICONS.back()];
  if (!e.faulted) return null;
  if (e.fault_category === "socket") return ["!", ICONS.cut()];
  if (e.fault_category === "transfer_timeout") return ["!", ICONS.timer()];
  return "!";
}

/** A request that did not complete as the server meant it to (drawn as a failure). */
export function failed(e) {
  return e.status === 0 || e.status >= 400 || ["socket", "transfer_timeout", "client_disconnect", "corruption", "transport"].includes(e.fault_category);
}

function isBlockingReload(e) {
  return e.request_kind === "manifest" && /[?&]_HLS_msn=/.test(e.url || "");
}

function faultLabel(e, labels) {
  if (e.fault_category === "client_disconnect") return "client gave up";
  if (!e.fault_type) return e.fault_category || "";
  if (e.fault_category === "transfer_timeout") return `server ${e.fault_action.replace(/_/g, " ")}`;
  return labels.get(e.fault_type) || e.fault_type;
}

function statusText(e, labels) {
  if (e.fault_category === "client_disconnect") return e.status ? `${e.status} (cancelled)` : "(cancelled)";
  if (e.fault_category === "socket") {
    const what = (labels.get(e.fault_type) || e.fault_type).replace(/^socket: /, "");
    return `(failed) ${what}`;
  }
  if (e.fault_category === "transfer_timeout") return e.status && e.status !== 504 ? `(cut) ${e.status}` : String(e.status || "(cut)");
  if (e.status === 0) return "(no response)";
  return String(e.status);
}

/** File name plus what tells LL-HLS rows apart: _HLS_msn/_HLS_part and the byte range. */
function nameCell(e) {
  const path = (e.path || e.url || "").split("/go-live/").pop();
  const parts = path.split("/");
  const file = parts.pop();
  const dir = parts.join("/");
  const q = (e.url || "").split("?")[1] || "";
  const params = new URLSearchParams(q);
  const chips = [];
  if (params.has("_HLS_msn")) chips.push(h("span.q", `msn ${params.get("_HLS_msn")}`));
  if (params.has("_HLS_part")) chips.push(h("span.q", `part ${params.get("_HLS_part")}`));
  if (params.has("_HLS_skip")) chips.push(h("span.q", `skip ${params.get("_HLS_skip")}`));
  for (const [k, v] of params) if (!k.startsWith("_HLS_")) chips.push(h("span.q.muted", `${k}=${v}`));
  if (e.request_range) chips.push(h("span.q.range", e.request_range.replace(/^bytes=/, "bytes ")));
  return h("td.path", { title: e.url }, h("span.file", file), dir ? h("span.dir.muted", ` ${dir}`) : null, chips);
}

function pickStep(span, maxTicks) {
  for (const s of STEPS) if (span / s <= maxTicks) return s;
  return STEPS[STEPS.length - 1];
}

function tickLabel(t, step) {
  const d = new Date(t);
  const base = d.toLocaleTimeString([], { hour12: false });
  return step < 1 ? `${base}.${String(d.getMilliseconds()).padStart(3, "0").slice(0, 1)}` : base;
}

/**
 * The network-log card.  *faultTypes*: [[type, label]] as in the fault tabs.
 * Returns { el, load(), add(entry), addMarker(marker), markers(), onMarkers(fn), close() }.
 */
export function networkLog(sid, faultTypes) {
  const labels = new Map(faultTypes);
  const msg = errorLine();
  let entries = [];
  let markers = [];
  const markerListeners = [];
  let selectedSeq = null;
  let follow = true;
  let windowEnd = 0; // ms, when not following
  let newestFirst = true;
  let paintPending = false;
  let logStats = null;

  const kind = select("kind", [["", "all kinds"], ["segment", "segments"], ["manifest", "playlists"], ["master_manifest", "masters"], ["other", "other"]], "");
  const faultsOnly = h("input#net-faults-only", { type: "checkbox" });
  const hideReloads = h("input#net-hide-reloads", { type: "checkbox", checked: true });
  const zoom = select("zoom", ZOOMS.map(([v, t]) => [String(v), t]), "30");
  zoom.id = "net-zoom";
  const zoomIn = h("button.small#net-zoom-in", { type: "button", title: "Zoom in" }, "+");
  const zoomOut = h("button.small#net-zoom-out", { type: "button", title: "Zoom out" }, "−");
  const older = h("button.small#net-older", { type: "button", title: "Earlier" }, "◀");
  const newer = h("button.small#net-newer", { type: "button", title: "Later" }, "▶");
  const live = h("button.small#net-live", { type: "button", title: "Follow the live edge" }, "Live");
  const order = h("button.small#net-order", { type: "button", title: "Sort order (by start time)" }, "Newest first");
  const info = h("span.muted.small#net-info");
  const hiddenNote = h("span.muted.small#net-hidden");
  const ruler = h("div.wf-ruler#net-ruler");
  const body = h("tbody#netlog");
  const details = h("aside.net-details#net-details", { hidden: true });

  const legend = h("span.legend",
    h("span.g", "!"), " HTTP fault · ", h("span.g", "!", ICONS.cut()), " socket fault · ",
    h("span.g", "!", ICONS.timer()), " transfer timeout · ", h("span.g", "!", ICONS.back()), " client gave up · ",
    h("span.g.marker-g", ICONS.flag()), " control change · bars: ", h("span.sw.wait"), " waiting (TTFB) ", h("span.sw.recv"), " receiving");

  const zoomValues = ZOOMS.map(([v]) => v);
  function setZoom(v) { zoom.value = String(v); paint(); }
  zoomIn.addEventListener("click", () => {
    const i = zoomValues.indexOf(Number(zoom.value));
    const cur = i < 0 || zoomValues[i] === 0 ? zoomValues.length - 1 : i;
    setZoom(zoomValues[Math.max(0, cur - 1)]);
  });
  zoomOut.addEventListener("click", () => {
    const i = zoomValues.indexOf(Number(zoom.value));
    setZoom(zoomValues[Math.min(zoomValues.length - 1, i + 1)]);
  });
  function pan(dir) {
    const span = Number(zoom.value) * 1000;
    if (!span) return;
    const end = follow ? Date.now() : windowEnd;
    follow = false;
    windowEnd = end + dir * span / 2;
    if (windowEnd >= Date.now()) follow = true;
    paint();
  }
  older.addEventListener("click", () => pan(-1));
  newer.addEventListener("click", () => pan(1));
  live.addEventListener("click", () => { follow = true; paint(); });
  order.addEventListener("click", () => { newestFirst = !newestFirst; order.textContent = newestFirst ? "Newest first" : "Oldest first"; paint(); });
  for (const el of [kind, faultsOnly, hideReloads, zoom]) el.addEventListener("change", paint);

  function shownEntries() {
    return entries.filter((e) => (!kind.value || e.request_kind === kind.value)
      && (!faultsOnly.checked || (e.faulted && e.fault_category !== "client_disconnect")));
  }

  function paint() {
    paintPending = false;
    if (slowTimer) { clearTimeout(slowTimer); slowTimer = null; }
    live.classList.toggle("active", follow);
    const all = shownEntries();
    const spanS = Number(zoom.value);
    const newest = entries.length ? entries[entries.length - 1]._t1 : Date.now();
    let t1 = follow ? Math.max(Date.now(), newest) : windowEnd;
    let t0;
    if (spanS) t0 = t1 - spanS * 1000;
    else {
      t0 = entries.length ? entries.reduce((m, e) => Math.min(m, e._t0), Infinity) : t1 - 30000;
      t1 = Math.max(t1, t0 + 1000);
    }
    const span = Math.max(1, t1 - t0);
    let rows = all.filter((e) => e._t1 >= t0 && e._t0 <= t1);
    const reloads = rows.filter((e) => isBlockingReload(e) && !e.faulted);
    if (hideReloads.checked) { const hidden = new Set(reloads); rows = rows.filter((e) => !hidden.has(e)); }
    hiddenNote.textContent = hideReloads.checked && reloads.length ? `${reloads.length} blocking playlist reloads hidden` : "";
    rows.sort((a, b) => a._t0 - b._t0 || a.seq - b.seq);
    let cut = 0;
    if (rows.length > MAX_ROWS) { cut = rows.length - MAX_ROWS; rows = rows.slice(-MAX_ROWS); }
    const inWindow = markers.filter((m) => m._t >= t0 && m._t <= t1);
    const items = [...rows.map((e) => ({ t: e._t0, e })), ...inWindow.map((m) => ({ t: m._t + 0.0001, m }))]
      .sort((a, b) => a.t - b.t);
    if (newestFirst) items.reverse();

    // ruler: ticks at a step that gives at most 8 labels, plus marker flags
    const maxTicks = Math.max(2, Math.min(8, Math.floor((ruler.clientWidth || 400) / 75)));
    const step = pickStep(span / 1000, maxTicks) * 1000;
    const ticks = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      ticks.push(h("span.tick", { style: { left: `${((t - t0) / span) * 100}%` } }, tickLabel(t, step / 1000)));
    }
    clear(ruler, ticks, inWindow.map((m) => h(`span.mark.${m.kind}`, { style: { left: `${((m._t - t0) / span) * 100}%` }, title: `${fmtClock(m.timestamp)} ${m.text}` })));

    const first = entries.length ? entries[0] : null;
    const stats = logStats ? ` · history bound ${fmtBytes(logStats.max_bytes)} per session` : "";
    info.textContent = `${entries.length} entries${first ? ` since ${fmtClock(first.timestamp)}` : ""} · ${entries.filter((e) => e.faulted).length} faulted · ${rows.length + cut} in view${cut ? ` (newest ${MAX_ROWS} drawn — zoom in)` : ""}${stats}`;

    clear(body, items.map(({ e, m }) => {
      if (m) {
        return h(`tr.marker.${m.kind}`, h("td.glyph", ICONS.flag()), h("td.time", fmtClock(m.timestamp)),
          h("td.marker-text", { colSpan: 7 }, m.text));
      }
      const g = glyphOf(e);
      const bad = failed(e);
      const left = ((e._t0 - t0) / span) * 100;
      const wait = ((e.ttfb_ms || (e.transfer_ms ? 0 : e.total_ms) || 0) / span) * 100;
      const recv = ((e.transfer_ms || 0) / span) * 100;
      const cls = "tr" + (e.faulted ? ".faulted" : "") + (e.fault_category ? "." + e.fault_category : "") + (bad ? ".failed" : "")
        + (e.seq === selectedSeq ? ".selected" : "") + (isBlockingReload(e) ? ".reload" : "");
      return h(cls, { dataset: { seq: String(e.seq) }, title: e.fault_type ? `${faultLabel(e, labels)} (${e.fault_action})` : "" },
        h("td.glyph", g),
        h("td.time", fmtClock(e.timestamp)),
        h("td.kind", e.request_kind === "master_manifest" ? "master" : e.request_kind === "manifest" ? "playlist" : e.request_kind),
        h("td.status" + (bad ? ".bad" : ""), statusText(e, labels)),
        nameCell(e),
        h("td.num", (["socket", "transfer_timeout", "client_disconnect"].includes(e.fault_category) ? "cut at " : "") + fmtBytes(e.bytes_out)),
        h("td.num", `${fmtNum(e.total_ms, e.total_ms < 10 ? 1 : 0)} ms`),
        h("td.wf", h("div.wf-track",
          h("span.wf-wait", { style: { left: `${Math.max(0, left)}%`, width: `${wait}%` } }),
          h("span.wf-recv", { style: { left: `${Math.max(0, left + wait)}%`, width: `${recv}%` } }))),
        h("td.fault", faultLabel(e, labels)));
    }));
  }

  // Painting rebuilds the visible rows: a playing LL-HLS player adds ~20 entries a second,
  // so the log repaints every 0.4 s while on screen and only every 3 s while scrolled away.
  let visible = true;
  let slowTimer = null;
  function schedule() {
    if (paintPending) return;
    paintPending = true;
    if (visible) setTimeout(paint, 400);
    else slowTimer = setTimeout(paint, 3000);
  }
  // the window follows the clock even without new entries
  const ticker = setInterval(() => { if (follow) schedule(); }, 1000);

  function prepare(e) {
    e._t0 = Date.parse(e.timestamp);
    e._t1 = e._t0 + (e.total_ms || 0);
    return e;
  }
  function prepMarker(m) { m._t = Date.parse(m.timestamp); return m; }

  async function showDetails(seq) {
    selectedSeq = seq;
    paint();
    const e = entries.find((x) => x.seq === seq);
    if (!e) return;
    details.hidden = false;
    const close = h("button.small", { type: "button", title: "Close" }, "×");
    close.addEventListener("click", () => { details.hidden = true; selectedSeq = null; paint(); });
    const total = Math.max(e.total_ms || 0, 0.001);
    const phases = [["Connect (TCP accept → request)", e.connect_ms, "conn"], ["TLS", e.tls_ms, "tls"],
      ["Waiting for server response (TTFB)", e.ttfb_ms, "wait"], ["Content download", e.transfer_ms, "recv"]];
    const timing = h("table.timing", h("tbody", phases.map(([n, v, c]) => h("tr",
      h("td", n), h("td.num", `${fmtNum(v, 1)} ms`),
      h("td.bar", h("span.sw." + c, { style: { width: `${Math.min(100, (v / total) * 100)}%` } })))),
      h("tr.total", h("td", "Total (request parsed → last byte)"), h("td.num", `${fmtNum(e.total_ms, 1)} ms`), h("td"))));
    const hdrs = h("div.headers", h("p.muted", "Loading headers…"));
    const general = h("dl.kv",
      h("dt", "URL"), h("dd.mono", e.url),
      h("dt", "Method"), h("dd", e.method),
      h("dt", "Status"), h("dd", statusText(e, labels)),
      h("dt", "Kind"), h("dd", e.request_kind),
      h("dt", "Started"), h("dd", fmtClock(e.timestamp)),
      h("dt", "Body bytes sent"), h("dd", `${fmtBytes(e.bytes_out)} (${e.bytes_out} B)`),
      h("dt", "Request bytes"), h("dd", String(e.bytes_in)),
      e.request_range ? [h("dt", "Range"), h("dd.mono", e.request_range)] : null,
      e.fault_category ? [h("dt", "Fault"), h("dd.fault", `${faultLabel(e, labels)} — ${e.fault_action} (${e.fault_category})`)] : null,
      h("dt", "Play id"), h("dd", e.play_id || "–"));
    clear(details, h("div.details-head", h("h3", `#${e.seq} ${(e.path || "").split("/").pop()}`), close),
      h("h4", "General"), general, h("h4", "Timing"), timing, hdrs);
    try {
      const full = await get(`/api/session/${enc(sid)}/network/entry/${e.seq}`);
      const list = (items) => (items && items.length ? h("dl.kv.hdrs", items.map((x) => [h("dt", x.name), h("dd.mono", x.value)])) : h("p.muted", "none (nothing was sent)"));
      clear(hdrs, h("h4", "Response headers"), list(full.response_headers), h("h4", "Request headers"), list(full.request_headers));
    } catch (err) {
      clear(hdrs, h("p.msg.error", `Headers unavailable: ${err.message}`));
    }
  }
  body.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr[data-seq]");
    if (tr) showDetails(Number(tr.dataset.seq));
  });

  const el = h("section.card#network-log", h("h2", "Network log"),
    h("div.controls-row", kind, h("label.inline", faultsOnly, " faults only"), h("label.inline", hideReloads, " hide blocking playlist reloads"), hiddenNote),
    h("div.controls-row", h("span.muted.small", "Window"), zoomOut, zoom, zoomIn, older, newer, live, order, info),
    legend,
    h("div.net-wrap",
      h("div.table-scroll.net-scroll", h("table.grid.netlog",
        h("thead", h("tr", [["", ""], ["Start", ""], ["Kind", ".kind"], ["Status", ""], ["Name", ""], ["Size", ""], ["Time", ""]].map(([c, k]) => h("th" + k, c)),
          h("th.wf-head", h("div", "Waterfall"), ruler), h("th", "Fault"))),
        body)),
      details),
    msg);

  const seen = new IntersectionObserver((items) => {
    visible = items.some((x) => x.isIntersecting);
    if (visible && slowTimer) { clearTimeout(slowTimer); slowTimer = null; paint(); }
  });
  seen.observe(el);

  return {
    el,
    async load() {
      try {
        const net = await get(`/api/session/${enc(sid)}/network?limit=${KEEP}`);
        entries = (net.entries || []).map(prepare);
        markers = (net.markers || []).map(prepMarker);
        logStats = net.log || null;
        for (const fn of markerListeners) fn(markers);
        paint();
      } catch (err) { msg.show(err); }
    },
    add(e) {
      if (e.seq !== undefined && entries.length && entries[entries.length - 1].seq >= e.seq) return;
      entries.push(prepare(e));
      if (entries.length > KEEP) entries.splice(0, entries.length - KEEP);
      schedule();
    },
    addMarker(m) {
      markers.push(prepMarker(m));
      for (const fn of markerListeners) fn(markers);
      schedule();
    },
    markers: () => markers,
    entries: () => entries,
    onMarkers(fn) { markerListeners.push(fn); },
    close() { clearInterval(ticker); seen.disconnect(); },
  };
}
