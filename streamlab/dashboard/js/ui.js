// Small DOM helpers shared by every page (no framework).

import { describeError } from "./api.js";

/** h("div.cls#id", {attrs}, children...) — builds an element. */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec) || [null, spec, ""];
  const el = document.createElement(m[1] || "div");
  for (const tok of (m[2] || "").match(/[.#][\w-]+/g) || []) {
    if (tok[0] === ".") el.classList.add(tok.slice(1));
    else el.id = tok.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An inline error line placed next to a control; .show(err|string), .ok(text), .clear(). */
export function errorLine() {
  const el = h("div.msg", { role: "status", hidden: true });
  el.show = (err) => {
    el.hidden = false;
    el.className = "msg error";
    el.textContent = typeof err === "string" ? err : describeError(err);
  };
  el.ok = (text) => {
    el.hidden = false;
    el.className = "msg ok";
    el.textContent = text;
  };
  el.info = (text) => {
    el.hidden = false;
    el.className = "msg info";
    el.textContent = text;
  };
  el.clear = () => {
    el.hidden = true;
    el.textContent = "";
  };
  return el;
}

/** Runs *fn*; a thrown error is shown in *line* and the button is re-enabled. */
export async function guarded(line, button, fn) {
  if (line) line.clear();
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    if (line) line.show(err);
    else toast(describeError(err), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div.toast." + kind, text);
  box.append(t);
  setTimeout(() => t.remove(), 4000);
}

export function progressBar(value, label) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  return h("div.progress", { title: `${v.toFixed(1)} %` },
    h("div.bar", { style: { width: `${v}%` } }),
    h("span", label !== undefined ? label : `${v.toFixed(0)} %`));
}

export function setProgress(el, value, label) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  el.querySelector(".bar").style.width = `${v}%`;
  el.querySelector("span").textContent = label !== undefined ? label : `${v.toFixed(0)} %`;
  el.title = `${v.toFixed(1)} %`;
}

export function copyButton(text, label = "Copy") {
  const b = h("button.small.copy", { type: "button", title: text }, label);
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = "Copied";
    } catch (e) {
      // clipboard needs a secure context: fall back to selecting the text
      const ta = h("textarea", { style: { position: "fixed", opacity: "0" } }, text);
      document.body.append(ta);
      ta.select();
      try { document.execCommand("copy"); b.textContent = "Copied"; } catch (e2) { b.textContent = "Select & copy"; }
      ta.remove();
    }
    setTimeout(() => { b.textContent = label; }, 1200);
  });
  return b;
}

export function badge(text, kind = "") {
  return h("span.badge" + (kind ? "." + kind : ""), text);
}

export function statusBadge(status) {
  const kind = {
    complete: "ok", ready: "ok", queued: "info", uploading: "info", encoding: "warn",
    failed: "error", cancelled: "muted", invalid: "error", incomplete: "warn",
  }[status] || "";
  return badge(status || "?", kind);
}

/** A fresh player id for a new testing session. */
export function randomId() {
  return `qa-${Math.random().toString(36).slice(2, 7)}`;
}

export function fmtBytes(n) {
  n = Number(n) || 0;
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** The file name of a URL or URI, without its query ("playlist_360p.m3u8?timeline=continuous" -> "playlist_360p.m3u8"). */
export function fileName(url) {
  return String(url || "").split(/[?#]/)[0].split("/").pop();
}

export function fmtNum(v, digits = 2) {
  if (v === undefined || v === null || v === "") return "–";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString();
}

export function fmtClock(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function fmtDuration(s) {
  s = Number(s);
  if (!Number.isFinite(s)) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A labelled form field wrapper. */
export function field(label, control, hint) {
  return h("label.field", h("span.label", label), control, hint ? h("small.hint", hint) : null);
}

export function select(name, options, value) {
  const s = h("select", { name });
  for (const o of options) {
    const [v, text] = Array.isArray(o) ? o : [o, o];
    s.append(h("option", { value: v, selected: String(v) === String(value) }, text));
  }
  return s;
}

export function table(columns, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p.empty", empty);
  return h("table.grid",
    h("thead", h("tr", columns.map((c) => h("th", c.label)))),
    h("tbody", rows.map((r) => h("tr", columns.map((c) => h("td", { class: c.cls || "" }, c.render(r)))))));
}

export function card(title, ...children) {
  return h("section.card", title ? h("h2", title) : null, ...children);
}

export function pageHeader(title, subtitle, ...actions) {
  return h("div.page-header", h("div", h("h1", title), subtitle ? h("p.muted", subtitle) : null),
    h("div.actions", ...actions));
}

/** Loads a classic script once (vendor libraries expose globals). */
const scripts = new Map();
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.async = true;
      s.onload = () => resolve();
      s.onerror = () => {
        scripts.delete(src);
        reject(new Error(`Could not load ${src} — run "make assets" to install the player libraries.`));
      };
      document.head.append(s);
    }));
  }
  return scripts.get(src);
}
