// Playback: one player — content, protocol, segment duration, loop timeline, engine.  The
// choice lives in the URL (#/playback?content=x&protocol=hls&duration=ll&engine=hls, plus
// &timeline=continuous|discontinuity when not the server's default) so it can be shared.

import { get } from "../js/api.js";
import { h, clear, card, errorLine, pageHeader, select, fmtNum, copyButton, randomId } from "../js/ui.js";
import { createPlayer, ENGINES, TIMELINES, enginesFor, streamPath, describePlayhead, liveControls } from "../js/player.js";
import { setQuery, link } from "../js/app.js";

export function statsTable() {
  const cells = {};
  const names = [["state", "State"], ["playhead", "Playhead"], ["buffer_s", "Buffer (s)"],
    ["bitrate_mbps", "Bitrate (Mbps)"], ["resolution", "Resolution"], ["latency_s", "Live latency (s)"],
    ["stalls", "Stalls (after start-up)"], ["stall_seconds_total", "Stall time (s)"], ["switches", "Rendition switches"],
    ["dropped_frames", "Dropped frames"]];
  const el = h("dl.kv.stats", names.map(([k, label]) => [h("dt", label), cells[k] = h("dd", { dataset: { stat: k } }, "–")]));
  el.update = (s) => {
    for (const [k] of names) {
      let v = k === "playhead" ? describePlayhead(s) : s[k];
      if (k === "switches" && typeof v === "number" && v > 0) v = `${v} (${s.switches_down} down, ${s.switches_up} up)`;
      cells[k].textContent = typeof v === "number" ? fmtNum(v, 2) : (v || (v === 0 ? "0" : "–"));
    }
  };
  return el;
}

export async function mount(root, route) {
  const q = route.query;
  const msg = errorLine();
  const errors = h("ul.player-errors");
  let items = [];
  try { items = await get("/api/content"); } catch (err) { msg.show(err); }
  const names = items.map((i) => i.name);
  const content = select("content", names.length ? names : [["", "no content"]], q.get("content") || names[0]);
  const protocol = select("protocol", [["hls", "HLS"], ["dash", "DASH"]], q.get("protocol") || "hls");
  const duration = select("duration", [["ll", "Low latency"], ["2s", "2 s segments"], ["6s", "6 s segments"]], q.get("duration") || "6s"); // the same default as Mosaic and "Play the demo"
  const timeline = select("timeline", TIMELINES, q.get("timeline") || "");
  const engine = select("engine", ENGINES, q.get("engine") || (q.get("protocol") === "dash" ? "dash" : "hls"));
  const video = h("video#player", { muted: true, playsinline: true, autoplay: true });
  const controls = liveControls(video);
  const urlLine = h("div.url-line");
  const stats = statsTable();
  const sessionLink = h("a.button.small", { href: "#/session" }, "Open in a testing session");
  let player = null;
  let timer = null;

  function syncEngines() {
    const ok = enginesFor(protocol.value);
    for (const opt of engine.options) opt.disabled = !ok.includes(opt.value);
    if (!ok.includes(engine.value)) engine.value = ok[0];
  }

  async function start() {
    if (player) { player.destroy(); player = null; }
    clear(errors);
    msg.clear();
    syncEngines();
    const choice = { content: content.value, protocol: protocol.value, duration: duration.value, timeline: timeline.value, engine: engine.value };
    setQuery(choice);
    sessionLink.href = link("session", randomId(), choice);
    if (!content.value) { msg.info("No content yet — seed the demo on Home."); return; }
    const url = `${location.origin}${streamPath(content.value, protocol.value, duration.value, timeline.value)}`;
    clear(urlLine, h("code", url), " ", copyButton(url));
    try {
      player = await createPlayer(video, url, {
        engine: engine.value,
        lowLatency: duration.value === "ll",
        muted: true,
        onError(text, fatal) {
          errors.prepend(h("li" + (fatal ? ".fatal" : ""), `${new Date().toLocaleTimeString()} ${fatal ? "FATAL " : ""}${text}`));
          while (errors.children.length > 20) errors.lastChild.remove();
        },
      });
      video.dataset.engine = player.engine;
    } catch (err) {
      msg.show(err);
    }
  }

  for (const s of [content, protocol, duration, timeline, engine]) s.addEventListener("change", start);
  protocol.addEventListener("change", () => {
    engine.value = protocol.value === "dash" ? "dash" : "hls";
  }, { capture: true });

  clear(root,
    pageHeader("Playback", "Watch any item in any format with the player engine of your choice.", sessionLink),
    card(null, h("div.controls-row",
      h("label.inline", "Content ", content), h("label.inline", "Protocol ", protocol),
      h("label.inline", "Segments ", duration), h("label.inline", { title: "Continuous: one period, timestamps rise across loops. New period each loop: EXT-X-DISCONTINUITY / a DASH Period per loop, for testing how a player handles them." }, "Loop timeline ", timeline),
      h("label.inline", "Engine ", engine)), urlLine, msg),
    h("div.player-layout",
      h("div", h("div.video-wrap", video), controls),
      card("Player", stats, h("h3", "Player errors"), errors)));
  timer = setInterval(() => { if (player) stats.update(player.stats()); }, 500);
  await start();
  return () => {
    clearInterval(timer);
    if (player) player.destroy();
  };
}
