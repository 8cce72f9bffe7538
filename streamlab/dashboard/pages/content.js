// Content: encoded items, their variants and ready-to-copy stream URLs.

import { get, post, enc } from "../js/api.js";
import { h, clear, card, errorLine, guarded, copyButton, pageHeader, fmtDuration, fmtNum, toast, randomId } from "../js/ui.js";
import { link } from "../js/app.js";
import { sse } from "../js/live.js";

const URL_ROWS = [
  ["hls_ll", "HLS", "LL"], ["hls_2s", "HLS", "2 s"], ["hls_6s", "HLS", "6 s"],
  ["dash_ll", "DASH", "LL"], ["dash_2s", "DASH", "2 s"], ["dash_6s", "DASH", "6 s"],
];

// An upstream origin (docs/upstream.md): served like an item, fetched from its URL.
function upstreamCard(item) {
  const url = Object.values(item.urls || {})[0] || "";
  return h("section.card.item.upstream", { dataset: { content: item.name, upstream: "1" } },
    h("div.item-head", h("h2", item.name, " ", h("span.chip", "upstream")),
      h("div.actions", h("a.button.small.test-session", { href: link("session", randomId(), { content: item.name }) }, "Test in a session"))),
    h("p.muted", [`${item.format.toUpperCase()}${item.low_latency ? " LL" : ""}`, item.live ? "live" : "VOD",
      `from ${item.url}`].join(" · ")),
    h("table.urls", h("tbody", h("tr", h("td", item.format.toUpperCase()), h("td.url", h("code", url)), h("td", copyButton(url))))));
}

function itemCard(item) {
  if (item.upstream) return upstreamCard(item);
  const msg = errorLine();
  const rebuild = h("button.small", { type: "button", title: "Rebuild the part/byte-range index from the segment files" }, "Rebuild byte ranges");
  rebuild.addEventListener("click", () => guarded(msg, rebuild, async () => {
    const r = await post(`/api/content/${enc(item.name)}/generate-byteranges`);
    msg.ok(`Rebuilt: ${r.segments} segments, ${r.parts} parts.`);
  }));
  const urls = item.urls || {};
  return h("section.card.item", { dataset: { content: item.name } },
    h("div.item-head",
      h("h2", item.name),
      h("div.actions",
        h("a.button.small", { href: link("playback", { content: item.name }) }, "Play"),
        h("a.button.small.test-session", { href: link("session", randomId(), { content: item.name }), title: "Opens a new testing session playing this item" }, "Test in a session"),
        rebuild)),
    h("p.muted",
      [item.codec, item.max_resolution, `segments ${fmtNum(item.segment_duration)} s`,
        item.part_duration ? `parts ${fmtNum(item.part_duration * 1000, 0)} ms` : null,
        `loop ${fmtDuration(item.duration)}`, item.source ? `from ${item.source}` : null,
        item.usable === false ? "NOT USABLE" : null].filter(Boolean).join(" · ")),
    h("div.variants", (item.variants || []).map((v) =>
      h("span.chip", `${v.id} ${v.resolution || ""} ${fmtNum(v.bandwidth / 1e6, 2)} Mbps`)),
    (item.audio || []).map((a) => h("span.chip.audio", `${a.id} ${a.codecs || ""}`))),
    h("table.urls", h("tbody", URL_ROWS.filter(([k]) => urls[k]).map(([k, proto, dur]) =>
      h("tr", h("td", proto), h("td", dur), h("td.url", h("code", urls[k])), h("td", copyButton(urls[k])))))),
    msg);
}

export async function mount(root) {
  const list = h("div.items");
  const filter = h("input", { type: "search", placeholder: "Filter by name or codec…" });
  const msg = errorLine();
  let items = [];
  let preparing = "";

  function render() {
    const q = filter.value.trim().toLowerCase();
    const shown = items.filter((i) => !q || i.name.toLowerCase().includes(q) || String(i.codec).toLowerCase().includes(q));
    clear(list, shown.length ? shown.map(itemCard)
      : h("p.empty", items.length ? "No item matches the filter." : preparing
        ? ["The demo is being prepared (", preparing, ") — it appears here by itself when ready. ", h("a", { href: "#/" }, "See progress on Home")]
        : ["No encoded content yet. ", h("a", { href: "#/" }, "Seed the demo on Home"), " or ", h("a", { href: "#/sources" }, "upload a clip"), "."]));
  }

  async function load() {
    items = await get("/api/content");
    render();
  }
  filter.addEventListener("input", render);
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => guarded(msg, refresh, async () => { await load(); toast("Content reloaded"); }));

  clear(root, pageHeader("Content", "Encoded items served as looping live streams. Copy a URL into any player.", filter, refresh), msg, list);
  await guarded(msg, null, load);
  // live: an encode that completes adds its item without a reload (jobs SSE, no timer)
  let done = null;
  const feed = sse("/api/jobs/stream", {
    jobs(d) {
      const jobs = d.jobs || [];
      const complete = new Set(jobs.filter((j) => j.status === "complete").map((j) => j.job_id));
      const active = jobs.filter((j) => ["uploading", "queued", "encoding"].includes(j.status));
      const was = preparing;
      preparing = active.length ? active.map((j) => `${j.name} ${fmtNum(j.progress, 0)} %`).join(", ") : "";
      if (done !== null && [...complete].some((id) => !done.has(id))) guarded(msg, null, load);
      else if (!items.length && was !== preparing) render();
      done = complete;
    },
  });
  return () => feed.close();
}
