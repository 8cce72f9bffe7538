// Home / Setup: setup status, one-click demo seeding (progress over the job WebSocket),
// what to do next.

import { get, post, enc } from "../js/api.js";
import { h, clear, card, errorLine, guarded, progressBar, setProgress, statusBadge, pageHeader, fmtNum } from "../js/ui.js";
import { jsonSocket } from "../js/live.js";

export function watchJob(jobId, box, onEnd) {
  const bar = progressBar(0, "starting…");
  const stage = h("span.muted", "");
  clear(box, h("div.jobwatch", h("div", "Job ", h("a", { href: `#/jobs/${enc(jobId)}` }, jobId.slice(0, 8)), " ", stage), bar));
  const sock = jsonSocket(`/api/jobs/${enc(jobId)}/stream`, (f) => {
    if (f.type === "progress") {
      setProgress(bar, f.progress, `${fmtNum(f.progress, 0)} %`);
      stage.textContent = `${f.status || ""} ${f.stage ? "· " + f.stage : ""}`;
    } else if (f.type === "end") {
      if (f.status === "complete") setProgress(bar, 100, "complete");
      stage.textContent = f.status + (f.error ? ` — ${f.error}` : "");
      box.dataset.status = f.status;
      sock.close();
      if (onEnd) onEnd(f);
    }
  }, (code) => {
    if (code === 4404) stage.textContent = "job not found";
  });
  return sock;
}

export async function mount(root) {
  const status = h("div");
  const seedBox = h("div.seed");
  const seedMsg = errorLine();
  let sock = null;

  const seedBtn = h("button.primary#seed-demo", { type: "button" }, "Seed demo content");
  const initBtn = h("button", { type: "button" }, "Initialize storage");
  const initMsg = errorLine();

  async function load() {
    const s = await get("/api/setup");
    const ff = s.ffmpeg || {};
    clear(status,
      h("dl.kv",
        h("dt", "Status"), h("dd", statusBadge(s.status)),
        h("dt", "Media directory"), h("dd", h("code", s.media_dir || "–"), s.writable ? "" : " (not writable!)"),
        h("dt", "Initialized"), h("dd", s.initialized ? "yes" : "no"),
        h("dt", "ffmpeg"), h("dd", ff.found ? (ff.version || "found") : h("span.msg.error", "not found")),
        h("dt", "Encoders"), h("dd", (ff.encoders || []).join(", ") || "–"),
        h("dt", "Sources"), h("dd", String(s.sources_count ?? 0)),
        h("dt", "Encoded items"), h("dd", String(s.content_count ?? 0)),
        s.queue_length !== undefined ? [h("dt", "Jobs waiting"), h("dd", String(s.queue_length))] : null),
      (s.issues || []).length ? h("div.msg.error", h("strong", "Issues: "), s.issues.join("; ")) : null,
      (s.recommendations || []).length ? h("ul.recs", s.recommendations.map((r) => h("li", r))) : null);
    initBtn.hidden = !!s.initialized;
    return s;
  }

  initBtn.addEventListener("click", () => guarded(initMsg, initBtn, async () => {
    await post("/api/setup/initialize");
    initMsg.ok("Storage initialized.");
    await load();
  }));

  seedBtn.addEventListener("click", () => guarded(seedMsg, seedBtn, async () => {
    const r = await post("/api/setup/seed");
    if (r.status === "exists") {
      seedMsg.ok("The demo item already exists — see Content.");
      return;
    }
    seedMsg.info("Demo clip queued: synthesising and encoding…");
    if (sock) sock.close();
    sock = watchJob(r.job_id, seedBox, (end) => {
      if (end.status === "complete") seedMsg.ok("Demo content is ready. Open Content or Playback.");
      else seedMsg.show(`The demo encode ended: ${end.status}${end.error ? " — " + end.error : ""}`);
      load().catch(() => {});
    });
  }));

  clear(root,
    pageHeader("Welcome to streamlab", "A looping-live origin with per-player fault injection, shaping and an encoder."),
    h("div.cols",
      card("Setup status", status, h("div.row", initBtn), initMsg),
      card("Demo content",
        h("p", "Generate a test-pattern clip with a frame counter and encode it into an HLS/DASH ladder."),
        h("div.row", seedBtn), seedMsg, seedBox)),
    card("What next",
      h("ol.steps",
        h("li", h("a", { href: "#/content" }, "Content"), " — copy LL / 2 s / 6 s HLS and DASH URLs for any player."),
        h("li", h("a", { href: "#/sources" }, "Sources & Upload"), " — upload your own clips and encode them."),
        h("li", h("a", { href: "#/playback" }, "Playback"), " — watch a stream with hls.js, dash.js, shaka or native."),
        h("li", h("a", { href: "#/session" }, "Testing session"), " — give a player its own port, then break it on purpose: faults, shaping, network log."),
        h("li", h("a", { href: "#/sessions" }, "Sessions"), " — every player currently connected."))));

  try {
    await load();
  } catch (err) {
    clear(status, errorLine());
    status.firstChild.show(err);
  }
  return () => { if (sock) sock.close(); };
}
