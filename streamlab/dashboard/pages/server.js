// Server: version, shaping capabilities per feature, rendezvous/announce, setup summary,
// per-port shaping status and external client IPs.

import { get, post } from "../js/api.js";
import { h, clear, card, errorLine, guarded, pageHeader, badge, table, statusBadge } from "../js/ui.js";

function kv(obj) {
  return h("dl.kv", Object.entries(obj).map(([k, v]) => [h("dt", k),
    h("dd", v instanceof Node ? v : (v === null || v === undefined || v === "" ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v)))]));
}

async function section(title, fn) {
  const body = h("div");
  const msg = errorLine();
  const c = card(title, msg, body);
  try { await fn(body, msg); } catch (err) { msg.show(err); }
  return c;
}

export async function mount(root) {
  clear(root, pageHeader("Server", "What this streamlab box is and what it can do."));
  const cards = await Promise.all([
    section("Version", async (body) => {
      const v = await get("/api/version");
      clear(body, kv({ version: v.version, commit: v.commit, python: v.python, twisted: v.twisted }));
    }),
    section("Shaping capabilities", async (body) => {
      const c = await get("/api/nftables/capabilities");
      clear(body,
        kv({ status: badge(c.status, c.status === "enabled" ? "ok" : "warn"), platform: c.platform, backend: c.backend, reason: c.reason || "" }),
        table([
          { label: "Feature", render: (r) => r[0] },
          { label: "Carried out by", render: (r) => r[1] === false || r[1] === "none" || r[1] === "" ? badge("unavailable", "warn") : badge(String(r[1]), r[1] === true ? "ok" : "info") },
        ], Object.entries(c.features || {})),
        // -- shaping-truth: what scratch rules proved per interface (each session says its own carrier)
        table([
          { label: "Interface", render: (r) => r[0] },
          { label: "Rate", render: (r) => badge(r[1].rate, r[1].rate === "kernel" ? "ok" : "info") },
          { label: "Delay / loss", render: (r) => badge(r[1].delay, r[1].delay === "kernel" ? "ok" : "info") },
          { label: "Proof", render: (r) => r[1].reason || "proven" },
        ], Object.entries(c.interfaces || {}), "No interface proven (players are shaped in userspace)."));
        // -- end shaping-truth
    }),
    section("Pairing rendezvous", async (body, msg) => {
      const r = await get("/api/rendezvous");
      const btn = h("button", { type: "button" }, "Announce now");
      btn.addEventListener("click", () => guarded(msg, btn, async () => {
        await post("/api/announce-now");
        msg.ok("Announce triggered.");
      }));
      clear(body, kv({ url: r.url || "(not configured)", label: r.label, ...Object.fromEntries(
        Object.entries(r).filter(([k]) => !["url", "label"].includes(k))) }), h("div.row", btn));
    }),
    section("Setup", async (body) => {
      const s = await get("/api/setup");
      clear(body, kv({ status: statusBadge(s.status), media_dir: s.media_dir, state_dir: s.state_dir, writable: s.writable,
        initialized: s.initialized, ffmpeg: (s.ffmpeg || {}).version || "not found",
        encoders: ((s.ffmpeg || {}).encoders || []).join(", "), sources: s.sources_count, content: s.content_count,
        queue: s.queue_length, issues: (s.issues || []).join("; ") }));
    }),
    section("Shaping status per port", async (body) => {
      const st = await get("/api/nftables/status");
      const rows = Object.entries(st.ports || {}).map(([port, v]) => ({ port, ...v }));
      clear(body, h("p.muted", `backend: ${st.backend}`), table([
        { label: "Port", render: (r) => r.port },
        { label: "Rate (Mbps)", render: (r) => (r.rate_mbps === 0 ? "unlimited" : String(r.rate_mbps ?? "–")) },
        { label: "Delay (ms)", render: (r) => String(r.delay_ms ?? "–") },
        { label: "Loss (%)", render: (r) => String(r.loss_pct ?? "–") },
        { label: "Pattern", render: (r) => r.pattern_enabled ? `step ${r.pattern_step}` : "off" },
        { label: "Transport fault", render: (r) => String(r.transport_fault || "none") },
      ], rows, "No session ports."));
    }),
    section("External client IPs", async (body) => {
      const e = await get("/api/external-ips");
      clear(body, kv({ [`rolling (${e.rolling_window_s} s)`]: (e.rolling || []).map((x) => x.ip || x).join(", ") || "none",
        lifetime: `${e.lifetime_count} address(es)` }));
    }),
  ]);
  root.append(h("div.cols", cards), h("p.muted", "Internals: ", h("a", { href: "/debug" }, "/debug")));
}
