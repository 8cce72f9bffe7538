// The dashboard shell: shared navigation and a hash router.
//
// Routes are "#/<page>/<arg>?query" — one URL per page, so every view can be bookmarked
// and shared.  A path deep link (/dashboard/session/7) is turned into its hash route.
// Each page module exports mount(root, {args, query}) and may return a cleanup function
// that closes its live feeds and players when the user navigates away.

import { h, clear } from "./ui.js";
import { describeError } from "./api.js";

const PAGES = [
  { path: "", label: "Home", module: "../pages/home.js" },
  { path: "content", label: "Content", module: "../pages/content.js" },
  { path: "sources", label: "Sources & Upload", module: "../pages/sources.js" },
  { path: "jobs", label: "Jobs", module: "../pages/jobs.js" },
  { path: "playback", label: "Playback", module: "../pages/playback.js" },
  { path: "mosaic", label: "Mosaic", module: "../pages/mosaic.js" },
  { path: "session", label: "Testing session", module: "../pages/session.js" },
  { path: "scenarios", label: "Scenarios", module: "../pages/scenarios.js" },
  { path: "sessions", label: "Sessions", module: "../pages/sessions.js" },
  { path: "monitor", label: "Monitor", module: "../pages/monitor.js" },
  { path: "server", label: "Server", module: "../pages/server.js" },
];

let cleanup = null;
let generation = 0;

/** "#/a/b?x=1" -> {page:"a", args:["b"], query: URLSearchParams} */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "", args: parts.slice(1), query: new URLSearchParams(qs || "") };
}

/** Builds a hash link: link("session", "p1", {tab:"segment"}). */
export function link(page, ...rest) {
  let query = null;
  if (rest.length && typeof rest[rest.length - 1] === "object" && rest[rest.length - 1] !== null) {
    query = rest.pop();
  }
  let out = "#/" + [page, ...rest.filter((x) => x !== undefined && x !== "").map(encodeURIComponent)].join("/");
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    if (s) out += "?" + s;
  }
  return out;
}

/** Replaces the query of the current route without re-mounting the page. */
export function setQuery(values) {
  const r = parseHash();
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || v === null || v === "") r.query.delete(k);
    else r.query.set(k, v);
  }
  const qs = r.query.toString();
  const hash = "#/" + [r.page, ...r.args.map(encodeURIComponent)].filter((x) => x !== "").join("/") + (qs ? "?" + qs : "");
  history.replaceState(null, "", hash);
}

function renderNav(current) {
  const nav = document.getElementById("nav");
  clear(nav, PAGES.map((p) => h("a", {
    href: "#/" + p.path,
    class: p.path === current ? "active" : "",
    "aria-current": p.path === current ? "page" : false,
  }, p.label)));
}

async function route() {
  const gen = ++generation;
  const r = parseHash();
  const page = PAGES.find((p) => p.path === r.page);
  if (cleanup) {
    try { cleanup(); } catch (e) { console.warn("cleanup failed", e); }
    cleanup = null;
  }
  renderNav(page ? page.path : null);
  const root = document.getElementById("view");
  if (!page) {
    clear(root, h("div.card", h("h1", "Page not found"), h("p", "There is no page called “", r.page, "”. "),
      h("a", { href: "#/" }, "Go home")));
    return;
  }
  document.title = `${page.label} · streamlab`;
  clear(root);
  try {
    const mod = await import(page.module);
    if (gen !== generation) return;
    const c = await mod.mount(root, r);
    if (gen !== generation) {
      if (typeof c === "function") c();
      return;
    }
    cleanup = typeof c === "function" ? c : null;
  } catch (err) {
    console.warn(err);
    clear(root, h("div.card", h("h1", page.label), h("p.msg.error", "This page failed to load: " + describeError(err))));
  }
}

function start() {
  // Deep links by path (/dashboard/session/7) become hash routes (#/session/7).
  const rest = location.pathname.replace(/^\/dashboard\/?/, "");
  if (rest && rest !== "index.html") {
    history.replaceState(null, "", "/dashboard/#/" + rest + location.search + location.hash.replace(/^#\/?/, ""));
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
