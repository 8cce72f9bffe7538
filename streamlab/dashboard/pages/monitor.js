// Monitor: origin workers, tick cadence and render times.
//
// The origin has no SSE/WebSocket feed for worker status (GET /go-live/api/status and the
// tick-stats endpoints are plain JSON), so this page — and only this page — re-reads them
// every 2 s while it is open.

import { get, enc } from "../js/api.js";
import { h, clear, card, errorLine, pageHeader, fmtNum, fmtClock, table, toast, guarded } from "../js/ui.js";
import { api } from "../js/api.js";

const PERIOD_MS = 2000;

export async function mount(root) {
  const msg = errorLine();
  const box = h("div");
  const note = h("p.muted.small", `No live feed exists for worker status: refreshed every ${PERIOD_MS / 1000} s.`);
  let timer = null;
  let busy = false;

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
      toast(`Stopped ${w.content}`);
      refresh();
    }));
    const tickRows = Object.entries(ticks).filter(([, v]) => v).map(([k, v]) => ({ k, ...v }));
    return card(null,
      h("div.item-head", h("h2", w.content), h("div.actions", stop)),
      h("p.muted", `worker ${w.id} · started ${fmtClock(w.started_at)} · last request ${fmtClock(w.last_request_at)} · idle timeout ${w.idle_timeout_s} s`),
      wmsg,
      h("div.variants", Object.entries(w.requests || {}).map(([k, v]) => h("span.chip", `${k}: ${v}`))),
      table([
        { label: "Stream", render: (s) => s.name },
        { label: "Variants", render: (s) => Array.isArray(s.variants) ? s.variants.length : String(s.variants ?? "–") },
        { label: "Audio", render: (s) => Array.isArray(s.audio) ? s.audio.length : String(s.audio ?? "–") },
        { label: "Last tick", render: (s) => fmtClock(s.last_tick_at) },
        { label: "Avg render (5 min)", render: (s) => `${fmtNum(s.avg_render_ms_5m, 3)} ms` },
      ], w.streams || [], "No streams yet."),
      h("h3", "Tick stats"),
      table([
        { label: "Window", render: (t) => t.k },
        { label: "Last tick", render: (t) => fmtClock(t.last_tick_at) },
        { label: "Interval", render: (t) => `${fmtNum(t.tick_interval_ms, 0)} ms` },
        { label: "Avg interval (5 min)", render: (t) => `${fmtNum(t.avg_tick_interval_ms_5m, 1)} ms` },
        { label: "Last render", render: (t) => `${fmtNum(t.last_render_ms, 3)} ms` },
        { label: "Avg render (5 min)", render: (t) => `${fmtNum(t.avg_render_ms_5m, 3)} ms` },
        { label: "Variants / audio", render: (t) => `${t.variant_count ?? "–"} / ${t.audio_count ?? "–"}` },
      ], tickRows, "No tick stats (nobody is watching this item)."));
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const st = await get("/go-live/api/status");
      const workers = st.workers || [];
      const ticks = await Promise.all(workers.map((w) => tickStats(w.content)));
      msg.clear();
      clear(box, workers.length ? workers.map((w, i) => workerCard(w, ticks[i]))
        : h("p.empty", "No live workers. A worker starts when a player requests a stream and stops after it goes idle."));
    } catch (err) {
      msg.show(err);
    } finally {
      busy = false;
    }
  }

  clear(root, pageHeader("Monitor", "Live origin workers, tick cadence and playlist render times."), note, msg, box);
  await refresh();
  timer = setInterval(refresh, PERIOD_MS);
  return () => clearInterval(timer);
}
