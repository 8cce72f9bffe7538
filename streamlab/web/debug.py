"""``GET /debug``: one HTML page of the daemon's internals (sessions, ports, workers,
jobs, shaping backend, config with secrets redacted).  Read-only, no scripts."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

if TYPE_CHECKING:
    from streamlab.tap import StreamlabService


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pre(value: Any) -> str:
    return f"<pre>{html.escape(json.dumps(value, indent=2, default=str))}</pre>"


class DebugPage(Resource):
    """The ``/debug`` resource; *svc* is the StreamlabService (its subsystems, bus, config)."""

    isLeaf = True

    def __init__(self, svc: StreamlabService) -> None:
        super().__init__()
        self.svc = svc

    def render_GET(self, request: IRequest) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        return self.page().encode("utf-8")

    def page(self) -> str:
        """The HTML text."""
        svc = self.svc
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>streamlab debug</title>",
                 "<style>body{font:13px monospace;margin:1em}table{border-collapse:collapse}"
                 "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}h2{margin-top:1.5em}</style>",
                 "</head><body><h1>streamlab internals</h1>"]
        sessions = svc.sessions
        registry = getattr(sessions, "registry", None)
        parts.append("<h2>Sessions</h2>")
        if registry is not None:
            rows = registry.snapshot()
            parts.append(_table(rows, ["session_id", "player_id", "group_id", "x_forwarded_port",
                                       "x_forwarded_port_external", "player_ip", "all_requests_count",
                                       "segments_count", "fault_count_total", "bytes_out_total",
                                       "mbps_transfer_rate", "client_rtt_ms", "control_revision",
                                       "last_request"]))
            pool = registry.pool
            parts.append("<h2>Session ports</h2>")
            parts.append(_pre({"range": f"{pool.lo}-{pool.hi}", "in_use": pool.in_use,
                               "releasing": pool.releasing, "free": pool.free_count,
                               "sse_clients": len(registry.stream.clients),
                               "sse_revision": registry.feed.revision,
                               "fault_engines": {s.session_id: s.engine.state() for s in registry.all()
                                                 if hasattr(s.engine, "state")}}))
        else:
            parts.append("<p><em>sessions subsystem not wired</em></p>")
        for name in ("origin", "jobs", "shaping"):
            comp = getattr(svc, name)
            parts.append(f"<h2>{html.escape(name)}</h2>")
            parts.append(_pre(_describe(comp)))
        parts.append("<h2>Components</h2>")
        parts.append(_pre(sorted(svc.namedServices)))
        parts.append("<h2>Event bus</h2>")
        bus = svc.bus
        topics = sorted(getattr(bus, "_subs", {}))
        parts.append(_pre({t: bus.subscribers(t) for t in topics}))
        parts.append("<h2>Config (secrets redacted)</h2>")
        parts.append(_pre(svc.config.redacted()))
        parts.append("</body></html>")
        return "".join(parts)


def _describe(comp: Any) -> Any:
    """Best-effort status of a component for the page (never raises)."""
    if comp is None:
        return "not wired"
    try:
        resource = getattr(comp, "resource", None)
        workers = getattr(resource, "workers", None)
        if workers is not None and callable(getattr(workers, "status", None)):
            return {"workers": workers.status()}
        if callable(getattr(comp, "queue_length", None)) and callable(getattr(comp, "list", None)):
            jobs = comp.list()
            return {"queue_length": comp.queue_length(), "jobs": len(jobs),
                    "recent": [{k: j.get(k) for k in ("job_id", "status", "progress", "output_name")}
                               for j in jobs[-20:]]}
        for attr in ("debug_info", "status", "state"):
            fn = getattr(comp, attr, None)
            if callable(fn):
                return fn()
    except Exception as exc:  # noqa: BLE001 - the page must render anyway
        return f"status failed: {exc}"
    return type(comp).__name__
