// Jobs: the encode queue with progress bars and stage; a job view (#/jobs/<id>) with the
// live encoder log over the WebSocket, cancel and delete.
//
// The list is live from SSE GET /api/jobs/stream (the full list on connect and after every
// change, at most every 250 ms); rows are updated in place. The status filter is applied here.

import { get, post, del, enc } from "../js/api.js";
import {
  h, clear, card, errorLine, guarded, progressBar, setProgress, pageHeader, statusBadge, fmtTime,
  fmtDuration, select, fmtNum,
} from "../js/ui.js";
import { jsonSocket, sse } from "../js/live.js";
import { link, setQuery } from "../js/app.js";

const ACTIVE = new Set(["uploading", "queued", "encoding"]);

function jobActions(job, msg, after) {
  const cancel = h("button.small", { type: "button", hidden: !ACTIVE.has(job.status) }, "Cancel");
  const rm = h("button.small.danger", { type: "button", hidden: job.status === "encoding" }, "Delete");
  cancel.addEventListener("click", () => guarded(msg, cancel, async () => {
    await post(`/api/jobs/${enc(job.job_id)}/cancel`);
    msg.ok("Cancelled.");
    after();
  }));
  rm.addEventListener("click", () => guarded(msg, rm, async () => {
    if (!confirm(`Delete job ${job.name || job.job_id}? Its log is removed too.`)) return;
    await del(`/api/jobs/${enc(job.job_id)}`);
    after(true);
  }));
  return h("span.actions", cancel, " ", rm);
}

async function listView(root, route) {
  const msg = errorLine();
  const statusFilter = select("status", [["", "all"], "uploading", "queued", "encoding", "complete", "failed", "cancelled"],
    route.query.get("status") || "");
  const body = h("tbody");
  const rows = new Map(); // job_id -> {tr, update(job)}, updated in place so buttons survive updates
  let latest = null;

  function row(job) {
    const bar = progressBar(0);
    const stage = h("span.muted.small");
    const st = h("span");
    const err = h("div.small.msg.error");
    const outputs = h("div.muted.small");
    const created = h("td");
    const eta = h("td");
    const actions = h("td");
    const tr = h("tr", { dataset: { job: job.job_id } },
      h("td", h("a", { href: link("jobs", job.job_id) }, job.name || job.job_id.slice(0, 8)), outputs),
      h("td", st),
      h("td.wide", bar, stage, err),
      created, eta, actions);
    let shown = null;
    function update(j) {
      setProgress(bar, j.progress, j.status === "complete" ? "done" : `${fmtNum(j.progress, 0)} %`);
      stage.textContent = j.stage || "";
      err.textContent = j.error || "";
      err.hidden = !j.error;
      outputs.textContent = (j.output_paths || []).join(", ");
      created.textContent = fmtTime(j.created_at);
      eta.textContent = j.eta_seconds ? fmtDuration(j.eta_seconds) : "–";
      if (shown !== j.status) { // badge and buttons change with the status only
        shown = j.status;
        clear(st, statusBadge(j.status));
        const rowMsg = errorLine();
        clear(actions, jobActions(j, rowMsg, () => {}), rowMsg);
      }
    }
    update(job);
    return { tr, update };
  }

  function render() {
    if (!latest) return;
    const want = statusFilter.value;
    const jobs = want ? latest.filter((j) => j.status === want) : latest;
    const keep = new Set(jobs.map((j) => j.job_id));
    for (const [id, r] of rows) {
      if (!keep.has(id)) { r.tr.remove(); rows.delete(id); }
    }
    if (!jobs.length) {
      clear(body, h("tr", h("td", { colspan: "6" }, h("p.empty", "No jobs."))));
      return;
    }
    const empty = body.querySelector("p.empty");
    if (empty) clear(body);
    jobs.forEach((j, i) => {
      let r = rows.get(j.job_id);
      if (r) r.update(j);
      else rows.set(j.job_id, r = row(j));
      if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null);
    });
  }

  statusFilter.addEventListener("change", () => { setQuery({ status: statusFilter.value }); render(); });
  clear(root,
    pageHeader("Jobs", "Encoding queue. Progress is live; open a job for its encoder log.", h("label.inline", "Status ", statusFilter)),
    msg,
    card(null, h("table.grid.jobs", h("thead", h("tr", ["Job", "Status", "Progress", "Created", "ETA", ""].map((c) => h("th", c)))), body)));
  const feed = sse("/api/jobs/stream", {
    jobs: (data) => {
      latest = data.jobs || [];
      msg.clear();
      render();
    },
  });
  return () => feed.close();
}

const OPTION_WORDS = {
  codec_selection: "Codecs", output_name: "Output name", max_resolution: "Largest rung",
  segment_duration: "Segment (s)", part_duration: "Part (s)", partial_durations: "Other segment lengths",
  gop_seconds: "GOP (s)", audio_bitrate_kbps: "Audio (kbps)", preset: "Preset",
};

/** The job's encode options in words (not raw JSON). */
function optionList(config, source) {
  const rows = Object.entries(config || {}).filter(([, v]) => v !== null && v !== undefined && v !== "" && !(Array.isArray(v) && !v.length));
  return h("dl.kv.options", rows.map(([k, v]) => {
    let text = Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v);
    if (k === "max_resolution" && source && source.resolution) text += ` (the ladder stops at the source's ${source.resolution.split("x")[1]}p)`;
    return [h("dt", OPTION_WORDS[k] || k.replace(/_/g, " ")), h("dd", text)];
  }));
}

async function jobView(root, jobId) {
  const msg = errorLine();
  const head = h("div");
  const bar = progressBar(0);
  const stage = h("span.muted");
  const logBox = h("pre.log#job-log");
  const follow = h("input", { type: "checkbox", checked: true });
  let sock = null;

  async function loadJob() {
    const job = await get(`/api/jobs/${enc(jobId)}`);
    let source = null;
    if (job.source_id) { try { source = await get(`/api/sources/${enc(job.source_id)}`); } catch (e) { /* deleted */ } }
    const actMsg = errorLine();
    clear(head,
      pageHeader(job.name || jobId, `Job ${jobId}`, jobActions(job, actMsg, (deleted) => {
        if (deleted) location.hash = "#/jobs"; else loadJob();
      })),
      actMsg,
      h("dl.kv",
        h("dt", "Status"), h("dd", statusBadge(job.status), job.error ? h("span.msg.error", " ", job.error) : null),
        h("dt", "Source"), h("dd", source ? h("a", { href: "#/sources", title: job.source_id }, source.original_filename || source.file_path)
          : h("span.muted", { title: job.source_id || "" }, job.source_id ? "deleted source" : "–"),
        source && source.duration ? h("span.muted", ` · ${fmtDuration(source.duration)}${source.resolution ? ` · ${source.resolution}` : ""}`) : null),
        h("dt", "Outputs"), h("dd", (job.output_paths || []).map((p) => h("a", { href: link("playback", { content: p }) }, p, " "))),
        h("dt", "Created"), h("dd", fmtTime(job.created_at)),
        h("dt", "Started"), h("dd", fmtTime(job.started_at)),
        h("dt", "Completed"), h("dd", fmtTime(job.completed_at)),
        h("dt", "Options"), h("dd", optionList(job.config, source))));
    setProgress(bar, job.progress);
    stage.textContent = [job.stage || "", job.eta_seconds ? `about ${fmtDuration(job.eta_seconds)} left` : ""].filter(Boolean).join(" · ");
    return job;
  }

  function appendLog(line) {
    logBox.append(line + "\n");
    if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
  }

  clear(root, head, msg,
    card("Progress", bar, stage),
    card("Encoder log", h("label.inline", follow, " follow"), logBox),
    h("p", h("a", { href: "#/jobs" }, "← all jobs")));
  try {
    await loadJob();
  } catch (err) {
    msg.show(err);
    return undefined;
  }
  sock = jsonSocket(`/api/jobs/${enc(jobId)}/stream`, (f) => {
    if (f.type === "log") appendLog(f.line);
    else if (f.type === "progress") {
      setProgress(bar, f.progress);
      stage.textContent = [f.status, f.stage, f.eta_seconds ? `about ${fmtDuration(f.eta_seconds)} left` : ""].filter(Boolean).join(" · ");
    } else if (f.type === "end") {
      appendLog(`[end: ${f.status}${f.error ? " — " + f.error : ""}]`);
      loadJob().catch(() => {});
    }
  }, (code) => {
    if (code === 4404) msg.show("This job does not exist (any more).");
    else if (code !== 1000) msg.info(`Log stream closed (code ${code}).`);
  });
  return () => sock && sock.close();
}

export async function mount(root, route) {
  if (route.args[0]) return jobView(root, route.args[0]);
  return listView(root, route);
}
