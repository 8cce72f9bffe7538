// Home / Setup: setup status, one-click demo seeding (progress over the job WebSocket),
// what to do next.

import { get, post, enc } from "../js/api.js";
import { h, clear, card, errorLine, guarded, progressBar, setProgress, statusBadge, pageHeader, fmtNum, fmtDuration, randomId } from "../js/ui.js";
import { jsonSocket, sse } from "../js/live.js";
import { link } from "../js/app.js";

const DEMO_NAME = "streamlab_demo";

/** The first-run card's content for the setup status' ``demo`` (and the live demo job). */
function demoView(demo, job, seedBtn) {
  const state = demo.state;
  if (state === "ready") {
    const q = { content: demo.content };
    return h("div.demo-ready",
      h("p", h("strong", "The demo stream is ready. "), "It loops live as LL-HLS, HLS and DASH."),
      h("div.row",
        h("a.button.primary#play-demo", { href: link("playback", { ...q, protocol: "hls", duration: "6s", engine: "hls" }) }, "▶ Play the demo"),
        h("a.button#start-testing", { href: link("session", randomId(), q) }, "Start testing — break it on purpose")),
      h("p.muted.small", "Start testing opens a session: the player gets its own port, then you arm faults and shaping and watch the network log."));
  }
  if (state === "synthesising" || state === "encoding") {
    const pct = job ? job.progress : demo.progress || 0;
    const eta = job ? job.eta_seconds : demo.eta_seconds;
    const bar = progressBar(state === "encoding" ? pct : 0, state === "encoding" ? `${fmtNum(pct, 0)} %` : "generating…");
    return h("div.demo-preparing#demo-preparing",
      h("p", h("strong", "The demo is being prepared. "),
        state === "synthesising" ? "Step 1 of 2: generating a test-pattern clip with a frame counter…"
          : ["Step 2 of 2: encoding the HLS/DASH ladder", job && job.stage ? ` (${job.stage})` : "", eta ? ` — about ${fmtDuration(eta)} left` : "", "."]),
      bar,
      h("p.muted.small", "This page updates by itself; the demo plays as soon as it is ready. ",
        (job || demo).job_id ? h("a", { href: `#/jobs/${enc((job || demo).job_id)}` }, "Follow the encoder log") : null));
  }
  return h("div",
    h("p", "No content yet. Generate a test-pattern clip with a frame counter and encode it into an HLS/DASH ladder, or ",
      h("a", { href: "#/sources" }, "upload your own clip"), "."),
    h("div.row", seedBtn));
}

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
  const demoBox = h("div#demo-card");
  let lastDemo = { state: "absent" };
  let demoJob = null;
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
    lastDemo = s.demo || (s.content_count ? { state: "ready" } : { state: "absent" });
    if (lastDemo.state === "ready" && !lastDemo.content) lastDemo.state = "absent";
    if (lastDemo.state !== "encoding") demoJob = null;
    clear(demoBox, demoView(lastDemo, demoJob, seedBtn));
    return s;
  }

  initBtn.addEventListener("click", () => guarded(initMsg, initBtn, async () => {
    await post("/api/setup/initialize");
    initMsg.ok("Storage initialized.");
    await load();
  }));

  seedBtn.addEventListener("click", () => guarded(seedMsg, seedBtn, async () => {
    const pending = post("/api/setup/seed");
    setTimeout(() => load().catch(() => {}), 300); // shows "being prepared" while the clip is generated
    const r = await pending;
    if (r.status === "exists") {
      await load();
      seedMsg.ok("The demo already exists or is being prepared — see above.");
      return;
    }
    if (sock) sock.close();
    sock = watchJob(r.job_id, seedBox, (end) => {
      if (end.status === "complete") seedMsg.ok("Demo content is ready.");
      else seedMsg.show(`The demo encode ended: ${end.status}${end.error ? " — " + end.error : ""}`);
      load().catch(() => {});
    });
  }));

  clear(root,
    pageHeader("Welcome to streamlab", "A looping-live origin with per-player fault injection, shaping and an encoder."),
    h("div.cols",
      card("Setup status", status, h("div.row", initBtn), initMsg),
      card("Demo content", demoBox, seedMsg, seedBox)),
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
  // live: the jobs feed moves the demo's progress bar and re-reads the setup status when a
  // job appears or changes status (no timer)
  let statuses = "";
  let reloading = null;
  const feed = sse("/api/jobs/stream", {
    jobs(d) {
      const jobs = d.jobs || [];
      demoJob = jobs.find((j) => j.name === DEMO_NAME && ["uploading", "queued", "encoding"].includes(j.status)) || null;
      const key = jobs.map((j) => `${j.job_id}:${j.status}`).join(",");
      if (key !== statuses || (demoJob && lastDemo.state !== "encoding")) {
        statuses = key;
        if (!reloading) reloading = load().catch(() => {}).finally(() => { reloading = null; });
      } else if (demoJob) {
        clear(demoBox, demoView({ ...lastDemo, state: "encoding" }, demoJob, seedBtn));
      }
    },
  });
  return () => { if (sock) sock.close(); feed.close(); };
}
