"""``/api/sessions``, ``/api/session/...``, ``/api/clear-sessions``,
``/api/failure-settings/...``, ``/api/session-group/...``, ``/api/external-ips``.

Thin: every handler parses its input, calls the :class:`SessionRegistry`, and answers
JSON; errors go through the one error mapper.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import query, read_json, read_no_fields, read_object, respond
from streamlab.errors import Invalid, NotFound
from streamlab.proxy.registry import SessionRegistry
from streamlab.push.sse import SSEResource, encode_event


def _session_body(request: IRequest) -> dict[str, Any]:
    body = read_json(request)
    if not isinstance(body, dict):
        raise Invalid("invalid json", detail="expected a JSON object")
    return body


def _int_arg(request: IRequest, name: str, lo: int, hi: int) -> int | None:
    raw = query(request, name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise Invalid("invalid", fields={name: "must be an integer"}) from None
    if not lo <= value <= hi:
        raise Invalid("invalid", fields={name: f"must be between {lo} and {hi}"})
    return value


class SessionsApi:
    """The session API over one registry."""

    app = Klein()

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry

    # ------------------------------------------------------------------ listing

    @app.route("/sessions", methods=["GET"])
    async def list_sessions(self, request: IRequest) -> bytes:
        """Every live session (kernel counters read when asked, in one batch)."""
        await self.registry.refresh_all()
        return respond(request, self.registry.snapshot())

    @app.route("/sessions", methods=["POST"])
    def create_session(self, request: IRequest) -> bytes:
        """``{"player_id", "set"?}`` -> 201 created / 200 existing (session object)."""
        body = _session_body(request)
        player_id: Any = body.get("player_id")  # raw JSON: the registry validates it
        set_ = body.get("set") or {}
        if not isinstance(set_, dict):
            raise Invalid("invalid", fields={"set": "must be an object"})
        unknown = sorted(set(body) - {"player_id", "set"})
        if unknown:
            raise Invalid("invalid", fields={k: "unknown field" for k in unknown})
        session, created = self.registry.get_or_create(player_id, set_=set_)
        request.setHeader(b"location", f"/api/session/{session.session_id}".encode())
        return respond(request, self.registry.to_json(session), 201 if created else 200)

    @app.route("/sessions/stream", methods=["GET"])
    def stream(self, request: IRequest) -> Any:
        """SSE: the full list on connect, then on change."""
        return SSEResource(self.registry.feed.attach)

    @app.route("/clear-sessions", methods=["POST"])
    def clear(self, request: IRequest) -> bytes:
        """Remove every session."""
        read_no_fields(request)
        n, _ = self.registry.clear()
        return respond(request, {"cleared": n})

    # ------------------------------------------------------------------ one session

    @app.route("/session/<sid>", methods=["GET"])
    async def get_session(self, request: IRequest, sid: str) -> bytes:
        """One session (kernel counters read when asked, not from the last poll)."""
        await self.registry.refresh(self.registry.get(sid))
        return respond(request, self.registry.to_json(self.registry.get(sid)))

    @app.route("/session/<sid>", methods=["DELETE"])
    def delete_session(self, request: IRequest, sid: str) -> bytes:
        """Remove one session."""
        session = self.registry.get(sid)
        self.registry.remove(session.session_id)
        return respond(request, {"deleted": session.session_id})

    @app.route("/session/<sid>", methods=["PATCH"])
    def patch_session(self, request: IRequest, sid: str) -> bytes:
        """``{"set", "fields"?, "base_revision"?}``."""
        self.registry.get(sid)
        body = _session_body(request)
        if not body:
            raise Invalid("no fields provided")
        set_ = body.get("set")
        if set_ is None:
            raise Invalid("no fields provided")
        if not isinstance(set_, dict):
            raise Invalid("invalid", fields={"set": "must be an object"})
        unknown = sorted(set(body) - {"set", "fields", "base_revision"})
        if unknown:
            raise Invalid("invalid", fields={k: "unknown field" for k in unknown})
        out = self.registry.patch(sid, set_, body.get("fields"), body.get("base_revision"))
        return respond(request, {"session": out, "control_revision": out["control_revision"]})

    @app.route("/session/<sid>/update", methods=["POST"])
    def legacy_update(self, request: IRequest, sid: str) -> bytes:
        """Legacy: the same fields as a flat object."""
        return self._flat(request, sid)

    @app.route("/failure-settings/<sid>", methods=["POST"])
    def failure_settings(self, request: IRequest, sid: str) -> bytes:
        """Legacy per-session fault settings (flat object)."""
        return self._flat(request, sid)

    def _flat(self, request: IRequest, sid: str) -> bytes:
        self.registry.get(sid)
        body = read_object(request)
        if not body:
            raise Invalid("no fields provided")
        base = body.pop("base_revision", None)
        out = self.registry.patch(sid, body, None, base, coerce_strings=True)
        return respond(request, {"session": out, "control_revision": out["control_revision"]})

    @app.route("/session/<sid>/metrics", methods=["POST"])
    def metrics(self, request: IRequest, sid: str) -> bytes:
        """Player observations (never touches controls)."""
        self.registry.get(sid)
        body = _session_body(request)
        # {"set": {...}}, or the legacy flat form (the player_metrics_* keys themselves)
        set_ = body.get("set") if "set" in body else body
        if "set" in body and len(body) > 1:
            raise Invalid("invalid", fields={str(k): "unknown field" for k in body if k != "set"})
        if not isinstance(set_, dict):
            raise Invalid("invalid", fields={"set": "must be an object"})
        self.registry.post_metrics(sid, set_, query(request, "play_id"), query(request, "attempt_id"))
        return respond(request, {"status": "ok"})

    # ------------------------------------------------------------------ network log

    @app.route("/session/<sid>/network", methods=["GET"])
    def network(self, request: IRequest, sid: str) -> bytes:
        """The network log ring (``?since=&limit=``)."""
        session = self.registry.get(sid)
        since = query(request, "since")
        limit = _int_arg(request, "limit", 1, 100000)
        netlog = session.netlog
        headers = query(request, "headers") in ("1", "true", "yes")
        entries = netlog.entries(since=since or None, limit=limit, headers=headers) \
            if netlog is not None else []
        return respond(request, {"session_id": session.session_id, "count": len(entries), "entries": entries,
                                 "markers": netlog.markers() if netlog is not None else [],
                                 "log": netlog.stats() if netlog is not None else {}})

    @app.route("/session/<sid>/network/entry/<seq>", methods=["GET"])
    def network_entry(self, request: IRequest, sid: str, seq: str) -> bytes:
        """One network-log entry with its request and response headers (404 once dropped)."""
        session = self.registry.get(sid)
        entry = session.netlog.entry(int(seq)) if seq.isdecimal() and session.netlog is not None else None
        if entry is None:
            raise NotFound("entry not found", detail=f"{seq} is not (or no longer) in the log")
        return respond(request, entry)

    @app.route("/session/<sid>/keep", methods=["POST"])
    def keep(self, request: IRequest, sid: str) -> bytes:
        """``{"keep": bool}``: keep the session while idle, or let it expire as usual."""
        body = _session_body(request)
        unknown = {str(k): "unknown field" for k in body if k != "keep"}
        if unknown:
            raise Invalid("invalid", fields=unknown)
        if not isinstance(body.get("keep"), bool):
            raise Invalid("invalid", fields={"keep": "must be true or false"})
        return respond(request, {"session": self.registry.set_keep(sid, body["keep"])})

    @app.route("/session/<sid>/network.har", methods=["GET"])
    def network_har(self, request: IRequest, sid: str) -> bytes:
        """HAR 1.2 export of the network log."""
        from streamlab.proxy.netlog import to_har

        session = self.registry.get(sid)
        entries = session.netlog.entries(headers=True) if session.netlog is not None else []
        request.setHeader(b"content-disposition",
                          f'attachment; filename="session-{session.session_id}.har"'.encode())
        host = self.registry.config.server.advertised_host or request.getRequestHostname().decode("latin-1")
        scheme = "https" if request.isSecure() else "http"
        return respond(request, to_har(session.session_id, entries,
                                       base_url=f"{scheme}://{host}:{session.external_port}"))

    @app.route("/session/<sid>/network/stream", methods=["GET"])
    def network_stream(self, request: IRequest, sid: str) -> Any:
        """SSE of new network-log entries."""
        session = self.registry.get(sid)
        stream = self.registry.network_stream(session)
        initial: list[bytes] = []
        last = request.getHeader(b"last-event-id")
        if last and last.strip().isdigit() and session.netlog is not None:  # bytes: ASCII digits
            # a reconnecting EventSource: replay what it missed (entries still in the ring)
            for entry in session.netlog.entries(after_seq=int(last)):
                initial.append(encode_event("entry", entry, entry.get("seq")))
        return SSEResource(lambda req: stream.attach(req, initial))

    # ------------------------------------------------------------------ groups

    @app.route("/session-group/link", methods=["POST"])
    def link(self, request: IRequest) -> bytes:
        """Create or extend a group."""
        body = _session_body(request)
        session_ids: Any = body.get("session_ids")  # raw JSON: the registry validates it
        return respond(request, self.registry.link(session_ids, body.get("group_id")))

    @app.route("/session-group/unlink", methods=["POST"])
    def unlink(self, request: IRequest) -> bytes:
        """Take one session out of its group."""
        body = _session_body(request)
        sid = body.get("session_id")
        if not isinstance(sid, (str, int)) or isinstance(sid, bool):
            raise Invalid("invalid", fields={"session_id": "required"})
        return respond(request, self.registry.unlink(str(sid)))

    @app.route("/session-group/<gid>", methods=["GET"])
    def group(self, request: IRequest, gid: str) -> bytes:
        """Members of a group."""
        return respond(request, self.registry.group(gid))

    # ------------------------------------------------------------------ diagnostics

    @app.route("/external-ips", methods=["GET"])
    def external_ips(self, request: IRequest) -> bytes:
        """Rolling and lifetime public client IPs."""
        return respond(request, self.registry.external_ips.to_json(self.registry.clock.seconds()))

    errors.install(app)


MOUNTS = ("sessions", "session", "clear-sessions", "failure-settings", "session-group", "external-ips")
