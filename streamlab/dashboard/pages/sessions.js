// Sessions: the live list (SSE /api/sessions/stream) with faults, shaping and counters;
// open, delete, clear.

import { post, del, enc } from "../js/api.js";
import { h, clear, errorLine, guarded, pageHeader, card, fmtNum, badge, fmtClock, toast } from "../js/ui.js";
import { sse } from "../js/live.js";
import { link } from "../js/app.js";
import { lifetimeText } from "./session.js";

const PREFIXES = [["all", "all"], ["segment", "seg"], ["manifest", "man"], ["master_manifest", "master"]];

export function faultSummary(s) {
  const out = [];
  for (const [p, short] of PREFIXES) {
    const t = s[`${p}_failure_type`];
    const prob = s[`${p}_failure_probability`];
    if (t && t !== "none") out.push(badge(`${short}: ${t}${prob > 0 ? ` p=${prob}` : ""}`, "error"));
  }
  if (s.manifest_fault_type && s.manifest_fault_type !== "none") out.push(badge(`manifest: ${s.manifest_fault_type}`, "error"));
  if (s.transport_failure_type && s.transport_failure_type !== "none") {
    out.push(badge(`transport: ${s.transport_failure_type}${s.transport_fault_active ? " (active)" : ""}`, "error"));
  }
  if (s.transfer_active_timeout_seconds) out.push(badge(`active timeout ${s.transfer_active_timeout_seconds}s`, "warn"));
  if (s.transfer_idle_timeout_seconds) out.push(badge(`idle timeout ${s.transfer_idle_timeout_seconds}s`, "warn"));
  const run = s.scenario;
  if (run && run.state) {
    const kind = { running: "info", passed: "ok", failed: "error", error: "error" }[run.state] || "muted";
    out.push(h("a", { href: link("scenarios", { session: s.session_id }), title: "Open the scenario run" }, badge(`scenario ${run.name || ""}: ${run.state}`, kind)));
  }
  return out.length ? out : [h("span.muted", "none")];
}

export function shapingSummary(s) {
  const parts = [];
  if (s.nftables_pattern_enabled) parts.push(`pattern step ${s.nftables_pattern_step}/${(s.nftables_pattern_steps || []).length} @ ${fmtNum(s.nftables_pattern_rate_runtime_mbps)} Mbps`);
  else if (s.nftables_bandwidth_mbps) parts.push(`${fmtNum(s.nftables_bandwidth_mbps)} Mbps`);
  if (s.nftables_delay_ms) parts.push(`+${fmtNum(s.nftables_delay_ms, 0)} ms`);
  if (s.nftables_packet_loss) parts.push(`${fmtNum(s.nftables_packet_loss)} % loss`);
  return parts.length ? parts.join(" · ") : h("span.muted", "unshaped");
}

export async function mount(root) {
  const msg = errorLine();
  const body = h("tbody");
  const count = h("span.muted");
  const clearBtn = h("button.danger", { type: "button" }, "Clear all sessions");
  const newId = h("input", { type: "text", placeholder: "player id", size: "14" });
  const openBtn = h("button.primary", { type: "submit" }, "Open session");
  const form = h("form.inline", newId, " ", openBtn);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = link("session", newId.value.trim() || `dash-${Math.random().toString(36).slice(2, 7)}`);
  });

  clearBtn.addEventListener("click", () => guarded(msg, clearBtn, async () => {
    if (!confirm("Remove every session? Their players lose their ports.")) return;
    const r = await post("/api/clear-sessions");
    toast(`Cleared ${r.cleared} session(s)`);
  }));

  // Rows are keyed by session id and updated in place (the SSE feed sends a snapshot
  // several times a second): the Delete button and its message survive the updates.
  const rows = new Map();
  const empty = h("tr", h("td", { colspan: "10" },
    h("p.empty", "No sessions. Point a player at the bootstrap port with ?player_id=…, or open one here.")));

  function cells(s) {
    return [
      h("td", h("a", { href: link("session", s.player_id) }, h("strong", s.player_id)),
        h("div.muted.small", `#${s.session_id} · port ${s.x_forwarded_port_external}${s.group_id ? ` · group ${s.group_id}` : ""}`)),
      h("td", h("div", s.player_ip || "–"), h("div.muted.small.ua", (s.user_agent || "").slice(0, 60))),
      h("td", faultSummary(s)),
      h("td", shapingSummary(s)),
      h("td.num", String(s.all_requests_count), h("div.muted.small", `${s.segments_count} seg · ${s.manifest_requests_count} man`)),
      h("td.num", h("span" + (s.fault_count_total ? ".msg.error" : ""), String(s.fault_count_total))),
      h("td.num", `${fmtNum(s.mbps_transfer_rate)} Mbps`, h("div.muted.small", `rtt ${fmtNum(s.client_rtt_ms, 1)} ms`)),
      h("td", s.server_video_rendition || "–", h("div.muted.small", s.player_metrics_state || "")),
      h("td", fmtClock(s.last_request), h("div", h(`span.badge.life.${lifetimeText(s)[1]}`, lifetimeText(s)[0]))),
    ];
  }

  function row(s) {
    const key = `${s.session_id}|${s.player_id}`;
    let r = rows.get(key);
    if (!r) {
      const rowMsg = errorLine();
      const rm = h("button.small.danger", { type: "button" }, "Delete");
      rm.addEventListener("click", () => guarded(rowMsg, rm, async () => {
        await del(`/api/session/${enc(s.session_id)}`);
      }));
      const keep = h("button.small.keep", { type: "button", title: "Keep the session while idle / let it expire as usual" });
      keep.addEventListener("click", () => guarded(rowMsg, keep, async () => {
        await post(`/api/session/${enc(s.session_id)}/keep`, { keep: keep.dataset.kept !== "1" });
      }));
      const actions = h("td.actions", keep, " ", rm, rowMsg);
      r = { tr: null, actions, keep };
      r.tr = h("tr", { dataset: { session: s.session_id } });
      rows.set(key, r);
    }
    r.keep.dataset.kept = s.session_keep ? "1" : "0";
    r.keep.textContent = s.session_keep ? "Release" : "Keep";
    r.tr.replaceChildren(...cells(s), r.actions);
    return [key, r.tr];
  }

  const feed = sse("/api/sessions/stream", {
    sessions(data) {
      const list = data.sessions || [];
      count.textContent = `${list.length} live`;
      const shown = list.map(row);
      const keep = new Set(shown.map(([k]) => k));
      for (const k of [...rows.keys()]) if (!keep.has(k)) rows.delete(k);
      const trs = shown.map(([, tr]) => tr);
      if (trs.length !== body.children.length || trs.some((tr, i) => body.children[i] !== tr)) {
        clear(body, trs.length ? trs : empty);
      }
    },
  });

  clear(root,
    pageHeader("Sessions", "Every player with its own port — updates live.", count, form, clearBtn),
    msg,
    card(null, h("div.sessions-scroll", h("table.grid.sessions",
      h("thead", h("tr", ["Player", "Client", "Faults", "Shaping", "Requests", "Faults hit", "Throughput", "Rendition", "Last request · lifetime", ""].map((c) => h("th", c)))),
      body))));
  return () => feed.close();
}
