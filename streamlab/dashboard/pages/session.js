// Testing session (#/session/<player_id>?content=&protocol=&duration=&timeline=&engine=).
//
// Creates or gets the session (POST /api/sessions), plays through the session's own port
// and posts player metrics once a second.  Controls: HTTP fault tabs, transport, content
// rewriting, server timeouts, shaping sliders and patterns, groups.  Live: the session over
// SSE (/api/sessions/stream), the network log over SSE (/api/session/{id}/network/stream),
// charts of bitrate / buffer / RTT.

import { get, post, enc } from "../js/api.js";
import {
  h, clear, card, errorLine, guarded, pageHeader, select, fileName, fmtNum, fmtBytes, fmtClock, copyButton, badge, loadScript,
  randomId,
} from "../js/ui.js";
import { sse } from "../js/live.js";
import { createPlayer, ENGINES, TIMELINES, enginesFor, streamPath, liveControls } from "../js/player.js";
import { link, setQuery } from "../js/app.js";
import { SessionControls } from "../js/controls.js";
import { statsTable } from "./playback.js";
import { networkLog } from "../js/netlog.js";
import { sessionCharts } from "../js/charts.js";

const FAULT_TYPES = [
  ["none", "none (disarmed)"],
  ["404", "404 Not Found"], ["403", "403 Forbidden"], ["410", "410 Gone"], ["500", "500 Server Error"],
  ["502", "502 Bad Gateway"], ["503", "503 Unavailable"], ["504", "504 Gateway Timeout"],
  ["timeout", "timeout (504)"], ["connection_refused", "connection refused (503)"], ["dns_failure", "DNS failure (502)"],
  ["rate_limiting", "rate limiting (429 + Retry-After)"],
  ["request_connect_reset", "socket: reset on connect"], ["request_connect_hang", "socket: hang on connect"],
  ["request_connect_delayed", "socket: delayed close on connect"],
  ["request_first_byte_reset", "socket: reset after headers"], ["request_first_byte_hang", "socket: hang after headers"],
  ["request_first_byte_delayed", "socket: delayed close after headers"],
  ["request_body_reset", "socket: reset mid-body"], ["request_body_hang", "socket: hang mid-body"],
  ["request_body_delayed", "socket: delayed close mid-body"],
  ["corrupted", "corrupted body (zeros)"],
];
const MODES = [["requests", "requests (C faults, then clean until F)"], ["seconds", "seconds (fault C s every F s)"],
  ["failures_per_seconds", "failures per seconds (C per F s window)"]];
const HTTP_TABS = [["all", "All"], ["segment", "Segment"], ["manifest", "Manifest"], ["master_manifest", "Master"]];
const RULE_FIELDS = (p) => [`${p}_failure_type`, `${p}_failure_mode`, `${p}_consecutive_failures`, `${p}_failure_frequency`,
  `${p}_failure_probability`, `${p}_failure_urls`];

// Manifest faults (docs/manifest-faults.md): [type, label, group, what the value means, its default]
export const MANIFEST_FAULTS = [
  ["none", "none (disarmed)", "", null, null],
  ["stale_playlist", "stale playlist (live edge stops, still 200)", "HLS media playlists", "seconds frozen", 10],
  ["sequence_jump", "media sequence jumps forward", "HLS media playlists", "sequence numbers added", 10],
  ["sequence_regression", "media sequence goes back", "HLS media playlists", "sequence numbers taken away", 3],
  ["remove_segment", "a segment is missing", "HLS media playlists", null, null],
  ["duplicate_segment", "a segment is listed twice", "HLS media playlists", null, null],
  ["gap_segments", "EXT-X-GAP segments", "HLS media playlists", "segments marked as gaps", 1],
  ["wrong_extinf", "wrong #EXTINF duration", "HLS media playlists", "seconds (0 = twice the real one)", 0],
  ["missing_extinf", "missing #EXTINF", "HLS media playlists", null, null],
  ["wrong_targetduration", "TARGETDURATION too small", "HLS media playlists", "value (0 = half the real one)", 0],
  ["missing_discontinuity", "discontinuity without its tag (?timeline=discontinuity, TS)", "HLS media playlists", null, null],
  ["pdt_drift", "PROGRAM-DATE-TIME drifts", "HLS media playlists", "seconds of drift per minute", 10],
  ["variant_removed", "a variant disappears from the master", "Master (HLS and DASH)", null, null],
  ["mpd_publish_time_frozen", "MPD publishTime stops advancing", "DASH MPDs", null, null],
  ["mpd_ast_jump", "MPD availabilityStartTime jumps", "DASH MPDs", "seconds later", 10],
];
const MANIFEST_FAULT_FIELDS = ["manifest_fault_type", "manifest_fault_value", "manifest_fault_variants"];

/** A <select> of the manifest fault types, grouped by what they apply to. */
function manifestFaultSelect() {
  const sel = h("select", { name: "manifest_fault_type" });
  const groups = new Map();
  for (const [value, label, group] of MANIFEST_FAULTS) {
    const opt = h("option", { value }, label);
    if (!group) { sel.append(opt); continue; }
    if (!groups.has(group)) { groups.set(group, h("optgroup", { label: group })); sel.append(groups.get(group)); }
    groups.get(group).append(opt);
  }
  return sel;
}

/** What the value of a manifest fault means ("seconds frozen · 0 = 10"), or null when unused. */
export function manifestValueHint(type) {
  const f = MANIFEST_FAULTS.find((x) => x[0] === type);
  if (!f || !f[3]) return null;
  return f[4] ? `${f[3]} · 0 = ${f[4]}` : f[3];
}


const KIND_OF_PREFIX = { segment: "segment", manifest: "manifest", master_manifest: "master_manifest" };
const KIND_WORDS = { all: "requests", segment: "segment requests", manifest: "playlist requests", master_manifest: "master requests" };

/**
 * "Now ~600 segment requests/min (every LL-HLS part, audio and video, counts) → this rule
 * fires about 60 times a minute": the rate is measured over the last minute of the log.
 */
export function expectedFaults(prefix, rule, entries, now) {
  const kind = KIND_OF_PREFIX[prefix];
  const since = now - 60000;
  let n = 0;
  let parts = 0;
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i];
    const t = Date.parse(e.timestamp);
    if (t < since) break;
    if (kind && e.request_kind !== kind) continue;
    n += 1;
    if (/part|_HLS_msn/.test(e.url || "")) parts += 1;
  }
  const what = KIND_WORDS[prefix];
  if (!n) return `No ${what} in the last minute: the rate of faults depends on the player (an LL-HLS player makes about 10 segment requests a second — every part counts).`;
  const rate = `Now ~${n} ${what}/min${parts > n / 2 ? " (LL-HLS: every part, audio and video, is a request)" : ""}`;
  if (!rule.type || rule.type === "none") return `${rate}.`;
  if (rule.p > 0) return `${rate} → with probability ${rule.p} this rule fires about ${Math.round(n * rule.p)} times a minute (if every request is in scope), drawn from the session seed.`;
  const c = Math.max(0, rule.c || 0);
  const f = Math.max(0, rule.f || 0);
  let perMin;
  if (f === 0) return `${rate} → one shot: ${c || "every"} ${rule.mode === "seconds" ? "s" : "request(s)"} then it disarms.`;
  if (rule.mode === "seconds") perMin = c === 0 ? n : n * Math.min(1, c / f);
  else if (rule.mode === "failures_per_seconds") perMin = c === 0 ? n : Math.min(n, (60 / f) * c);
  else perMin = c === 0 ? n : n * (c / (c + Math.max(f - c, 1)));
  return `${rate} → with these numbers this rule fires about ${Math.round(perMin)} times a minute (if every request is in scope).`;
}

/** What a session last played, from its manifest URLs: {content, protocol, duration, timeline} or {}. */
export function playedBy(s) {
  const url = s.master_manifest_url || s.manifest_url || s.last_request_url || "";
  const m = /\/go-live\/([^/?]+)\/(master(?:_(2s|6s))?\.m3u8|manifest(?:_(2s|6s))?\.mpd|playlist_(?:(2s|6s)_)?)/.exec(url);
  if (!m) {
    const any = /\/go-live\/([^/?]+)\//.exec(url);
    return any ? { content: decodeURIComponent(any[1]) } : {};
  }
  const dash = m[2].startsWith("manifest");
  const t = /[?&]timeline=(continuous|discontinuity)(?:&|$)/.exec(url);
  return { content: decodeURIComponent(m[1]), protocol: dash ? "dash" : "hls", duration: m[3] || m[4] || m[5] || "ll",
    timeline: t ? t[1] : "" };
}

/** The words and the class of a session's lifetime (session_state from the API). */
export function lifetimeText(s, watchedHere = false) {
  const idle = s.session_idle_s !== undefined ? `idle ${Math.round(s.session_idle_s)} s` : "idle";
  switch (s.session_state) {
    case "idle_kept": return ["Kept: stays while idle until released", "ok"];
    case "idle_watched": return [watchedHere ? `${idle[0].toUpperCase()}${idle.slice(1)} — stays while this page is open` : `${idle[0].toUpperCase()}${idle.slice(1)} — a page is watching it`, "info"];
    case "expiring": return [`Expires in ${Math.ceil(s.session_expires_in_s)} s (idle with controls set)`, "error"];
    default:
      if (s.session_expires_in_s === null || s.session_expires_in_s === undefined) return ["Active", "ok"];
      return [`Active · expires ${Math.ceil(s.session_expires_in_s)} s after its last request`, "muted"];
  }
}

function picker(root, route) {
  const msg = errorLine();
  const pid = h("input#new-player-id", { type: "text", value: randomId(), required: true });
  const form = h("form.inline", h("label.inline", "Player id ", pid), " ", h("button.primary", { type: "submit" }, "Open session"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = Object.fromEntries(route.query.entries());
    location.hash = link("session", pid.value.trim(), q);
  });
  const list = h("ul.session-pick");
  const feed = sse("/api/sessions/stream", {
    sessions(d) {
      clear(list, (d.sessions || []).map((s) => h("li", h("a", { href: link("session", s.player_id) }, s.player_id),
        h("span.muted", ` · #${s.session_id} · port ${s.x_forwarded_port_external} · ${s.all_requests_count} requests`))));
      if (!list.children.length) list.append(h("li.muted", "No live sessions."));
    },
  });
  clear(root, pageHeader("Testing session", "Give a player its own port, then break it on purpose."),
    card("Open a session", h("p", "A session is identified by its player id: the same id gets the same session (port, faults, log) for as long as it lives. Sessions are kept while a page watches them or \"keep\" is on; one with faults or shaping set counts down visibly before it expires."), form, msg),
    card("Live sessions", list));
  return () => feed.close();
}

export async function mount(root, route) {
  const playerId = route.args[0];
  if (!playerId) return picker(root, route);
  const q = route.query;
  const topMsg = errorLine();
  clear(root, pageHeader(`Session · ${playerId}`, "Creating the session…"), topMsg);

  let session;
  try {
    session = await post("/api/sessions", { player_id: playerId });
  } catch (err) {
    topMsg.show(err);
    return undefined;
  }
  const sid = session.session_id;
  const ctl = new SessionControls(sid);
  const cleanups = [];
  let liveSessions = [];
  let netlogRef = null; // the network log (created below) holds the entries and the markers

  // ------------------------------------------------------------------ player
  let items = [];
  try { items = await get("/api/content"); } catch (err) { topMsg.show(err); }
  const names = items.map((i) => i.name);
  // reopening a session plays what it had (unless the link says otherwise)
  const had = playedBy(session);
  const hadContent = had.content && names.includes(had.content) ? had : {};
  const content = select("content", names.length ? names : [["", "no content"]], q.get("content") || hadContent.content || names[0]);
  const protocol = select("protocol", [["hls", "HLS"], ["dash", "DASH"]], q.get("protocol") || hadContent.protocol || "hls");
  const duration = select("duration", [["ll", "LL"], ["2s", "2 s"], ["6s", "6 s"]], q.get("duration") || hadContent.duration || "ll");
  // no label beside the selects here: the options say what they choose
  const timeline = select("timeline", TIMELINES.map(([v, text]) => [v, `Loops: ${text.toLowerCase()}`]),
    q.get("timeline") || hadContent.timeline || "");
  const engine = select("engine", ENGINES, q.get("engine") || "hls");
  const video = h("video#session-player", { muted: true, playsinline: true, autoplay: true });
  const vControls = liveControls(video);
  const playerErrors = h("ul.player-errors", h("li.none.muted", "none so far"));
  const stats = statsTable();
  const urlLine = h("div.url-line");
  const restart = h("button.small", { type: "button" }, "Restart player");
  const stopBtn = h("button.small", { type: "button" }, "Stop player");
  let player = null;

  function sessionUrl() {
    const port = (ctl.session || session).x_forwarded_port_external;
    return `${location.protocol}//${location.hostname}:${port}${streamPath(content.value, protocol.value, duration.value, timeline.value)}`;
  }

  async function startPlayer() {
    if (player) { player.destroy(); player = null; }
    clear(playerErrors, h("li.none", "none so far"));
    const ok = enginesFor(protocol.value);
    if (!ok.includes(engine.value)) engine.value = ok[0];
    setQuery({ content: content.value, protocol: protocol.value, duration: duration.value, timeline: timeline.value, engine: engine.value });
    if (!content.value) return;
    const url = sessionUrl();
    clear(urlLine, "Session URL: ", h("code", url), " ", copyButton(url));
    try {
      player = await createPlayer(video, url, {
        engine: engine.value, lowLatency: duration.value === "ll", muted: true,
        onError(text, fatal) {
          playerErrors.querySelector(".none")?.remove();
          playerErrors.prepend(h("li" + (fatal ? ".fatal" : ""), `${new Date().toLocaleTimeString()} ${text}`));
          while (playerErrors.children.length > 15) playerErrors.lastChild.remove();
        },
      });
    } catch (err) {
      playerErrors.querySelector(".none")?.remove();
      playerErrors.prepend(h("li.fatal", String(err.message || err)));
    }
  }
  for (const s of [content, protocol, duration, timeline, engine]) s.addEventListener("change", startPlayer);
  restart.addEventListener("click", startPlayer);
  stopBtn.addEventListener("click", () => { if (player) { player.destroy(); player = null; } });

  // metrics: once a second
  let lastStats = null;
  const metricsTimer = setInterval(() => {
    if (!player) return;
    const s = player.stats();
    lastStats = s;
    stats.update(s);
    const set = {
      player_metrics_event_time: Date.now(),
      player_metrics_engine: player.engine,
      player_metrics_state: s.state,
      player_metrics_buffer_s: s.buffer_s,
      player_metrics_playhead_s: s.playhead_s,
      player_metrics_bitrate_mbps: s.bitrate_mbps,
      player_metrics_resolution: s.resolution,
      player_metrics_live_latency_s: s.latency_s,
      player_metrics_playhead_wallclock_ms: s.playhead_wallclock_ms,
      player_metrics_dropped_frames: s.dropped_frames,
      player_metrics_stalls: s.stalls,
      player_metrics_stall_seconds_total: s.stall_seconds_total,
      player_metrics_switches: s.switches,
      player_metrics_switches_up: s.switches_up,
      player_metrics_switches_down: s.switches_down,
      player_metrics_error: s.error,
    };
    for (const k of Object.keys(set)) if (set[k] === null || set[k] === undefined) delete set[k];
    post(`/api/session/${enc(sid)}/metrics`, { set }).catch(() => { /* shown by the session banner */ });
  }, 1000);
  cleanups.push(() => clearInterval(metricsTimer));

  // ------------------------------------------------------------------ counters
  const counters = h("dl.kv.counters");
  const faultCounts = h("div.variants");
  const goneBanner = h("div.banner.error", { hidden: true }, "This session no longer exists on the server (deleted or expired). ",
    h("a", { href: "javascript:location.reload()" }, "Recreate it"));

  function renderCounters(s) {
    const rows = [
      ["Session", `#${s.session_id} · port ${s.x_forwarded_port_external}${s.x_forwarded_port !== s.x_forwarded_port_external ? ` (internal ${s.x_forwarded_port})` : ""}`],
      ["Requests", `${s.all_requests_count} (segments ${s.segments_count}, playlists ${s.manifest_requests_count}, masters ${s.master_manifest_requests_count})`],
      ["Faults injected", h("strong#fault-count-total", String(s.fault_count_total))],
      ["Throughput", `${fmtNum(s.mbps_transfer_rate)} Mbps now · last segment ${fmtNum(s.mbps_transfer_complete)} Mbps · shaper ${fmtNum(s.mbps_shaper_rate)} / ${fmtNum(s.mbps_shaper_avg)} Mbps`],
      ["Bytes out", fmtBytes(s.bytes_out_total)],
      ["RTT", `${fmtNum(s.client_rtt_ms, 1)} ms (min ${fmtNum(s.client_rtt_min_ms, 1)}, max ${fmtNum(s.client_rtt_max_ms, 1)}, var ${fmtNum(s.client_rtt_var_ms, 1)}, rto ${fmtNum(s.client_rto_ms, 0)})${s.client_rtt_stale ? " · stale" : ""}`],
      ["Rendition (server)", `${s.server_video_rendition || "–"} ${s.server_video_rendition_mbps ? fmtNum(s.server_video_rendition_mbps) + " Mbps" : ""} · loops ${s.loop_count_server}`],
      ["Player", `${s.player_metrics_state || "–"} · buffer ${fmtNum(s.player_metrics_buffer_s, 1)} s${s.player_metrics_true_offset_s !== undefined ? ` · offset ${fmtNum(s.player_metrics_true_offset_s, 1)} s` : ""}`],
      ["Client", `${s.player_ip || "–"} · ${(s.user_agent || "").slice(0, 50)}`],
      ["Last request", `${fmtClock(s.last_request)} ${s.last_request_url || ""}`],
    ];
    clear(counters, rows.map(([k, v]) => [h("dt", k), h("dd", v)]));
    clear(faultCounts, Object.entries(s).filter(([k, v]) => k.startsWith("fault_count_") && k !== "fault_count_total" && v)
      .map(([k, v]) => h("span.chip.fault", `${k.slice(12)}: ${v}`)));
  }

  // ------------------------------------------------------------------ fault tabs
  const tabBar = h("div.tabs", { role: "tablist" });
  const tabBody = h("div.tab-body");
  const tabs = new Map();
  const allBanner = h("div.banner.warn#all-override", { hidden: true });

  function showTab(name) {
    for (const [n, t] of tabs) {
      t.button.classList.toggle("active", n === name);
      t.button.setAttribute("aria-selected", n === name ? "true" : "false");
      t.panel.hidden = n !== name;
    }
    setQuery({ tab: name });
  }

  function addTab(name, label, panel) {
    const button = h("button.tab", { type: "button", role: "tab", dataset: { tab: name } }, label);
    button.addEventListener("click", () => showTab(name));
    tabBar.append(button);
    tabBody.append(panel);
    tabs.set(name, { button, panel });
  }

  function unitLabels(p, cLabel, fLabel) {
    const mode = ctl.controls.get(`${p}_failure_mode`).read();
    cLabel.textContent = mode === "seconds" ? "Fault for (s) — C" : "Consecutive failures — C";
    fLabel.textContent = mode === "requests" ? "Every (requests) — F" : "Every (s) — F";
  }

  function httpTab(p, label) {
    const msg = errorLine();
    const type = select(`${p}_failure_type`, FAULT_TYPES, "none");
    const mode = select(`${p}_failure_mode`, MODES, "requests");
    const cons = h("input", { type: "number", min: "0", step: "any", value: "1" });
    const freq = h("input", { type: "number", min: "0", step: "any", value: "10" });
    const prob = h("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0" });
    const urls = h("input", { type: "text", placeholder: "All (empty) — or variants, file names, path parts, audio" });
    const variants = h("div.variants.small");
    const cLabel = h("span.label");
    const fLabel = h("span.label");
    const apply = h("button.primary", { type: "button", id: `apply-${p}` }, "Apply");
    const disarm = h("button", { type: "button" }, "Disarm");
    const count = h("span.muted");
    const expect = h("p.small.expect", { dataset: { expect: p } });
    const f = (lbl, ctlEl, name, hint) => h("label.field", lbl instanceof Node ? lbl : h("span.label", lbl), ctlEl, ctl.bind(name, ctlEl, name.endsWith("_urls") ? "list" : ctlEl.type === "number" ? "number" : "text"), hint ? h("small.hint", hint) : null);
    const panel = h("div.tab-panel", { dataset: { panel: p } },
      p !== "all" ? h("div.banner.warn.all-note", { hidden: true }) : h("p.muted", "The All rule applies to every request of the session and, while armed, overrides the Segment / Manifest / Master rules."),
      h("div.form-grid",
        f("Fault type", type, `${p}_failure_type`),
        f("Timing mode", mode, `${p}_failure_mode`),
        f(cLabel, cons, `${p}_consecutive_failures`, "0 = every matching request"),
        f(fLabel, freq, `${p}_failure_frequency`, "0 = one shot, then disarm"),
        f("Probability (0–1)", prob, `${p}_failure_probability`, "0 = use C / F; above 0 each matching request faults with this chance, drawn from the seed"),
        h("label.field.wide", h("span.label", "Scope (URLs)"), urls, ctl.bind(`${p}_failure_urls`, urls, "list"), variants)),
      expect,
      h("div.row", apply, disarm, count), msg);
    // what the numbers mean for the stream as it is now (a "request" is every part, every
    // audio and video request and every blocking reload)
    let expectAt = 0;
    const paintExpect = (force) => {
      const now = Date.now();
      if (!force && now - expectAt < 1000) return;
      expectAt = now;
      expect.textContent = expectedFaults(p, {
        type: type.value, mode: mode.value, c: Number(cons.value), f: Number(freq.value), p: Number(prob.value),
      }, netlogRef ? netlogRef.entries() : [], now);
    };
    for (const el of [type, mode, cons, freq, prob]) el.addEventListener("input", () => paintExpect(true));
    // Re-binding the same field twice would register duplicates; f() above already bound
    // every control except urls, which is bound in the wide label.
    mode.addEventListener("change", () => unitLabels(p, cLabel, fLabel));
    apply.addEventListener("click", () => guarded(null, apply, () => ctl.send(RULE_FIELDS(p), msg, { label: `${label} rule` })));
    disarm.addEventListener("click", () => guarded(null, disarm, () => ctl.send([`${p}_failure_type`], msg, { values: { [`${p}_failure_type`]: "none" }, label: "Disarm" })));
    ctl.onUpdate((s) => {
      unitLabels(p, cLabel, fLabel);
      paintExpect(false);
      const armed = s[`${p}_failure_type`] && s[`${p}_failure_type`] !== "none";
      panel.classList.toggle("armed", !!armed);
      tabs.get(p).button.classList.toggle("armed", !!armed);
      const note = panel.querySelector(".all-note");
      if (note) {
        note.hidden = !(s.all_failure_type && s.all_failure_type !== "none");
        note.textContent = `The All rule is armed (${s.all_failure_type}): it governs every request, so this ${label} rule does not apply until All is disarmed.`;
      }
      const vs = (s.manifest_variants || []).map((v) => fileName(v.url).replace(/^playlist_(?:2s_|6s_)?|\.m3u8$/g, ""));
      const key = JSON.stringify(vs);
      if (variants.dataset.key !== key) {
        variants.dataset.key = key;
        clear(variants, vs.length ? "Add: " : "", [...vs, "audio"].map((v) => {
          const b = h("button.chip.small", { type: "button" }, v);
          b.addEventListener("click", () => {
            const cur = urls.value.split(",").map((x) => x.trim()).filter(Boolean);
            if (!cur.includes(v)) cur.push(v);
            urls.value = cur.join(", ");
            urls.dispatchEvent(new Event("input"));
          });
          return b;
        }));
      }
    });
    return panel;
  }

  // The f() helper binds controls; make sure urls is bound only once.
  const origBind = ctl.bind.bind(ctl);
  ctl.bind = (field, el, kind) => (ctl.controls.has(field) && ctl.controls.get(field).el === el ? h("small.field-error") : origBind(field, el, kind));

  for (const [p, label] of HTTP_TABS) addTab(p, label, h("div"));
  // build panels after tabs exist (onUpdate handlers reference tab buttons)
  for (const [p, label] of HTTP_TABS) {
    const panel = httpTab(p, label);
    tabs.get(p).panel.replaceWith(panel);
    tabs.get(p).panel = panel;
  }

  // transport tab
  {
    const msg = errorLine();
    const type = select("transport_failure_type", [["none", "none"], ["drop", "drop packets (DROP)"], ["reject", "reject (RST / ICMP)"]], "none");
    const mode = select("transport_failure_mode", [["failures_per_seconds", "seconds (C s out of every F s)"], ["failures_per_packets", "packets (C packets)"]], "failures_per_seconds");
    const cons = h("input", { type: "number", min: "0", step: "any" });
    const freq = h("input", { type: "number", min: "0", step: "any" });
    const runtime = h("div.muted");
    const fields = ["transport_failure_type", "transport_failure_mode", "transport_consecutive_failures", "transport_failure_frequency"];
    const apply = h("button.primary#apply-transport", { type: "button" }, "Apply");
    const disarm = h("button", { type: "button" }, "Disarm");
    apply.addEventListener("click", () => guarded(null, apply, () => ctl.send(fields, msg, { label: "Transport fault" })));
    disarm.addEventListener("click", () => guarded(null, disarm, () => ctl.send(["transport_failure_type"], msg, { values: { transport_failure_type: "none" } })));
    const panel = h("div.tab-panel", { dataset: { panel: "transport" } },
      h("p.muted", "Cuts the session's TCP port below HTTP: the player sees stalls and resets, not error codes."),
      h("div.form-grid",
        h("label.field", h("span.label", "Transport fault"), type, ctl.bind("transport_failure_type", type)),
        h("label.field", h("span.label", "Mode"), mode, ctl.bind("transport_failure_mode", mode)),
        h("label.field", h("span.label", "Consecutive — C"), cons, ctl.bind("transport_consecutive_failures", cons, "number"), h("small.hint", "0 = hold until disarmed")),
        h("label.field", h("span.label", "Every (s) — F"), freq, ctl.bind("transport_failure_frequency", freq, "number"))),
      h("div.row", apply, disarm), runtime, msg);
    ctl.onUpdate((s) => {
      const armed = s.transport_failure_type && s.transport_failure_type !== "none";
      tabs.get("transport").button.classList.toggle("armed", !!armed);
      runtime.textContent = armed ? `${s.transport_fault_active ? "ACTIVE now" : "armed, waiting"}${s.transport_fault_started_at ? ` since ${fmtClock(s.transport_fault_started_at)}` : ""} · dropped ${s.transport_fault_drop_packets} · rejected ${s.transport_fault_reject_packets} packets` : "";
    });
    addTab("transport", "Transport", panel);
  }

  // content tab
  {
    const msg = errorLine();
    const strip = h("input", { type: "checkbox" });
    const stripAvg = h("input", { type: "checkbox" });
    const over = h("input", { type: "checkbox" });
    const offset = select("content_live_offset", [["0", "none"], ["6", "6 s"], ["18", "18 s"], ["24", "24 s"], ["60", "60 s"]], "0");
    const allowedBox = h("div.variants");
    let allowed = [];
    const allowedCtl = {
      read: () => allowed.slice(),
      write: (v) => { allowed = Array.isArray(v) ? v.slice() : []; paintAllowed(); },
    };
    const allowedAnchor = h("span");
    function paintAllowed() {
      const vs = (ctl.session && ctl.session.manifest_variants) || [];
      clear(allowedBox, vs.length ? vs.map((v) => {
        const cb = h("input", { type: "checkbox", checked: !allowed.length || allowed.includes(v.url) });
        cb.addEventListener("change", () => {
          const all = vs.map((x) => x.url);
          const cur = new Set(allowed.length ? allowed : all);
          if (cb.checked) cur.add(v.url); else cur.delete(v.url);
          allowed = cur.size === all.length ? [] : all.filter((x) => cur.has(x));
          allowedAnchor.dispatchEvent(new Event("change"));
          ctl.send(["content_allowed_variants"], msg, { label: "Variant filter" });
        });
        return h("label.chip", cb, ` ${fileName(v.url)} ${v.resolution || ""} ${fmtNum(v.bandwidth / 1e6)} Mbps`);
      }) : h("span.muted", "The ladder is known after the player's first master request."));
    }
    const numOffset = { read: () => Number(offset.value), write: (v) => {
      const s = String(v ?? 0);
      if (![...offset.options].some((o) => o.value === s)) offset.append(h("option", { value: s }, `${s} s`));
      offset.value = s;
    } };
    const instant = (el, field, kind) => {
      const err = ctl.bind(field, el, kind);
      el.addEventListener("change", () => ctl.send([field], msg));
      return err;
    };
    const panel = h("div.tab-panel", { dataset: { panel: "content" } },
      h("p.muted", "Edits of the master playlist / MPD this session receives (applies to the next master request)."),
      h("div.checks",
        h("label", strip, " strip CODECS", instant(strip, "content_strip_codecs", "checkbox")),
        h("label", stripAvg, " strip AVERAGE-BANDWIDTH", instant(stripAvg, "content_strip_average_bandwidth", "checkbox")),
        h("label", over, " overstate BANDWIDTH by 10 %", instant(over, "content_overstate_bandwidth", "checkbox"))),
      h("label.field", h("span.label", "Live start offset (EXT-X-START / suggestedPresentationDelay)"), offset, instant(offset, "content_live_offset", numOffset)),
      h("div.field", h("span.label", "Allowed variants"), allowedBox, allowedAnchor, ctl.bind("content_allowed_variants", allowedAnchor, allowedCtl)),
      msg);
    ctl.onUpdate(() => paintAllowed());
    addTab("content", "Content", panel);
  }

  // manifest faults tab: faults in the text of the playlists / MPDs (docs/manifest-faults.md)
  {
    const msg = errorLine();
    const type = manifestFaultSelect();
    const value = h("input#manifest-fault-value", { type: "number", min: "0", max: "86400", step: "any", value: "0" });
    const valueHint = h("small.hint");
    const variants = h("input#manifest-fault-variants", { type: "text", placeholder: "empty = the top rung" });
    const chips = h("div.variants.small");
    const variantsField = h("label.field.wide", h("span.label", "Variants to remove"), variants,
      ctl.bind("manifest_fault_variants", variants, "list"), chips,
      h("small.hint", "URIs, file names or rung ids; the last rung is never removed"));
    const status = h("div.muted#manifest-fault-status");
    const apply = h("button.primary#apply-manifest-fault", { type: "button" }, "Apply");
    const rearm = h("button#rearm-manifest-fault", { type: "button", title: "Send the same values again: the fault's memory (arm time, target segment, frozen playlist) starts over" }, "Re-arm");
    const disarm = h("button#disarm-manifest-fault", { type: "button" }, "Disarm");
    const paintValue = () => {
      const hint = manifestValueHint(type.value);
      value.disabled = !hint;
      valueHint.textContent = hint || "not used by this fault";
      variantsField.hidden = type.value !== "variant_removed";
    };
    type.addEventListener("change", paintValue);
    apply.addEventListener("click", () => guarded(null, apply, () => ctl.send(MANIFEST_FAULT_FIELDS, msg, { label: "Manifest fault" })));
    rearm.addEventListener("click", () => guarded(null, rearm, () => ctl.send(MANIFEST_FAULT_FIELDS, msg, { always: true, label: "Manifest fault re-armed; it" })));
    disarm.addEventListener("click", () => guarded(null, disarm, async () => {
      const s = await ctl.send(["manifest_fault_type"], msg, { values: { manifest_fault_type: "none" }, label: "Disarm" });
      if (!s) return;
      // an unsent edit of the value or the variants is dropped with the fault
      for (const f of MANIFEST_FAULT_FIELDS) ctl.settle(f);
      ctl.clearErrors(MANIFEST_FAULT_FIELDS);
      ctl.update(s, { force: MANIFEST_FAULT_FIELDS });
    }));
    const panel = h("div.tab-panel", { dataset: { panel: "manifest_fault" } },
      h("p.muted", "Breaks the text of the playlists and MPDs this session serves (200 answers): a live edge that stops, a sequence that jumps, a missing segment… Only this session; rewritten answers are flagged in the network log."),
      h("div.form-grid",
        h("label.field", h("span.label", "Manifest fault"), type, ctl.bind("manifest_fault_type", type)),
        h("label.field", h("span.label", "Value"), value, ctl.bind("manifest_fault_value", value, "number"), valueHint),
        variantsField),
      h("div.row", apply, rearm, disarm), status, msg);
    ctl.onUpdate((s) => {
      paintValue();
      const t = s.manifest_fault_type;
      const armed = t && t !== "none";
      tabs.get("manifest_fault").button.classList.toggle("armed", !!armed);
      panel.classList.toggle("armed", !!armed);
      status.textContent = armed
        ? `Armed: ${t}${manifestValueHint(t) ? ` (value ${fmtNum(s.manifest_fault_value)})` : ""} · answers rewritten so far: ${s[`fault_count_${t}`] || 0}`
        : "No manifest fault armed.";
      const vs = (s.manifest_variants || []).map((v) => fileName(v.url));
      const key = JSON.stringify(vs);
      if (chips.dataset.key !== key) {
        chips.dataset.key = key;
        clear(chips, vs.length ? "Add: " : h("span.muted", "The ladder is known after the player's first master request."), vs.map((v) => {
          const b = h("button.chip.small", { type: "button" }, v);
          b.addEventListener("click", () => {
            const cur = variants.value.split(",").map((x) => x.trim()).filter(Boolean);
            if (!cur.includes(v)) cur.push(v);
            variants.value = cur.join(", ");
            variants.dispatchEvent(new Event("input"));
          });
          return b;
        }));
      }
    });
    addTab("manifest_fault", "Manifest faults", panel);
  }

  // the session's random seed: every probability fault draws from it (replayable runs)
  const seedRow = (() => {
    const msg = errorLine();
    const seed = h("input#session-seed", { type: "number", min: "0", max: String(2 ** 31 - 1), step: "1" });
    const set = h("button.small#apply-seed", { type: "button", title: "Setting the seed (even to the same value) restarts every probability fault's draws: the same requests fault again" }, "Set seed");
    const fresh = h("button.small", { type: "button" }, "New random seed");
    set.addEventListener("click", () => guarded(null, set, () => ctl.send(["seed"], msg, { always: true, label: "Seed" })));
    fresh.addEventListener("click", () => guarded(null, fresh, () => ctl.send(["seed"], msg, { values: { seed: Math.floor(Math.random() * 2 ** 31) }, label: "New seed" })));
    return h("div.seed-row",
      h("div.row", h("label.inline", "Random seed ", seed), ctl.bind("seed", seed, "number"), set, fresh,
        h("small.hint", "probability faults draw from it: the same seed replays the same faults")),
      msg);
  })();

  // ------------------------------------------------------------------ timeouts
  const timeoutsCard = (() => {
    const msg = errorLine();
    const act = h("input", { type: "number", min: "0", step: "any" });
    const idle = h("input", { type: "number", min: "0", step: "any" });
    const seg = h("input", { type: "checkbox" });
    const man = h("input", { type: "checkbox" });
    const mas = h("input", { type: "checkbox" });
    const fields = ["transfer_active_timeout_seconds", "transfer_idle_timeout_seconds", "transfer_timeout_applies_segments",
      "transfer_timeout_applies_manifests", "transfer_timeout_applies_master"];
    const apply = h("button.primary", { type: "button" }, "Apply");
    apply.addEventListener("click", () => guarded(null, apply, () => ctl.send(fields, msg, { label: "Timeouts" })));
    return card("Server transfer timeouts",
      h("div.form-grid",
        h("label.field", h("span.label", "Active timeout (s)"), act, ctl.bind(fields[0], act, "number"), h("small.hint", "whole response cap; 0 = off")),
        h("label.field", h("span.label", "Idle timeout (s)"), idle, ctl.bind(fields[1], idle, "number"), h("small.hint", "client stopped reading; 0 = off"))),
      h("div.checks", "Applies to: ",
        h("label", seg, " segments", ctl.bind(fields[2], seg, "checkbox")),
        h("label", man, " playlists", ctl.bind(fields[3], man, "checkbox")),
        h("label", mas, " masters", ctl.bind(fields[4], mas, "checkbox"))),
      h("div.row", apply), msg);
  })();

  // ------------------------------------------------------------------ shaping
  const shapingCard = (() => {
    const msg = errorLine();
    const slider = (field, max, step, unit, zeroText) => {
      const range = h("input", { type: "range", min: "0", max: String(max), step: String(step), value: "0", id: `slider-${field}` });
      const num = h("input.num", { type: "number", min: "0", step: "any", value: "0" });
      const out = h("output", zeroText);
      const show = (v) => { out.textContent = Number(v) === 0 ? zeroText : `${fmtNum(v)} ${unit}`; };
      range.addEventListener("input", () => { num.value = range.value; show(range.value); });
      num.addEventListener("input", () => { range.value = num.value; show(num.value); });
      const kind = {
        read: () => Number(num.value || 0),
        write: (v) => { num.value = String(v ?? 0); range.value = String(Math.min(max, Number(v) || 0)); show(v ?? 0); },
      };
      const err = ctl.bind(field, num, kind);
      ctl.controls.get(field).el = num;
      // the slider edits the same control: mark dirty and send on release
      range.addEventListener("input", () => num.dispatchEvent(new Event("input")));
      const send = () => ctl.send([field], msg, { label: field.replace("nftables_", "").replace(/_/g, " ") });
      range.addEventListener("change", send);
      num.addEventListener("change", send);
      return h("div.slider", range, num, out, err);
    };
    const tmpl = select("template", [["sliders", "custom steps"], ["square_wave", "square wave"], ["ramp_up", "ramp up"], ["ramp_down", "ramp down"], ["pyramid", "pyramid"]], "sliders");
    const margin = select("margin", [["0", "0 %"], ["5", "5 %"], ["10", "10 %"], ["25", "25 %"], ["50", "50 %"]], "0");
    const stepSecs = select("step_seconds", [["6", "6 s"], ["12", "12 s"], ["18", "18 s"], ["24", "24 s"]], "12");
    const stepsBox = h("div.steps");
    const patternMsg = errorLine();
    const runtime = h("div.muted#pattern-runtime");
    let steps = [];
    function paintSteps() {
      clear(stepsBox, steps.map((s, i) => {
        const rate = h("input.num", { type: "number", min: "0", step: "any", value: String(s.rate_mbps) });
        const dur = h("input.num", { type: "number", min: "0.1", step: "any", value: String(s.duration_seconds) });
        const rm = h("button.small", { type: "button", title: "Remove step" }, "×");
        rate.addEventListener("input", () => { s.rate_mbps = Number(rate.value); });
        dur.addEventListener("input", () => { s.duration_seconds = Number(dur.value); });
        rm.addEventListener("click", () => { steps.splice(i, 1); paintSteps(); });
        return h("div.step", `${i + 1}.`, rate, " Mbps for ", dur, " s ", rm);
      }));
    }
    const add = h("button.small", { type: "button" }, "+ step");
    add.addEventListener("click", () => { steps.push({ rate_mbps: 2, duration_seconds: 12 }); paintSteps(); });
    const startPattern = h("button.primary", { type: "button" }, "Start pattern");
    const stopPattern = h("button", { type: "button" }, "Stop pattern");
    startPattern.addEventListener("click", () => guarded(patternMsg, startPattern, async () => {
      const port = ctl.session.x_forwarded_port;
      if (tmpl.value !== "sliders") {
        await post(`/api/nftables/pattern/${port}`, { template_mode: tmpl.value, margin_pct: Number(margin.value), step_seconds: Number(stepSecs.value) });
        patternDirty = false;
        patternMsg.ok(`Template ${tmpl.value} running.`);
      } else {
        if (!steps.length) { patternMsg.show("Add at least one step."); return; }
        await post(`/api/nftables/pattern/${port}`, { steps: steps.map((s) => ({ rate_mbps: s.rate_mbps, duration_seconds: s.duration_seconds })), template_mode: "sliders" });
        patternDirty = false;
        patternMsg.ok("Pattern running.");
      }
    }));
    stopPattern.addEventListener("click", () => guarded(patternMsg, stopPattern, async () => {
      await post(`/api/nftables/pattern/${ctl.session.x_forwarded_port}`, { steps: [] });
      patternDirty = false;
      patternMsg.ok("Pattern stopped.");
    }));
    let patternDirty = false;
    for (const sel of [tmpl, margin, stepSecs]) sel.addEventListener("change", () => { patternDirty = true; });
    tmpl.addEventListener("change", () => { stepsBox.hidden = add.hidden = tmpl.value !== "sliders"; });
    let lastStepsKey = "";
    ctl.onUpdate((s) => {
      const key = JSON.stringify(s.nftables_pattern_steps || []);
      if (key !== lastStepsKey && !stepsBox.contains(document.activeElement)) {
        lastStepsKey = key;
        steps = (s.nftables_pattern_steps || []).map((x) => ({ ...x }));
        paintSteps();
      }
      // the pattern form is sent as a whole by Start: the server's values show until the
      // user edits one of its selects, then the edit stays until Start/Stop
      if (!patternDirty) {
        tmpl.value = s.nftables_pattern_template_mode || "sliders";
        margin.value = String(s.nftables_pattern_margin_pct ?? 0);
        stepSecs.value = String(s.nftables_pattern_step_seconds ?? 12);
      }
      stepsBox.hidden = add.hidden = tmpl.value !== "sliders";
      runtime.textContent = s.nftables_pattern_enabled
        ? `Running: step ${s.nftables_pattern_step} of ${(s.nftables_pattern_steps || []).length} at ${fmtNum(s.nftables_pattern_rate_runtime_mbps)} Mbps`
        : "No pattern running.";
    });
    // -- shaping-truth: which backend/interface carries each control, goodput vs cap, warning
    const carrier = h("div.muted#shaping-carrier");
    ctl.onUpdate((s) => {
      const where = (c) => (c ? `${c.backend}${c.interface ? "/" + c.interface : ""}` : "–");
      const cs = s.shaping_carriers || {};
      const cap = s.shaping_cap_mbps === null || s.shaping_cap_mbps === undefined ? "no cap" : `cap ${fmtNum(s.shaping_cap_mbps)} Mbps`;
      clear(carrier,
        `Carried by: rate ${where(cs.rate)} · delay ${where(cs.delay)} · loss ${where(cs.loss)} · drop ${where(cs.transport_drop)} · reject ${where(cs.transport_reject)}`,
        h("br"), `${cap} · goodput ${fmtNum(s.shaping_goodput_mbps)} Mbps`,
        (cs.rate && cs.rate.reason) ? ` · ${cs.rate.reason}` : "",
        s.shaping_warning ? h("div.banner.error#shaping-warning", s.shaping_warning) : "");
    });
    // -- end shaping-truth
    return card("Network shaping",
      carrier,
      h("div.sliders",
        h("label.field", h("span.label", "Throughput (Mbps)"), slider("nftables_bandwidth_mbps", 50, 0.1, "Mbps", "unlimited")),
        h("label.field", h("span.label", "Added delay (ms)"), slider("nftables_delay_ms", 2000, 10, "ms", "none")),
        h("label.field", h("span.label", "Packet loss (%)"), slider("nftables_packet_loss", 20, 0.1, "%", "none"))),
      msg,
      h("h3", "Throughput pattern"),
      h("div.controls-row", h("label.inline", "Template ", tmpl), h("label.inline", "Margin ", margin), h("label.inline", "Step ", stepSecs)),
      stepsBox, h("div.row", add, startPattern, stopPattern), runtime, patternMsg);
  })();

  // ------------------------------------------------------------------ group
  const groupCard = (() => {
    const msg = errorLine();
    const info = h("div");
    const others = h("select", { multiple: true, size: "4" });
    const linkBtn = h("button", { type: "button" }, "Link selected");
    const unlinkBtn = h("button", { type: "button" }, "Leave group");
    linkBtn.addEventListener("click", () => guarded(msg, linkBtn, async () => {
      const ids = [...others.selectedOptions].map((o) => o.value);
      if (!ids.length) { msg.show("Select at least one other session."); return; }
      const body = { session_ids: [sid, ...ids] };
      if (ctl.session.group_id) body.group_id = ctl.session.group_id;
      const r = await post("/api/session-group/link", body);
      msg.ok(`Group ${r.group_id}: ${r.session_ids.join(", ")}`);
    }));
    unlinkBtn.addEventListener("click", () => guarded(msg, unlinkBtn, async () => {
      await post("/api/session-group/unlink", { session_id: sid });
      msg.ok("Left the group.");
    }));
    ctl.onUpdate((s) => {
      const members = liveSessions.filter((x) => s.group_id && x.group_id === s.group_id);
      clear(info, s.group_id
        ? h("p", "Group ", badge(s.group_id, "info"), ": ", members.map((m) => h("a", { href: link("session", m.player_id) }, `${m.player_id} (#${m.session_id}) `)),
          h("br"), h("small.muted", "Fault, timeout, transport and shaping changes apply to every member."))
        : h("p.muted", "Not in a group."));
      unlinkBtn.disabled = !s.group_id;
      if (document.activeElement !== others) {
        const sel = new Set([...others.selectedOptions].map((o) => o.value));
        clear(others, liveSessions.filter((x) => x.session_id !== sid && (!s.group_id || x.group_id !== s.group_id))
          .map((x) => h("option", { value: x.session_id, selected: sel.has(x.session_id) }, `${x.player_id} (#${x.session_id})`)));
      }
    });
    return card("Group", info, h("div.row", others, h("div", linkBtn, h("br"), unlinkBtn)), msg);
  })();

  // ------------------------------------------------------------------ charts
  const charts = sessionCharts(() => (netlogRef ? netlogRef.markers() : []));
  cleanups.push(() => charts.close());
  function pushSample(s) {
    const limit = s.nftables_pattern_enabled ? s.nftables_pattern_rate_runtime_mbps : s.nftables_bandwidth_mbps;
    charts.push({
      t: Date.now() / 1000,
      rate: s.mbps_transfer_rate ?? null,
      limit: limit || null,
      player: lastStats && lastStats.bitrate_mbps !== null ? lastStats.bitrate_mbps : (s.player_metrics_bitrate_mbps ?? null),
      rendition: s.server_video_rendition_mbps || null,
      buffer: lastStats ? lastStats.buffer_s : (s.player_metrics_buffer_s ?? null),
      rtt: s.client_rtt_stale ? null : s.client_rtt_ms,
      rttMax: s.client_rtt_stale ? null : s.client_rtt_max_ms,
      rttMin: s.client_rtt_stale ? null : s.client_rtt_min_ms,
    });
  }
  let lastSampleAt = 0;

  // ------------------------------------------------------------------ network log
  const netlog = networkLog(sid, FAULT_TYPES);
  netlogRef = netlog;
  netlog.onMarkers(() => charts.redraw());
  cleanups.push(() => netlog.close());

  // ------------------------------------------------------------------ layout
  const harLink = h("a.button.small", { href: `/api/session/${enc(sid)}/network.har`, download: `session-${sid}.har` }, "Download HAR");
  const delBtn = h("button.small.danger", { type: "button" }, "Delete session");
  delBtn.addEventListener("click", () => guarded(topMsg, delBtn, async () => {
    if (!confirm("Delete this session? The player loses its port.")) return;
    if (player) { player.destroy(); player = null; }
    await (await import("../js/api.js")).del(`/api/session/${enc(sid)}`);
    location.hash = "#/sessions";
  }));

  // a scenario running on this session changes its controls on its own timeline
  const scenarioBanner = h("div.banner.info#scenario-banner", { hidden: true });
  let scenarioKey = "";
  ctl.onUpdate((s) => {
    const run = s.scenario;
    const key = run ? `${run.id}|${run.state}|${run.current_step}|${run.passed}` : "";
    if (key === scenarioKey) return;
    scenarioKey = key;
    scenarioBanner.hidden = !run;
    if (!run) return;
    const open = h("a", { href: link("scenarios", { session: sid }) }, "open it in Scenarios");
    clear(scenarioBanner, run.state === "running"
      ? [`Scenario “${run.name}” is running on this session (step ${run.current_step ?? "–"}): it sets and restores controls on its timeline — `, open]
      : [`Scenario “${run.name}” ${run.state}. `, open, " for the verdict."]);
  });

  const lifeLine = h("span.badge#session-life");
  const keepBox = h("input#session-keep", { type: "checkbox" });
  const keepMsg = errorLine();
  keepBox.addEventListener("change", () => guarded(keepMsg, null, async () => {
    const r = await post(`/api/session/${enc(sid)}/keep`, { keep: keepBox.checked });
    ctl.update(r.session);
  }));
  const keepLabel = h("label.inline.keep", { title: "Keep this session (its port, faults and log) while no player uses it" }, keepBox, "Keep while idle");
  ctl.onUpdate((s) => {
    const [text, kind] = lifetimeText(s, true);
    lifeLine.textContent = text;
    lifeLine.className = `badge ${kind}`;
    if (document.activeElement !== keepBox) keepBox.checked = !!s.session_keep;
  });

  clear(root,
    pageHeader(`Session · ${playerId}`, `session #${sid} on port ${session.x_forwarded_port_external}`, lifeLine, keepLabel, harLink, delBtn),
    keepMsg,
    topMsg, goneBanner, scenarioBanner,
    // the fault controls sit beside the player, above the fold at 1280x720
    h("div.session-top",
      h("div.video-col",
        h("div.controls-row", h("label.inline", content), h("label.inline", protocol), h("label.inline", duration), h("label.inline", { title: "Loop timeline: the server's default, continuous (one period), or a new period (discontinuity) each loop" }, timeline), h("label.inline", engine), restart, stopBtn),
        h("div.video-wrap", video), vControls, urlLine),
      h("section.card#faults-card", h("h2", "Faults"), allBanner, tabBar, tabBody, seedRow)),
    h("div.cols.session-info",
      card("Counters", counters, faultCounts),
      card("Player", stats, h("h3", "Player errors"), playerErrors)),
    h("div.cols", shapingCard, h("div", timeoutsCard, groupCard)),
    card("Live charts", charts.el),
    netlog.el);

  ctl.onUpdate((s) => {
    renderCounters(s);
    const allArmed = s.all_failure_type && s.all_failure_type !== "none";
    allBanner.hidden = !allArmed;
    allBanner.textContent = allArmed ? `All-requests rule armed: ${s.all_failure_type} — it overrides the Segment, Manifest and Master rules.` : "";
    const now = Date.now();
    if (now - lastSampleAt >= 900) { lastSampleAt = now; pushSample(s); }
  });
  showTab(q.get("tab") && tabs.has(q.get("tab")) ? q.get("tab") : "segment");
  ctl.update(session);
  await charts.ready;

  // live session state
  const feed = sse("/api/sessions/stream", {
    sessions(d) {
      liveSessions = d.sessions || [];
      const me = liveSessions.find((x) => x.session_id === sid && x.player_id === session.player_id);
      goneBanner.hidden = !!me;
      if (me) ctl.update(me);
    },
  });
  cleanups.push(() => feed.close());

  // network log: what is there, then live entries and control-change markers
  await netlog.load();
  charts.backfill(netlog.entries());
  const netFeed = sse(`/api/session/${enc(sid)}/network/stream`, {
    entry(e) { netlog.add(e); },
    marker(m) { netlog.addMarker(m); },
  });
  cleanups.push(() => netFeed.close());

  // Play here unless asked not to (?play=0) or the session already belongs to another
  // player (a TV, a phone): a second player would double its traffic and its metrics.
  const elsewhere = session.all_requests_count > 0 && session.user_agent && session.user_agent !== navigator.userAgent;
  if (q.get("play") !== "0" && !elsewhere) {
    await startPlayer();
  } else {
    restart.textContent = "Play here";
    clear(urlLine, elsewhere ? "Another player uses this session; this page only controls it. " : "Not playing in this page. ",
      "Session URL: ", h("code", sessionUrl()), " ", copyButton(sessionUrl()));
  }
  return () => {
    for (const c of cleanups) c();
    if (player) player.destroy();
  };
}
