// Scenarios (#/scenarios?session=<id> | ?group=<id>): load, edit and validate a scenario,
// start it on a session or a group, watch its timeline advance, stop it, read the verdict.
//
// API (docs/scenarios.md): GET /api/scenarios/schema, POST /api/scenarios/validate,
// POST|GET|DELETE /api/sessions/{id}/scenario, GET /api/sessions/{id}/scenario/report.xml,
// POST /api/session-group/{gid}/scenario.  Live: the sessions SSE stream carries each
// session's run summary ("scenario"); the page re-reads the full run (GET .../scenario)
// when the summary changes, at most once a second while it runs.

import { get, post, del, enc, ApiError, describeError } from "../js/api.js";
import { h, clear, card, errorLine, guarded, pageHeader, badge, fmtNum, progressBar, setProgress, select } from "../js/ui.js";
import { sse } from "../js/live.js";
import { link, setQuery } from "../js/app.js";
import { EXAMPLES } from "../js/scenario-examples.js";

const DRAFT_KEY = "streamlab.scenario.draft";
const STATE_KIND = { running: "info", passed: "ok", failed: "error", stopped: "muted", error: "error", pending: "muted", active: "info", done: "ok" };

/** Whether the editor holds YAML rather than JSON (a JSON scenario starts with "{"). */
export function isYaml(text) {
  const t = String(text || "").trimStart();
  return t !== "" && !t.startsWith("{") && !t.startsWith("[");
}

/** "/steps/2/set" style path of a validation error (the API's, or "" for the whole document). */
function errorPath(e) {
  const p = e.path ?? e.pointer ?? e.loc ?? "";
  return Array.isArray(p) ? "/" + p.join("/") : String(p);
}

/** The errors of a validation answer: [{path, message}] (400 bodies, or a 200 with valid:false). */
export function validationErrors(body) {
  if (!body || typeof body !== "object") return [{ path: "", message: String(body || "invalid") }];
  const list = Array.isArray(body.errors) ? body.errors : [];
  const out = list.map((e) => (typeof e === "string" ? { path: "", message: e } : { path: errorPath(e), message: e.message || e.error || JSON.stringify(e) }));
  if (!out.length && body.fields && typeof body.fields === "object") {
    for (const [k, v] of Object.entries(body.fields)) out.push({ path: k, message: String(v) });
  }
  if (!out.length) out.push({ path: "", message: [body.error, typeof body.detail === "string" ? body.detail : ""].filter(Boolean).join(": ") || "invalid" });
  return out;
}

/** Where a JSON.parse error points: "line 3, column 7" (from the position in its message). */
export function jsonErrorWhere(text, err) {
  const m = /position (\d+)/.exec(err.message || "");
  if (!m) return "";
  const pos = Number(m[1]);
  const before = text.slice(0, pos).split("\n");
  return `line ${before.length}, column ${before[before.length - 1].length + 1}`;
}

/** A set of controls in words: "nftables_bandwidth_mbps = 1.5, manifest_fault_type = stale_playlist". */
export function describeSet(set) {
  if (!set || typeof set !== "object") return "";
  return Object.entries(set).map(([k, v]) => `${k} = ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

function fmtS(v) {
  return v === null || v === undefined ? "–" : `${fmtNum(v, 1)} s`;
}

/** What a summary says that matters for a re-read (not the ticking clocks). */
function summaryKey(sum) {
  if (sum === undefined) return "unknown";
  if (!sum) return "none";
  const { elapsed_s: _e, next_step_in_s: _n, ...rest } = sum;
  return JSON.stringify(rest);
}

export async function mount(root, route) {
  const q = route.query;
  const cleanups = [];

  // ------------------------------------------------------------------ editor
  const editor = h("textarea#scenario-editor.code", { spellcheck: false, rows: "22", "aria-label": "Scenario (JSON)" });
  editor.value = localStorage.getItem(DRAFT_KEY) || JSON.stringify(EXAMPLES[0].scenario, null, 2);
  editor.addEventListener("input", () => {
    localStorage.setItem(DRAFT_KEY, editor.value);
    clear(errorsBox);
    validity.textContent = "";
    validity.className = "badge";
  });
  const examples = select("example", [["", "Load an example…"], ...EXAMPLES.map((e, i) => [String(i), e.label])], "");
  examples.id = "scenario-example";
  examples.addEventListener("change", () => {
    const ex = EXAMPLES[Number(examples.value)];
    if (examples.value === "" || !ex) return;
    setEditor(JSON.stringify(ex.scenario, null, 2));
    examples.value = "";
  });
  const fileInput = h("input#scenario-file", { type: "file", accept: ".json,.yaml,.yml,application/json,application/yaml,text/yaml" });
  fileInput.addEventListener("change", async () => {
    const f = fileInput.files && fileInput.files[0];
    if (!f) return;
    const text = await f.text();
    if (/\.ya?ml$/i.test(f.name)) {
      setEditor(text);
      editorMsg.ok(`Loaded ${f.name} (YAML: sent as written, the server reads it).`);
      fileInput.value = "";
      return;
    }
    try {
      setEditor(JSON.stringify(JSON.parse(text), null, 2));
      editorMsg.ok(`Loaded ${f.name}.`);
    } catch (err) {
      setEditor(text);
      editorMsg.show(`${f.name} is not valid JSON: ${err.message}`);
    }
    fileInput.value = "";
  });
  const download = h("button.small", { type: "button" }, "Save to file");
  download.addEventListener("click", () => {
    let name = "scenario";
    const yaml = isYaml(editor.value);
    if (yaml) name = (/^name:\s*["']?([^"'\n]+)/m.exec(editor.value) || [])[1] || name;
    else try { name = JSON.parse(editor.value).name || name; } catch (e) { /* keep the default name */ }
    const type = yaml ? "application/yaml" : "application/json";
    const a = h("a", { href: URL.createObjectURL(new Blob([editor.value], { type })), download: `${String(name).trim()}.${yaml ? "yaml" : "json"}` });
    document.body.append(a);
    a.click();
    a.remove();
  });
  const format = h("button.small", { type: "button" }, "Format");
  format.addEventListener("click", () => {
    if (isYaml(editor.value)) { editorMsg.info("Format works on JSON; YAML is sent as written."); return; }
    const doc = parseEditor();
    if (doc !== undefined) setEditor(JSON.stringify(doc, null, 2));
  });
  const validateBtn = h("button#scenario-validate", { type: "button" }, "Validate");
  const validity = h("span.badge#scenario-validity");
  const errorsBox = h("ul.scenario-errors#scenario-errors");
  const editorMsg = errorLine();

  function setEditor(text) {
    editor.value = text;
    editor.dispatchEvent(new Event("input"));
  }

  function showErrors(list) {
    validity.textContent = `${list.length} error${list.length === 1 ? "" : "s"}`;
    validity.className = "badge error";
    clear(errorsBox, list.map((e) => h("li", h("code.path", e.path || "(scenario)"), " ", h("span", e.message))));
  }

  /** The editor's JSON, or undefined (and the parse error shown). */
  function parseEditor() {
    try {
      return JSON.parse(editor.value);
    } catch (err) {
      const where = /line \d+/.test(err.message || "") ? "" : jsonErrorWhere(editor.value, err);
      showErrors([{ path: "", message: `Not valid JSON${where ? ` at ${where}` : ""}: ${err.message}` }]);
      return undefined;
    }
  }

  /**
   * What to send: the parsed JSON document, or the YAML text as a Blob typed
   * application/yaml (the server reads YAML); undefined when the JSON does not parse.
   */
  function editorBody() {
    if (isYaml(editor.value)) return new Blob([editor.value], { type: "application/yaml" });
    return parseEditor();
  }

  /** Validates on the server; true when valid (errors shown otherwise). */
  async function validate() {
    editorMsg.clear();
    const doc = editorBody();
    if (doc === undefined) return false;
    try {
      const r = await post("/api/scenarios/validate", doc);
      if (r && r.valid === false) { showErrors(validationErrors(r)); return false; }
      clear(errorsBox);
      validity.textContent = "valid";
      validity.className = "badge ok";
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) { showErrors(validationErrors(err.body)); return false; }
      throw err;
    }
  }
  validateBtn.addEventListener("click", () => guarded(editorMsg, validateBtn, validate));

  // ------------------------------------------------------------------ target + start
  let sessions = [];
  const target = h("select#scenario-target", { "aria-label": "Session or group" });
  const startBtn = h("button.primary#scenario-start", { type: "button" }, "Start");
  const startMsg = errorLine();
  let want = q.get("group") ? `g:${q.get("group")}` : q.get("session") ? `s:${q.get("session")}` : "";

  function paintTargets() {
    if (document.activeElement === target) return;
    const opts = [];
    const groups = new Map();
    for (const s of sessions) {
      const run = s.scenario && s.scenario.state === "running" ? ` · running ${s.scenario.name || "a scenario"}` : "";
      opts.push([`s:${s.session_id}`, `${s.player_id} (#${s.session_id}, port ${s.x_forwarded_port_external})${run}`]);
      if (s.group_id) groups.set(s.group_id, (groups.get(s.group_id) || 0) + 1);
    }
    for (const [g, n] of groups) opts.push([`g:${g}`, `group ${g} (${n} sessions)`]);
    if (want && !opts.some(([v]) => v === want)) opts.unshift([want, `${want.startsWith("g:") ? "group" : "session"} ${want.slice(2)} (not live)`]);
    if (!opts.length) opts.push(["", "no live sessions — open a testing session first"]);
    const key = JSON.stringify(opts);
    if (target.dataset.key === key) return;
    target.dataset.key = key;
    clear(target, opts.map(([v, text]) => h("option", { value: v, selected: v === want }, text)));
    if (!want && opts[0][0]) { want = opts[0][0]; target.value = want; }
    follow();
  }
  target.addEventListener("change", () => {
    want = target.value;
    follow();
  });

  startBtn.addEventListener("click", () => guarded(startMsg, startBtn, async () => {
    if (!want) { startMsg.show("Pick a session (open a testing session first)."); return; }
    if (!(await validate())) { startMsg.show("Not started: the scenario has errors (listed under the editor)."); return; }
    const doc = editorBody();
    const id = want.slice(2);
    try {
      const r = want.startsWith("g:")
        ? await post(`/api/session-group/${enc(id)}/scenario`, doc)
        : await post(`/api/sessions/${enc(id)}/scenario`, doc);
      const runs = Array.isArray(r && r.runs) ? r.runs : [r];
      startMsg.ok(`Started ${(runs[0] && runs[0].name) || "the scenario"} on ${runs.length > 1 ? `${runs.length} sessions` : `session ${runs[0] && runs[0].session_id !== undefined ? runs[0].session_id : id}`}.`);
      if (runs[0] && runs[0].steps) showRun(runs[0]);
      refresh(true);
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) {
        showErrors(validationErrors(err.body));
        startMsg.show(`Not started: ${describeError(err)}`);
      } else if (err instanceof ApiError && err.status === 409) {
        startMsg.show("A scenario is already running there: stop it first (or wait for its verdict).");
      } else {
        throw err;
      }
    }
  }));

  // ------------------------------------------------------------------ run view
  const runHead = h("div.run-head");
  const runState = h("span.badge#run-state");
  const progress = progressBar(0, "");
  const nowLine = h("div#run-now");
  const timeline = h("div.timeline#run-timeline");
  const stepsBody = h("tbody#run-steps");
  const activeBox = h("dl.kv#run-active");
  const logBody = h("tbody#run-log");
  const verdictBox = h("div#run-verdict");
  const stopBtn = h("button.danger#scenario-stop", { type: "button" }, "Stop and restore");
  const runMsg = errorLine();
  const links = h("span.run-links");
  const membersLine = h("div.muted#run-members");
  const runCard = h("section.card#run-card",
    h("div.item-head", h("h2", "Run"), h("div.actions", runState, links, stopBtn)),
    runHead, runMsg,
    h("div.run-progress", progress), nowLine,
    membersLine,
    h("h3", "Timeline"), timeline,
    h("div.table-scroll", h("table.grid.run-steps", h("thead", h("tr", ["#", "Step", "At", "For", "Sets", "State"].map((c) => h("th", c)))), stepsBody)),
    h("div.cols",
      h("div", h("h3", "Active controls"), activeBox),
      h("div", h("h3", "Run log"), h("div.table-scroll.run-log", h("table.grid.run-log", h("thead", h("tr", ["t", "Step", "Event", "Details"].map((c) => h("th", c)))), logBody)))),
    h("h3", "Verdict"), verdictBox);
  const noRun = h("p.empty#run-none", "No scenario has run on this session yet.");

  let haveSessions = false; // the first snapshot of the sessions feed arrived
  let watched = null; // session id whose run is shown
  let run = null;
  let fetchedAt = 0;
  let lastKey = "";
  let inFlight = false;
  let again = false;

  stopBtn.addEventListener("click", () => guarded(runMsg, stopBtn, async () => {
    if (watched === null) return;
    const r = await del(`/api/sessions/${enc(watched)}/scenario`);
    runMsg.ok("Stopped; every control the run set is restored.");
    if (r && r.steps) showRun(r);
    refresh(true);
  }));

  /** The session whose run is shown: the target session, or a member of the target group. */
  function follow() {
    let sid = null;
    if (want.startsWith("s:")) sid = want.slice(2);
    else if (want.startsWith("g:")) {
      const members = sessions.filter((s) => String(s.group_id) === want.slice(2));
      const busy = members.find((s) => s.scenario) || members[0];
      sid = busy ? String(busy.session_id) : null;
      clear(membersLine, members.length ? ["Group runs: ", members.map((s) => [h("a", { href: link("scenarios", { session: s.session_id }) }, `${s.player_id} (#${s.session_id})`),
        " ", badge(s.scenario ? s.scenario.state : "no run", STATE_KIND[s.scenario && s.scenario.state] || "muted"), " "])] : "");
    } else clear(membersLine);
    setQuery({ session: want.startsWith("s:") ? want.slice(2) : "", group: want.startsWith("g:") ? want.slice(2) : "" });
    if (sid !== watched) {
      watched = sid;
      run = null;
      runMsg.clear();
      showRun(null);
      const sum = summaryOf(sid);
      lastKey = summaryKey(sum);
      // a live session without a run has nothing to read (its summary says so)
      if (sum !== null && haveSessions) refresh(true);
    }
  }

  /** The watched session's run summary from the feed: undefined = not a live session. */
  function summaryOf(sid) {
    const me = sessions.find((s) => String(s.session_id) === String(sid));
    return me ? (me.scenario ?? null) : undefined;
  }

  /** Re-reads the watched session's run (one request at a time). */
  async function refresh(force = false) {
    if (watched === null) return;
    if (inFlight) { again = true; return; }
    if (!force && Date.now() - fetchedAt < 900) return;
    inFlight = true;
    const sid = watched;
    try {
      const r = await get(`/api/sessions/${enc(sid)}/scenario`);
      if (sid === watched) { fetchedAt = Date.now(); showRun(r && r.steps ? r : null); }
    } catch (err) {
      if (sid === watched) {
        if (err instanceof ApiError && err.status === 404) showRun(null);
        else runMsg.show(err);
      }
    } finally {
      inFlight = false;
      if (again) { again = false; refresh(true); }
    }
  }

  function showRun(r) {
    run = r;
    fetchedAt = Date.now();
    runCard.hidden = !r;
    noRun.hidden = !!r;
    if (!r) return;
    runState.textContent = r.state;
    runState.className = `badge ${STATE_KIND[r.state] || ""}`;
    stopBtn.disabled = r.state !== "running";
    clear(runHead, h("p", h("strong", r.name || "(unnamed)"), ` on session #${r.session_id}`,
      r.seed !== undefined && r.seed !== null ? [" · seed ", h("code", String(r.seed))] : "",
      r.started_at ? ` · started ${new Date(r.started_at).toLocaleTimeString([], { hour12: false })}` : "", ` · run ${r.id}`));
    clear(links,
      h("a.button.small", { href: `/api/sessions/${enc(r.session_id)}/scenario`, target: "_blank" }, "Run JSON"),
      " ",
      r.verdict ? h("a.button.small#report-link", { href: `/api/sessions/${enc(r.session_id)}/scenario/report.xml`, target: "_blank" }, "JUnit report.xml") : "",
      " ",
      h("a.button.small", { href: link("session", sessionPlayer(r.session_id) || "", { play: "0" }) }, "Session"),
      " ",
      r.scenario ? editThis(r.scenario) : "");
    if (r.error) runMsg.show(`The run ended with an error: ${r.error}`);
    paintSteps(r);
    paintClock();
    clear(activeBox, Object.keys(r.active || {}).length
      ? Object.entries(r.active).map(([k, v]) => [h("dt", k), h("dd", typeof v === "object" ? JSON.stringify(v) : String(v))])
      : h("dd.muted", "nothing set by the run right now"));
    const atBottom = logBody.parentElement && logBody.closest(".table-scroll")
      ? logBody.closest(".table-scroll").scrollTop + logBody.closest(".table-scroll").clientHeight >= logBody.closest(".table-scroll").scrollHeight - 4 : true;
    const stepName = (i) => {
      if (i === null || i === undefined) return "–";
      const st = (r.steps || []).find((x) => x.index === i);
      return st && st.id ? `${st.id} (#${i})` : `#${i}`;
    };
    clear(logBody, (r.log || []).map((e) => h("tr", { dataset: { event: e.event } },
      h("td.num", fmtS(e.t_s)), h("td", stepName(e.step)), h("td", e.event),
      h("td.small",
        e.fields && typeof e.fields === "object" ? describeSet(e.fields) : (e.fields ?? ""),
        e.kept && Object.keys(e.kept).length ? h("div.muted", `left as changed meanwhile: ${describeSet(e.kept)}`) : "",
        e.error ? h("div.msg.error", e.error) : ""))));
    if (atBottom && logBody.closest(".table-scroll")) logBody.closest(".table-scroll").scrollTop = 1e9;
    paintVerdict(r);
  }

  function editThis(scenario) {
    const b = h("button.small", { type: "button", title: "Put this run's scenario into the editor" }, "Edit this scenario");
    b.addEventListener("click", () => { setEditor(JSON.stringify(scenario, null, 2)); editor.scrollIntoView({ block: "nearest" }); });
    return b;
  }

  function sessionPlayer(sid) {
    const s = sessions.find((x) => String(x.session_id) === String(sid));
    return s ? s.player_id : "";
  }

  function runLength(r) {
    let end = Number(r.duration_s) || 0;
    for (const s of r.steps || []) end = Math.max(end, (Number(s.at_s) || 0) + (Number(s.for_s) || 0));
    return end || 1;
  }

  /** The times a step takes effect: [at_s] or, with repeat, every `every` s `times` times. */
  function occurrences(s) {
    const at = Number(s.at_s) || 0;
    const rep = s.repeat;
    if (!rep || !(Number(rep.every) > 0)) return [at];
    const n = Math.max(1, Math.min(200, Number(rep.times) || 1));
    return Array.from({ length: n }, (_, k) => at + k * Number(rep.every));
  }

  function runLength(r) {
    let end = Number(r.duration_s) || 0;
    for (const s of r.steps || []) {
      const occ = occurrences(s);
      end = Math.max(end, occ[occ.length - 1] + (Number(s.for_s) || 0));
    }
    return end || 1;
  }

  function paintSteps(r) {
    const total = runLength(r);
    clear(stepsBody, (r.steps || []).map((s) => h("tr", { class: `step-${s.state}${s.index === r.current_step ? " current" : ""}`, dataset: { step: s.index, state: s.state } },
      h("td.num", String(s.index)), h("td", s.id || "–"),
      h("td.num", fmtS(s.at_s), s.repeat ? h("div.muted.small", `every ${fmtS(s.repeat.every)} × ${s.repeat.times}`) : ""),
      h("td.num", s.for_s ? fmtS(s.for_s) : "–"),
      h("td.small", describeSet(s.set)),
      h("td", badge(s.state, STATE_KIND[s.state] || ""), s.applied > 1 ? h("span.muted.small", ` applied ${s.applied}×`) : ""))));
    clear(timeline,
      (r.steps || []).map((s) => {
        const width = s.for_s ? (100 * Number(s.for_s)) / total : 0;
        const label = s.id || `step ${s.index}`;
        return h("div.tl-row", h("span.tl-label", { title: describeSet(s.set) }, label),
          h("div.tl-track", occurrences(s).map((at, k) => h(`div.tl-bar.${occurrenceState(r, s, k, at)}${width ? "" : ".instant"}`, {
            style: { left: `${(100 * at) / total}%`, width: width ? `${width}%` : "" },
            title: `${label}: ${fmtS(at)}${s.for_s ? ` for ${fmtS(s.for_s)}` : ""} — ${describeSet(s.set)}`,
          }))));
      }),
      h("div.tl-cursor#tl-cursor"),
      h("div.tl-row.tl-axis", h("span.tl-label"), h("div.tl-track",
        [0, 0.25, 0.5, 0.75, 1].map((f) => h("span.tl-tick", { style: { left: `${f * 100}%` } }, `${Math.round(f * total)} s`)))));
  }

  /** The state of one occurrence of a repeated step (the run reports the step's state). */
  function occurrenceState(r, s, k, at) {
    if (!s.repeat) return s.state;
    if (k < (s.applied || 0) - 1) return "done";
    if (k === (s.applied || 0) - 1) return s.state === "active" ? "active" : "done";
    return "pending";
  }

  /** Elapsed time and countdown, advanced locally between two reads of the run. */
  function paintClock() {
    if (!run) return;
    const running = run.state === "running";
    const drift = running ? (Date.now() - fetchedAt) / 1000 : 0;
    const total = runLength(run);
    const elapsed = Math.min(total, (Number(run.elapsed_s) || 0) + drift);
    const duration = run.duration_s || total;
    setProgress(progress, (100 * elapsed) / duration, `${fmtNum(elapsed, 1)} s of ${fmtNum(duration, 0)} s`);
    const cursor = timeline.querySelector("#tl-cursor");
    if (cursor) cursor.style.left = `calc(148px + (100% - 148px) * ${Math.min(1, elapsed / total)})`;
    const cur = (run.steps || []).find((s) => s.index === run.current_step);
    const next = run.next_step_in_s === null || run.next_step_in_s === undefined ? null : Math.max(0, run.next_step_in_s - drift);
    const parts = [];
    if (running) {
      parts.push(cur ? `Current step: ${cur.id || `#${cur.index}`} (${cur.index + 1} of ${(run.steps || []).length})` : "Waiting for the first step");
      parts.push(next !== null ? `next step in ${fmtNum(next, 1)} s` : "no more steps");
    } else {
      parts.push({
        passed: "Finished: every expectation met.", failed: "Finished: some expectations were not met.",
        stopped: "Stopped: every control the run set is restored.", error: "The run ended with an error (see the log).",
      }[run.state] || `The run is ${run.state}.`);
    }
    nowLine.textContent = parts.join(" · ");
  }
  const ticker = setInterval(paintClock, 250);
  cleanups.push(() => clearInterval(ticker));

  function paintVerdict(r) {
    const v = r.verdict;
    if (!v) {
      clear(verdictBox, h("p.muted", r.state === "running" ? "The verdict comes when the run ends." : "No verdict (the run was stopped or failed to run)."));
      return;
    }
    const exps = v.expectations || [];
    clear(verdictBox,
      h(`div.banner.${v.passed ? "ok" : "error"}#verdict-banner`, v.passed ? "PASSED" : "FAILED",
        ` — ${exps.filter((e) => e.passed).length} of ${exps.length} expectations met`),
      h("table.grid.verdict#verdict-table",
        h("thead", h("tr", ["Expectation", "Rule", "Observed", "Result", "Detail"].map((c) => h("th", c)))),
        h("tbody", exps.map((e) => h("tr", { class: e.passed ? "pass" : "fail" },
          h("td", e.name || "–"), h("td", h("code", e.expr || "")),
          h("td.num", e.observed === null || e.observed === undefined ? "–" : typeof e.observed === "object" ? JSON.stringify(e.observed) : fmtNum(e.observed)),
          h("td", badge(e.passed ? "pass" : "fail", e.passed ? "ok" : "error")), h("td.small", e.detail || ""))))),
      h("p", h("a#report-xml", { href: `/api/sessions/${enc(r.session_id)}/scenario/report.xml`, target: "_blank" }, "JUnit XML report"),
        " — for CI systems (", h("code", `GET /api/sessions/${r.session_id}/scenario/report.xml`), ")"));
  }

  // ------------------------------------------------------------------ layout + live feed
  clear(root,
    pageHeader("Scenarios", "Fault timelines with a verdict: load or write one, validate it, run it on a session.",
      h("a.button.small", { href: "/api/scenarios/schema", target: "_blank" }, "JSON Schema")),
    h("div.cols.scenario-top",
      card("Scenario",
        h("div.controls-row", examples, h("label.button.small.file", "Load file… ", fileInput), format, download),
        editor,
        h("small.hint", "JSON, or the same document in YAML (sent as application/yaml). docs/scenarios.md describes the format."),
        h("div.row", validateBtn, validity),
        errorsBox, editorMsg),
      card("Run it",
        h("p.muted", "The scenario sets the session's controls on its timeline and restores every one it set when it ends or is stopped. A player should be playing through the session (open it in Testing session, or point a device at its port) and posting metrics for the expectations on player metrics."),
        h("label.field", h("span.label", "Session or group"), target),
        h("div.row", startBtn), startMsg)),
    noRun, runCard);
  runCard.hidden = true;

  const feed = sse("/api/sessions/stream", {
    sessions(d) {
      sessions = d.sessions || [];
      haveSessions = true;
      paintTargets();
      if (want.startsWith("g:")) follow();
      const sum = summaryOf(watched);
      const key = summaryKey(sum);
      if (key !== lastKey) {
        lastKey = key;
        if (sum === null) showRun(null); else refresh(true);
      } else if ((sum && sum.state === "running") || (run && run.state === "running")) refresh(false);
    },
  });
  cleanups.push(() => feed.close());
  paintTargets();
  return () => { for (const c of cleanups) c(); };
}
