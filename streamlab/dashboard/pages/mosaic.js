// Mosaic: a grid of muted players over the filtered content.  Each tile opens a testing
// session for that item.

import { get } from "../js/api.js";
import { h, clear, errorLine, pageHeader, select, fmtNum } from "../js/ui.js";
import { createPlayer, ENGINES, enginesFor, streamPath } from "../js/player.js";
import { setQuery, link } from "../js/app.js";

const MAX_TILES = 16;

export async function mount(root, route) {
  const q = route.query;
  const msg = errorLine();
  const filter = h("input", { type: "search", placeholder: "name or codec", value: q.get("filter") || "" });
  const protocol = select("protocol", [["hls", "HLS"], ["dash", "DASH"]], q.get("protocol") || "hls");
  const duration = select("duration", [["ll", "LL"], ["2s", "2 s"], ["6s", "6 s"]], q.get("duration") || "6s");
  const engine = select("engine", ENGINES, q.get("engine") || "hls");
  const grid = h("div.mosaic");
  let players = [];
  let items = [];
  let timer = null;

  function stop() {
    for (const p of players) p.player && p.player.destroy();
    players = [];
  }

  async function render() {
    stop();
    const ok = enginesFor(protocol.value);
    if (!ok.includes(engine.value)) engine.value = ok[0];
    setQuery({ filter: filter.value, protocol: protocol.value, duration: duration.value, engine: engine.value });
    const f = filter.value.trim().toLowerCase();
    const shown = items.filter((i) => !f || i.name.toLowerCase().includes(f) || String(i.codec).toLowerCase().includes(f))
      .slice(0, MAX_TILES);
    if (!shown.length) {
      clear(grid, h("p.empty", items.length ? "No item matches the filter." : "No content yet."));
      return;
    }
    clear(grid);
    for (const item of shown) {
      const video = h("video", { muted: true, playsinline: true, autoplay: true });
      const info = h("span.tile-info", "…");
      const tile = h("div.tile", video,
        h("div.tile-bar", h("strong", item.name), info,
          h("a.small", { href: link("session", `mosaic-${item.name}`, { content: item.name, protocol: protocol.value, duration: duration.value, engine: engine.value }) }, "test ›")));
      grid.append(tile);
      const entry = { info, player: null };
      players.push(entry);
      const url = `${location.origin}${streamPath(item.name, protocol.value, duration.value)}`;
      createPlayer(video, url, {
        engine: engine.value, lowLatency: duration.value === "ll", muted: true,
        onError(text, fatal) { if (fatal) info.textContent = text; },
      }).then((p) => {
        if (players.includes(entry)) entry.player = p; else p.destroy();
      }).catch((err) => { info.textContent = String(err.message || err); });
    }
  }

  let debounce = null;
  filter.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(render, 400); });
  for (const s of [protocol, duration, engine]) s.addEventListener("change", render);

  clear(root,
    pageHeader("Mosaic", `Up to ${MAX_TILES} muted players side by side.`,
      h("label.inline", "Filter ", filter), h("label.inline", protocol), h("label.inline", duration), h("label.inline", engine)),
    msg, grid);
  try { items = await get("/api/content"); } catch (err) { msg.show(err); }
  await render();
  timer = setInterval(() => {
    for (const p of players) {
      if (!p.player) continue;
      const s = p.player.stats();
      if (!s.error) p.info.textContent = `${s.state} · ${fmtNum(s.buffer_s, 1)} s buf${s.bitrate_mbps ? ` · ${fmtNum(s.bitrate_mbps, 2)} Mbps` : ""}`;
    }
  }, 1000);
  return () => { clearInterval(timer); clearTimeout(debounce); stop(); };
}
