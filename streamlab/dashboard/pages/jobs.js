// Jobs: the encode queue with progress bars and stage; a job view (#/jobs/<id>) with the
// live encoder log over the WebSocket, cancel and delete.
//
// The API has no stream for the job *list*: progress of every unfinished job comes live
// from its WebSocket; the list itself (to see jobs created elsewhere) is re-read when a
// job ends and every 10 s while the page is open.

import { get, post, del, enc } from "../js/api.js";
import {
  h, clear, card, errorLine, guarded, progressBar, setProgress, pageHeader, statusBadge, fmtTime,
  fmtDuration, select, fmtNum,
} from "../js/ui.js";
import { jsonSocket } from "../js/live.js";
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
  const sockets = new Map();
  let timer = null;

  function row(job) {
    const bar = progressBar(job.progress, job.status === "complete" ? "done" : `${fmtNum(job.progress, 0)} %`);
    const stage = h("span.muted.small", job.stage || "");
    const st = h("span", statusBadge(job.status));
    const rowMsg = errorLine();
    const tr = h("tr", { dataset: { job: job.job_id } },
      h("td", h("a", { href: link("jobs", job.job_id) }, job.name || job.job_id.slice(0, 8)),
        h("div.muted.small", (job.output_paths || []).join(", "))),
      h("td", st),
      h("td.wide", bar, stage, job.error ? h("div.small.msg.error", job.error) : null),
      h("td", fmtTime(job.created_at)),
      h("td", job.eta_seconds ? fmtDuration(job.eta_seconds) : "–"),
      h("td", jobActions(job, rowMsg, () => load()), rowMsg));
    if (ACTIVE.has(job.status) && !sockets.has(job.job_id)) {
      sockets.set(job.job_id, jsonSocket(`/api/jobs/${enc(job.job_id)}/stream`, (f) => {
        if (f.type === "progress") {
          setProgress(bar, f.progress, `${fmtNum(f.progress, 0)} %`);
          stage.textContent = f.stage || "";
          if (f.status) clear(st, statusBadge(f.status));
        } else if (f.type === "end") {
          const s = sockets.get(job.job_id);
          if (s) s.close();
          sockets.delete(job.job_id);
          load();
        }
      }));
    }
    return tr;
  }

  async function load() {
    await guarded(msg, null, async () => {
      const q = statusFilter.value ? `?status=${enc(statusFilter.value)}` : "";
      const jobs = await get(`/api/jobs${q}`);
      clear(body, jobs.length ? jobs.map(row) : h("tr", h("td", { colspan: "6" }, h("p.empty", "No jobs."))));
    });
  }

  statusFilter.addEventListener("change", () => { setQuery({ status: statusFilter.value }); load(); });
  clear(root,
    pageHeader("Jobs", "Encoding queue. Progress is live; open a job for its encoder log.", h("label.inline", "Status ", statusFilter)),
    msg,
    card(null, h("table.grid.jobs", h("thead", h("tr", ["Job", "Status", "Progress", "Created", "ETA", ""].map((c) => h("th", c)))), body)));
  await load();
  timer = setInterval(load, 10000);
  return () => {
    clearInterval(timer);
    for (const s of sockets.values()) s.close();
  };
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
    const actMsg = errorLine();
    clear(head,
      pageHeader(job.name || jobId, `Job ${jobId}`, jobActions(job, actMsg, (deleted) => {
        if (deleted) location.hash = "#/jobs"; else loadJob();
      })),
      actMsg,
      h("dl.kv",
        h("dt", "Status"), h("dd", statusBadge(job.status), job.error ? h("span.msg.error", " ", job.error) : null),
        h("dt", "Source"), h("dd", h("code", job.source_id || "–")),
        h("dt", "Outputs"), h("dd", (job.output_paths || []).map((p) => h("a", { href: link("playback", { content: p }) }, p, " "))),
        h("dt", "Created"), h("dd", fmtTime(job.created_at)),
        h("dt", "Started"), h("dd", fmtTime(job.started_at)),
        h("dt", "Completed"), h("dd", fmtTime(job.completed_at)),
        h("dt", "Options"), h("dd", h("code.small", JSON.stringify(job.config || {})))));
    setProgress(bar, job.progress);
    stage.textContent = job.stage || "";
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
      stage.textContent = `${f.status || ""} · ${f.stage || ""}`;
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
