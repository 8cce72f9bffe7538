// Testing-session charts (uPlot): bitrate, player buffer, RTT over the last 120 s.
//
// * Every chart spans the card's width (and follows it when the window is resized).
// * Control changes (fault armed, shaping changed — the network log's "markers") are
//   drawn as labelled vertical lines on every chart's time axis.
// * The buffer axis starts at 0; the bitrate axis ignores lone spikes (it scales to the
//   95th percentile of the transfer rate, the shaping limit and the bitrates, whichever is
//   higher; a spike above is clipped and shown as a flag).
// * Time labels are wall-clock HH:MM:SS.
// * After a page reload the transfer rate of the last two minutes is rebuilt from the
//   network log (bytes per second of the requests that ended in each second).

import { h, loadScript } from "./ui.js";

export const CHART_SPAN_S = 120;
const MARK_COLORS = { fault: "#7c3aed", shaping: "#0891b2", transport: "#b91c1c", timeout: "#b45309", content: "#15803d", other: "#6b7280" };

function percentile(values, p) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return 0;
  return v[Math.min(v.length - 1, Math.floor(p * (v.length - 1)))];
}

/** The top of the bitrate axis: robust against a lone spike (see module docstring). */
export function bitrateTop(rate, others) {
  const p95 = percentile(rate, 0.95);
  const steady = Math.max(...others.flat().filter((x) => typeof x === "number" && Number.isFinite(x)), 0);
  return Math.max(1, p95 * 1.25, steady * 1.2);
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

/** A uPlot plugin drawing the markers (epoch seconds) as labelled vertical lines. */
function markerPlugin(getMarkers) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        const [x0, x1] = [u.scales.x.min, u.scales.x.max];
        const top = u.bbox.top;
        const bottom = u.bbox.top + u.bbox.height;
        ctx.save();
        ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
        ctx.textBaseline = "top";
        let drawn = 0;
        for (const m of getMarkers()) {
          const t = m._t / 1000;
          if (t < x0 || t > x1) continue;
          const x = Math.round(u.valToPos(t, "x", true));
          ctx.strokeStyle = MARK_COLORS[m.kind] || MARK_COLORS.other;
          ctx.fillStyle = ctx.strokeStyle;
          ctx.lineWidth = 2 * devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, bottom);
          ctx.stroke();
          // labels of close markers are staggered so they do not overprint
          const y = top + (2 + (drawn % 3) * 12) * devicePixelRatio;
          ctx.fillText(m.text.length > 28 ? m.text.slice(0, 27) + "…" : m.text, x + 3 * devicePixelRatio, y);
          drawn += 1;
        }
        ctx.restore();
        u.root.dataset.markers = String(drawn); // what a test (or a curious tester) can read
      }],
    },
  };
}

/**
 * The charts card content.  *getMarkers()* returns the network log's markers (with _t in
 * ms).  Returns {el, ready: Promise, push(sample), backfill(entries), redraw(), close()}.
 * A sample: {t (epoch s), rate, limit, player, rendition, buffer, rtt, rttMax, rttMin}.
 */
export function sessionCharts(getMarkers) {
  const box = h("div.charts");
  const note = h("p.muted.small.chart-note",
    "transfer = how fast the server is writing to this player right now (250 ms windows; LL-HLS parts come in bursts, so it drops between parts) · ",
    "rendition = the bitrate declared for the last video segment the server sent · ",
    "player = the bitrate of the rendition the player says it is playing · shaping limit = the cap in force. ",
    "Vertical lines mark fault and shaping changes.");
  const data = { t: [], rate: [], limit: [], player: [], rendition: [], buffer: [], rtt: [], rttMax: [], rttMin: [] };
  let charts = null;
  let observer = null;

  const ready = (async () => {
    try {
      await loadScript("vendor/uPlot.iife.min.js");
    } catch (err) {
      box.append(h("p.msg.error", err.message));
      return;
    }
    const width = () => Math.max(280, (box.clientWidth || 600) - 4);
    const axisX = { values: (u, ticks) => ticks.map(clock), space: 70 };
    const mk = (title, series, unit, range) => {
      const el = h("div.chart", { dataset: { chart: title } });
      box.append(el);
      return new window.uPlot({
        title, width: width(), height: 170,
        // at least a minute of time axis, so ticks fall on whole seconds from the start
        scales: { x: { time: true, range: (u, min, max) => [Math.min(min ?? Date.now() / 1000, (max ?? Date.now() / 1000) - 60), max ?? Date.now() / 1000] }, y: { range } },
        axes: [axisX, { label: unit, size: 50 }],
        series: [{ value: (u, v) => (v === null ? "--" : clock(v)) }, ...series],
        plugins: [markerPlugin(getMarkers)],
      }, [[], ...series.map(() => [])], el);
    };
    charts = {
      bitrate: mk("Bitrate (Mbps)", [
        { label: "transfer", stroke: "#2563eb", width: 2 },
        { label: "shaping limit", stroke: "#dc2626", dash: [6, 4], width: 2 },
        { label: "player", stroke: "#16a34a", width: 2 },
        { label: "rendition", stroke: "#9333ea", width: 1 },
      ], "Mbps", () => [0, bitrateTop(data.rate, [data.limit, data.player, data.rendition])]),
      buffer: mk("Player buffer (s)", [{ label: "buffer", stroke: "#0891b2", width: 2, fill: "rgba(8,145,178,0.1)" }], "s",
        (u, min, max) => [0, Math.max(4, (max || 0) * 1.15)]),
      rtt: mk("RTT (ms)", [
        { label: "rtt", stroke: "#ea580c", width: 2 },
        { label: "max", stroke: "#f59e0b", width: 1 },
        { label: "min", stroke: "#84cc16", width: 1 },
      ], "ms", (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)]),
    };
    box.append(note);
    box.charts = charts;
    observer = new ResizeObserver(() => {
      for (const c of Object.values(charts)) c.setSize({ width: width(), height: 170 });
    });
    observer.observe(box);
    setAll();
  })();

  function setAll() {
    if (!charts) return;
    const d = data;
    charts.bitrate.setData([d.t, d.rate, d.limit, d.player, d.rendition]);
    charts.buffer.setData([d.t, d.buffer]);
    charts.rtt.setData([d.t, d.rtt, d.rttMax, d.rttMin]);
  }

  return {
    el: box,
    ready,
    push(sample) {
      for (const k of Object.keys(data)) data[k].push(sample[k] ?? null);
      const cutoff = sample.t - CHART_SPAN_S;
      while (data.t.length && data.t[0] < cutoff) for (const k of Object.keys(data)) data[k].shift();
      setAll();
    },
    /** Rebuild the transfer rate of the last CHART_SPAN_S from network-log entries. */
    backfill(entries) {
      if (data.t.length) return;
      const now = Math.floor(Date.now() / 1000);
      const bytes = new Map();
      for (const e of entries) {
        const end = Math.floor((Date.parse(e.timestamp) + (e.total_ms || 0)) / 1000);
        if (end <= now - CHART_SPAN_S) continue;
        bytes.set(end, (bytes.get(end) || 0) + (e.bytes_out || 0));
      }
      if (!bytes.size) return;
      const first = Math.min(...bytes.keys());
      for (let t = first; t < now; t++) {
        for (const k of Object.keys(data)) data[k].push(null);
        data.t[data.t.length - 1] = t;
        data.rate[data.rate.length - 1] = ((bytes.get(t) || 0) * 8) / 1e6;
      }
      setAll();
    },
    redraw() { if (charts) for (const c of Object.values(charts)) c.redraw(false); },
    close() { if (observer) observer.disconnect(); },
  };
}
