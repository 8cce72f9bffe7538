// Monitor: origin workers, tick cadence and render times.
//
// Worker status is live from SSE GET /go-live/api/status/stream (the /go-live/api/status
// body, pushed on worker creation/removal and every second while a worker exists).  The
// tick-stats tables are plain JSON: they are re-read when a status event arrives, at most
// every TICKS_MS and one round at a time.

import { get, enc } from "../js/api.js";
import { h, clear, card, errorLine, pageHeader, fmtNum, fmtClock, table, toast, guarded } from "../js/ui.js";
import { api } from "../js/api.js";
import { sse } from "../js/live.js";

const TICKS_MS = 2000;
// one name per stream flavour in both tables (the API says ll_hls, hls_6s, dash_ll, ...)
const FLAVOURS = { ll_hls: "LL-HLS", hls_ll: "LL-HLS", hls_2s: "HLS 2 s", hls_6s: "HLS 6 s", dash_ll: "LL-DASH", ll_dash: "LL-DASH", dash_2s: "DASH 2 s", dash_6s: "DASH 6 s" };
const flavour = (k) => FLAVOURS[k] || k;

export async function mount(root) {
  const msg = errorLine();
  const box = h("div");
  const note = h("p.muted.small", `Worker status is live; tick stats are re-read at most every ${TICKS_MS / 1000} s.`);
  let busy = false;
  let pending = null; // the latest status body not painted yet
  let ticksAt = 0;
  let ticksCache = new Map(); // content -> tick stats

  async function tickStats(content) {
    const out = {};
    const reqs = [
      ["ll_hls", `/go-live/api/tick-stats/${enc(content)}`],
      ["dash_ll", `/go-live/api/dash-tick-stats/${enc(content)}?duration=ll`],
      ["dash_2s", `/go-live/api/dash-tick-stats/${enc(content)}?duration=2s`],
      ["dash_6s", `/go-live/api/dash-tick-stats/${enc(content)}?duration=6s`],
    ];
    await Promise.all(reqs.map(async ([k, url]) => {
      try { out[k] = await get(url); } catch (e) { out[k] = null; }
    }));
    return out;
  }

  function workerCard(w, ticks) {
    const stop = h("button.small.danger", { type: "button" }, "Stop worker");
    const wmsg = errorLine();
    stop.addEventListener("click", () => guarded(wmsg, stop, async () => {
      await api("DELETE", `/go-live/api/stop/${enc(w.id)}`);
      toast(`Stopped ${w.content}`); // the stream pushes the removal
    }));
    // a flavour nobody is watching has no ticks: leave it out instead of a row of "–"
    const tickRows = Object.entries(ticks).filter(([, v]) => v && v.last_tick_at).map(([k, v]) => ({ k, ...v }));
    return card(null,
      h("div.item-head", h("h2", w.content), h("div.actions", stop)),
      h("p.muted", `worker ${w.id} · started ${fmtClock(w.started_at)} · last request ${fmtClock(w.last_request_at)} · idle timeout ${w.idle_timeout_s} s`),
      wmsg,
      h("div.variants", Object.entries(w.requests || {}).map(([k, v]) => h("span.chip", `${k}: ${v}`))),
      table([
        { label: "Stream", render: (s) => flavour(s.name) },
        { label: "Variants", render: (s) => Array.isArray(s.variants) ? s.variants.length : String(s.variants ?? "–") },
        { label: "Audio", render: (s) => Array.isArray(s.audio) ? s.audio.length : String(s.audio ?? "–") },
        { label: "Last tick", render: (s) => fmtClock(s.last_tick_at) },
        { label: "Avg render (5 min)", render: (s) => `${fmtNum(s.avg_render_ms_5m, 3)} ms` },
      ], w.streams || [], "No streams yet."),
      h("h3", "Tick stats"),
      table([
        { label: "Stream", render: (t) => flavour(t.k) },
        { label: "Last tick", render: (t) => fmtClock(t.last_tick_at) },
        { label: "Interval", render: (t) => `${fmtNum(t.tick_interval_ms, 0)} ms` },
        { label: "Avg interval (5 min)", render: (t) => `${fmtNum(t.avg_tick_interval_ms_5m, 1)} ms` },
        { label: "Last render", render: (t) => `${fmtNum(t.last_render_ms, 3)} ms` },
        { label: "Avg render (5 min)", render: (t) => `${fmtNum(t.avg_render_ms_5m, 3)} ms` },
        { label: "Variants / audio", render: (t) => `${t.variant_count ?? "–"} / ${t.audio_count ?? "–"}` },
      ], tickRows, "No tick stats yet (nobody is watching a live flavour of this item)."));
  }

  async function paint(st) {
    const workers = st.workers || [];
    if (Date.now() - ticksAt >= TICKS_MS || workers.some((w) => !ticksCache.has(w.content))) {
      const ticks = await Promise.all(workers.map((w) => tickStats(w.content)));
      ticksCache = new Map(workers.map((w, i) => [w.content, ticks[i]]));
      ticksAt = Date.now();
    }
    msg.clear();
    clear(box, workers.length ? workers.map((w) => workerCard(w, ticksCache.get(w.content) || {}))
      : h("p.empty", "No live workers. A worker starts when a player requests a stream and stops after it goes idle."));
  }

  async function onStatus(st) {
    pending = st;
    if (busy) return; // painted when the current round ends
    busy = true;
    try {
      while (pending) {
        const next = pending;
        pending = null;
        await paint(next);
      }
    } catch (err) {
      msg.show(err);
    } finally {
      busy = false;
    }
  }

  clear(root, pageHeader("Monitor", "Live origin workers, tick cadence and playlist render times."), note, msg, box);
  const feed = sse("/go-live/api/status/stream", { status: (data) => onStatus(data) });
  return () => feed.close();
}
