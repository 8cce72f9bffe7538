// Sources & Upload: the source library (delete, re-encode, scan) and a chunked, resumable
// upload with drag-and-drop, a progress bar and the encode options.
//
// Upload protocol (spec content.md §2): POST /api/upload/init -> POST /api/upload/chunk/{id}
// ?offset=N (raw body) ... -> POST /api/upload/complete/{id} {sha256}.  The SHA-256 is
// computed incrementally in the browser while the chunks are read.  After a failure the
// client asks GET /api/upload/{id} for received_size and continues from there; the job id
// is remembered in localStorage so picking the same file again after a reload resumes it.

import { get, post, del, enc, ApiError, describeError } from "../js/api.js";
import {
  h, clear, card, errorLine, guarded, progressBar, setProgress, pageHeader, table, fmtBytes,
  fmtTime, fmtDuration, statusBadge, field, select, toast,
} from "../js/ui.js";
import { Sha256 } from "../js/sha256.js";
import { watchJob } from "./home.js";

const MAX_CHUNK = 8 * 1024 * 1024;
const RESUME_KEY = "streamlab.uploads";

function resumeStore() {
  try { return JSON.parse(localStorage.getItem(RESUME_KEY) || "{}"); } catch (e) { return {}; }
}
function fileKey(file) {
  return `${file.name}|${file.size}|${file.lastModified}`;
}
function remember(file, jobId) {
  const s = resumeStore();
  if (jobId) s[fileKey(file)] = jobId; else delete s[fileKey(file)];
  localStorage.setItem(RESUME_KEY, JSON.stringify(s));
}

/** The encode options form; .values() returns the fields for init/reencode. */
export function encodeOptionsForm(prefix = "") {
  const codec = select("codec_selection", [["h264", "H.264"], ["hevc", "HEVC"], ["both", "H.264 + HEVC"], ["av1", "AV1"], ["all", "all"]], "h264");
  const maxres = select("max_resolution", [["", "source height"], "360p", "540p", "720p", "1080p", "1440p", "2160p"], "");
  const fmt = select("hls_format", [["fmp4", "fMP4"], ["ts", "MPEG-TS"], ["both", "both"]], "fmp4");
  const seg = h("input", { name: "segment_duration", type: "number", min: "1", max: "60", step: "1", value: "6" });
  const parts = h("input", { name: "partial_durations", type: "text", value: "200", title: "comma-separated part durations in ms" });
  const gop = h("input", { name: "gop_duration", type: "number", min: "0.2", max: "10", step: "0.1", value: "1" });
  const pad = select("padding", [["none", "none"], ["black", "black"], ["pink", "pink"]], "none");
  const name = h("input", { name: "output_name", type: "text", placeholder: "default: the source name" });
  const msgs = {};
  const wrap = (label, ctl, key, hint) => {
    msgs[key] = h("small.field-error");
    const f = field(label, ctl, hint);
    f.append(msgs[key]);
    return f;
  };
  const el = h("div.form-grid" + (prefix ? "." + prefix : ""),
    wrap("Output name", name, "output_name"),
    wrap("Codecs", codec, "codec_selection"),
    wrap("Max resolution", maxres, "max_resolution"),
    wrap("HLS format", fmt, "hls_format"),
    wrap("Segment (s)", seg, "segment_duration"),
    wrap("Parts (ms)", parts, "partial_durations", "one job per value"),
    wrap("GOP (s)", gop, "gop_duration"),
    wrap("Letterbox", pad, "padding"));
  el.values = () => {
    const out = {
      codec_selection: codec.value, hls_format: fmt.value, padding: pad.value,
      segment_duration: Number(seg.value), gop_duration: Number(gop.value),
      partial_durations: parts.value.split(/[,\s]+/).filter(Boolean).map(Number),
    };
    if (maxres.value) out.max_resolution = maxres.value;
    if (name.value.trim()) out.output_name = name.value.trim();
    return out;
  };
  el.showFieldErrors = (err) => {
    for (const m of Object.values(msgs)) m.textContent = "";
    if (!(err instanceof ApiError)) return;
    for (const [k, v] of Object.entries(err.fields)) {
      const key = k.replace(/\[\]$/, "");
      if (msgs[key]) msgs[key].textContent = v;
    }
  };
  el.nameInput = name;
  return el;
}

class Uploader {
  constructor(file, options, ui, chunkOverride) {
    this.file = file;
    this.options = options;
    this.ui = ui; // {progress(received, total, label), log(text)}
    this.chunkOverride = chunkOverride;
    this.jobId = null;
    this.aborted = false;
  }

  async readSlice(start, end) {
    return new Uint8Array(await this.file.slice(start, end).arrayBuffer());
  }

  /** Hashes bytes [0, upto) that the server already has (on resume). */
  async rehash(hasher, upto, chunk) {
    for (let off = 0; off < upto; off += chunk) {
      hasher.update(await this.readSlice(off, Math.min(upto, off + chunk)));
      this.ui.progress(off, this.file.size, "checking what the server already has…");
    }
  }

  async start() {
    const file = this.file;
    let received = 0;
    let chunk = 0;
    const previous = resumeStore()[fileKey(file)];
    if (previous) {
      try {
        const st = await get(`/api/upload/${enc(previous)}`);
        if (st.status === "uploading" && st.expected_size === file.size) {
          this.jobId = previous;
          received = st.received_size;
          this.ui.log(`Resuming the earlier upload at ${fmtBytes(received)}.`);
        }
      } catch (e) { /* gone: start fresh */ }
    }
    if (!this.jobId) {
      const init = await post("/api/upload/init", { filename: file.name, file_size: file.size, ...this.options });
      this.jobId = init.job_id;
      this.jobIds = init.job_ids;
      chunk = init.chunk_size_hint;
      remember(file, this.jobId);
    }
    chunk = Math.max(1, Math.min(this.chunkOverride || chunk || MAX_CHUNK, MAX_CHUNK));
    const hasher = new Sha256();
    if (received > 0) await this.rehash(hasher, received, chunk);
    let hashed = received;
    let failures = 0;
    while (received < file.size) {
      if (this.aborted) throw new Error("Upload paused. Pick the same file again to resume.");
      const end = Math.min(file.size, received + chunk);
      const bytes = await this.readSlice(received, end);
      try {
        const r = await post(`/api/upload/chunk/${enc(this.jobId)}?offset=${received}`, new Blob([bytes]),
          { headers: { "Content-Type": "application/octet-stream" } });
        if (hashed === received) { hasher.update(bytes); hashed = end; }
        received = r.received_size !== undefined ? r.received_size : end;
        failures = 0;
        this.ui.progress(received, file.size);
      } catch (err) {
        failures += 1;
        if (failures > 5) throw err;
        // Ask the server what it has and continue from there (resumable after any failure).
        this.ui.log(`Chunk at ${fmtBytes(received)} failed (${describeError(err)}); resuming…`);
        await new Promise((r) => setTimeout(r, 300 * failures));
        const st = await get(`/api/upload/${enc(this.jobId)}`);
        if (st.received_size !== hashed) {
          // the hash must cover exactly the bytes the server has: start the hash over
          const fresh = new Sha256();
          await this.rehash(fresh, st.received_size, chunk);
          Object.assign(hasher, fresh);
          hashed = st.received_size;
        }
        received = st.received_size;
      }
    }
    this.ui.progress(file.size, file.size, "verifying…");
    const done = await post(`/api/upload/complete/${enc(this.jobId)}`, { sha256: hasher.hex() });
    remember(file, null);
    return done;
  }
}

export async function mount(root, route) {
  const chunkKb = Number(route.query.get("chunk_kb")) || 0;
  const sourcesBox = h("div");
  const listMsg = errorLine();
  const opts = encodeOptionsForm();
  const fileInput = h("input#upload-file", { type: "file", accept: "video/*,.mp4,.mov,.mkv,.webm,.ts" });
  const drop = h("div.dropzone#dropzone", { tabindex: "0" },
    h("strong", "Drop a video file here"), h("span.muted", " or "), h("label.button", "Choose a file", fileInput));
  const bar = progressBar(0, "");
  bar.hidden = true;
  const upMsg = errorLine();
  const upLog = h("div.muted.small");
  const jobsBox = h("div.upload-jobs");
  const pauseBtn = h("button.small", { type: "button", hidden: true }, "Pause");
  const sockets = [];
  let current = null;
  let chosen = null;
  // choosing a file does not start anything: the tester sees what will happen first
  const readyBox = h("div.upload-ready#upload-ready", { hidden: true });
  const startBtn = h("button.primary#upload-start", { type: "button" }, "Upload and encode");
  const cancelChoice = h("button", { type: "button" }, "Choose another file");

  /** What the encode will make of a clip of *duration* s (the loop is whole segments). */
  function loopNote(duration) {
    const seg = opts.values().segment_duration || 6;
    if (!duration || !Number.isFinite(duration)) return "The loop is a whole number of segments of the length chosen above.";
    // the encoder's rule (jobs/ladder.py output_duration): whole segments, at least one
    const loop = Math.max(1, Math.floor(duration / seg + 1e-3)) * seg;
    if (loop > duration + 0.05) return `This ${duration.toFixed(1)} s clip is shorter than one ${seg} s segment: it becomes a ${seg} s loop (the end is padded). Shorter segments avoid the padding.`;
    if (duration - loop < 0.05) return `This ${duration.toFixed(1)} s clip loops as it is (${loop / seg} segments of ${seg} s).`;
    return `This ${duration.toFixed(1)} s clip becomes a ${loop} s loop: a live loop is a whole number of ${seg} s segments, so the last ${(duration - loop).toFixed(1)} s are left out. Shorter segments keep more of it.`;
  }
  function choose(file) {
    chosen = { file, duration: null };
    const note = h("p.loop-note", loopNote(null));
    clear(readyBox, h("p", h("strong", file.name), ` · ${fmtBytes(file.size)}`), note, h("div.row", startBtn, cancelChoice));
    readyBox.hidden = false;
    // the clip's duration, read by the browser (nothing is uploaded yet)
    const probe = document.createElement("video");
    probe.preload = "metadata";
    const src = URL.createObjectURL(file);
    probe.onloadedmetadata = () => {
      if (chosen && chosen.file === file) { chosen.duration = probe.duration; note.textContent = loopNote(probe.duration); }
      URL.revokeObjectURL(src);
    };
    probe.onerror = () => URL.revokeObjectURL(src);
    probe.src = src;
  }
  startBtn.addEventListener("click", () => { if (chosen) { const f = chosen.file; readyBox.hidden = true; chosen = null; upload(f); } });
  cancelChoice.addEventListener("click", () => { chosen = null; readyBox.hidden = true; });
  opts.addEventListener("input", () => { if (chosen) readyBox.querySelector(".loop-note").textContent = loopNote(chosen.duration); });

  async function loadSources() {
    const sources = await get("/api/sources");
    clear(sourcesBox, table([
      { label: "Name", render: (s) => h("div", h("strong", s.name), h("div.muted.small", s.original_filename || "")) },
      { label: "Status", render: (s) => [statusBadge(s.status), s.error ? h("div.small.msg.error", s.error) : null] },
      { label: "Resolution", render: (s) => s.resolution || "–" },
      { label: "Codec", render: (s) => [s.codec, s.audio_codec].filter(Boolean).join(" / ") || "–" },
      { label: "Duration", render: (s) => fmtDuration(s.duration) },
      { label: "Size", render: (s) => fmtBytes(s.file_size) },
      { label: "Uploaded", render: (s) => fmtTime(s.uploaded_at) },
      { label: "", cls: "actions", render: (s) => sourceActions(s) },
    ], sources, "No sources yet. Upload a clip above."));
  }

  function sourceActions(s) {
    const msg = errorLine();
    const re = h("button.small", { type: "button", title: "Encode again with the options above" }, "Re-encode");
    const rm = h("button.small.danger", { type: "button" }, "Delete");
    re.addEventListener("click", () => guarded(msg, re, async () => {
      const r = await post(`/api/sources/${enc(s.source_id)}/reencode`, opts.values()).catch((err) => {
        opts.showFieldErrors(err);
        throw err;
      });
      msg.ok(`Queued ${r.job_ids.length} job(s).`);
      for (const id of r.job_ids) watch(id);
    }));
    rm.addEventListener("click", () => guarded(msg, rm, async () => {
      if (!confirm(`Delete source ${s.name}?`)) return;
      await del(`/api/sources/${enc(s.source_id)}`);
      toast(`Deleted ${s.name}`);
      await loadSources();
    }));
    return h("div", re, " ", rm, msg);
  }

  function watch(jobId) {
    const box = h("div.upload-job", { dataset: { job: jobId } });
    jobsBox.append(box);
    sockets.push(watchJob(jobId, box, (end) => {
      if (end.status === "complete") toast("Encode complete — the item is in Content.", "ok");
      loadSources().catch(() => {});
    }));
  }

  async function upload(file) {
    if (current) { upMsg.show("An upload is already running."); return; }
    upMsg.clear();
    opts.showFieldErrors(null);
    bar.hidden = false;
    pauseBtn.hidden = false;
    setProgress(bar, 0, `0 / ${fmtBytes(file.size)}`);
    const started = performance.now();
    current = new Uploader(file, opts.values(), {
      progress(received, total, label) {
        const secs = (performance.now() - started) / 1000;
        const rate = secs > 0 ? received / secs : 0;
        setProgress(bar, total ? (received / total) * 100 : 100,
          label || `${fmtBytes(received)} / ${fmtBytes(total)}${rate ? ` · ${fmtBytes(rate)}/s` : ""}`);
      },
      log(text) { upLog.textContent = text; },
    }, chunkKb * 1024);
    try {
      const done = await current.start();
      setProgress(bar, 100, "uploaded");
      upMsg.ok(`Uploaded ${file.name}. Encoding ${done.job_ids.length} job(s)…`);
      for (const id of done.job_ids) watch(id);
      loadSources().catch(() => {});
    } catch (err) {
      opts.showFieldErrors(err);
      upMsg.show(err);
    } finally {
      current = null;
      pauseBtn.hidden = true;
    }
  }

  pauseBtn.addEventListener("click", () => { if (current) current.aborted = true; });
  fileInput.addEventListener("change", () => { if (fileInput.files[0]) choose(fileInput.files[0]); fileInput.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) choose(f);
  });

  const scanBtn = h("button", { type: "button" }, "Scan originals folder");
  scanBtn.addEventListener("click", () => guarded(listMsg, scanBtn, async () => {
    const r = await post("/api/sources/scan-originals");
    listMsg.ok(`Scanned ${r.scanned}: ${r.new} new, ${r.removed} removed, ${r.invalid} invalid.`);
    await loadSources();
  }));
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => guarded(listMsg, refresh, loadSources));

  clear(root,
    pageHeader("Sources & Upload", "Upload clips (chunked and resumable) and encode them into HLS/DASH ladders."),
    card("Upload", h("h3", "1. Encode options"), opts, h("h3", "2. The clip"), drop, readyBox, h("div.row", bar, pauseBtn), upLog, upMsg, jobsBox),
    card("Source library", h("div.row", scanBtn, refresh), listMsg, sourcesBox));
  await guarded(listMsg, null, loadSources);
  return () => {
    if (current) current.aborted = true;
    for (const s of sockets) s.close();
  };
}
