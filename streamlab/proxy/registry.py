"""The one session registry: creates sessions on their own ports, applies control
changes (validation, per-field conflicts, group propagation), expires idle sessions,
measures server-side metrics and feeds the SSE snapshot stream.

Shaping is reached through one typed object, ``shaping``
(:class:`streamlab.shaping.host.SessionShaping`, set by ``tap.py``): it wraps each session
listener, checks merged controls before a change is stored, gets one ``controls_changed``
call per changed session (whose returned follow-up changes are stored next), releases a
removed session's port (the port is not reused before that fired), and adds its runtime
fields to the session JSON.  Shaping changes sessions back only through the registry's
:class:`streamlab.shaping.host.SessionHost` methods (``get``, ``get_by_port``, ``all``,
``patch``, ``bump_fault_counter``, ``notify``).

Read-only observers (metrics): ``request_observers``: ``(session, raw_request_fields)``
after every session-port request, ``removal_hooks``: ``(session)`` when a session goes away.

Events on the bus: ``"session.changed"`` ``{"session_id","port","changed","controls"}``
after every control change (one per group member), ``"session.removed"``
``{"session_id","port"}``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamlab.errors import Conflict, Invalid, NotFound, TooMany, Unavailable
from streamlab.proxy import classify as classify_mod
from streamlab.proxy import fields as fields_mod
from streamlab.proxy import lifetime, manifest_faults, markers, rewrite
from streamlab.proxy.bootstrap import client_ip as bootstrap_client_ip
from streamlab.proxy.controls import ControlState
from streamlab.proxy.faults import FaultEngine, counter_key
from streamlab.proxy.listener import SessionSite
from streamlab.proxy.netlog import NetworkLog, make_entry
from streamlab.proxy.ports import PortPool, listen_session_port
from streamlab.proxy.session import Session, group_of_player, iso
from streamlab.proxy.sockets import socket_of
from streamlab.proxy.tcpinfo import read_tcp_info
from streamlab.push.sse import EventStream, SnapshotFeed
from streamlab.shaping.host import ControlsChanged, SessionShaping

log = Logger()

MAX_GROUP = 10
TICK = 0.1


def is_public_ip(ip: str) -> bool:
    """True for addresses that are not loopback/private/link-local/unspecified."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_unspecified
                or addr.is_multicast or addr.is_reserved)


class ExternalIps:
    """Rolling (last *window* s) and lifetime sets of non-private client IPs."""

    def __init__(self, window: float = 3600.0, lifetime_limit: int = 10000) -> None:
        self.window = window
        self.limit = lifetime_limit
        self._rolling: OrderedDict[str, float] = OrderedDict()
        self._lifetime: OrderedDict[str, float] = OrderedDict()
        self.lifetime_count = 0

    def seen(self, ip: str, now: float) -> None:
        """Record a request from *ip* (ignored when private)."""
        if not ip or not is_public_ip(ip):
            return
        self._rolling[ip] = now
        self._rolling.move_to_end(ip)
        if ip not in self._lifetime:
            self.lifetime_count += 1
            self._lifetime[ip] = now
            if len(self._lifetime) > self.limit:
                self._lifetime.popitem(last=False)

    def to_json(self, now: float) -> dict[str, Any]:
        """The ``/api/external-ips`` body."""
        while self._rolling:
            ip, at = next(iter(self._rolling.items()))
            if now - at <= self.window:
                break
            self._rolling.popitem(last=False)
        return {"rolling": [{"ip": ip, "last_seen": iso(at)} for ip, at in self._rolling.items()],
                "rolling_window_s": self.window, "lifetime_count": self.lifetime_count,
                "lifetime": [{"ip": ip, "first_seen": iso(at)} for ip, at in self._lifetime.items()]}


class _Settings:
    def __init__(self, cfg: Any) -> None:
        self.socket_hang_seconds = cfg.sessions.socket_hang_seconds
        self.socket_delay_seconds = cfg.sessions.socket_delay_seconds
        self.socket_body_bytes = cfg.sessions.socket_body_bytes
        self.head_timeout = getattr(cfg.server, "request_head_timeout", None)  # GuardedHTTPChannel


class SessionRegistry:
    """All live sessions (see the module docstring)."""

    def __init__(self, config: Any, clock: IReactorTime, bus: Any, origin: Any = None, *,
                 listen: Callable[[Any, int, IProtocolFactory, str], Any] = listen_session_port,
                 listen_reactor: Any = None, pinger: Any = None) -> None:
        self.config = config
        self.clock = clock
        self.bus = bus
        self.origin = origin
        self._listen = listen
        self._listen_reactor = listen_reactor if listen_reactor is not None else clock
        self.pinger = pinger
        lo, hi = config.server.session_ports
        self.pool = PortPool(lo, hi, config.sessions.session_port_quarantine)
        self.settings = _Settings(config)
        self.idle_timeout = config.sessions.session_idle_timeout
        self.expiry_grace = config.sessions.session_expiry_grace
        self._sid_seq = 0  # session ids are a counter, never reused while the daemon runs
        self._keep: set[str] = set()
        self._countdown: dict[str, float] = {}
        self._defaults = fields_mod.control_defaults(config.shaping.default_rate_mbps)
        #: the shaping subsystem (set by the composition root; None: unshaped sessions)
        self.shaping: SessionShaping | None = None
        # read-only observers (metrics): every finished session-port request, every removal
        self.request_observers: list[Callable[[Session, dict[str, Any]], None]] = []
        self.removal_hooks: list[Callable[[Session], None]] = []
        self.field_providers: list[Callable[[Session], Mapping[str, Any]]] = [self._lifetime_fields,
                                                                              self._shaping_fields]
        self._by_id: dict[str, Session] = {}
        self._by_player: dict[str, str] = {}
        self._groups: dict[str, list[str]] = {}
        self._expiry: dict[str, IDelayedCall] = {}
        self._disarm_timers: dict[str, IDelayedCall] = {}
        self._releasing: dict[int, defer.Deferred] = {}
        self._rev = 0
        self._group_seq = 0
        self.external_ips = ExternalIps()
        self.stream = EventStream(clock)
        self.feed = SnapshotFeed(clock, self.stream, "sessions", "sessions", self.snapshot,
                                 lambda: bool(self._by_id))
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self._ticks = 0
        self.stopped = False
        # False once the daemon stops accepting (graceful stop): session ports are closed
        # for new connections, open ones finish their responses within the grace time
        self.accepting = True
        # streamlab.shutdown.InFlight (set by the daemon): session-port requests count there
        self.inflight: Any = None

    # ------------------------------------------------------------------ lookup

    def _next_rev(self) -> int:
        self._rev += 1
        return self._rev

    def get(self, session_id: str) -> Session:
        """The live session *session_id*; NotFound otherwise."""
        session = self._by_id.get(str(session_id))
        if session is None:
            raise NotFound("session not found", detail=str(session_id))
        return session

    def get_by_port(self, port: int) -> Session:
        """The session on internal or external *port*; NotFound otherwise."""
        port = int(port)
        for session in self._by_id.values():
            if port in (session.port, session.external_port):
                return session
        raise NotFound("session not found", detail=f"port {port}")

    def all(self) -> list[Session]:
        """Live sessions ordered by id."""
        return sorted(self._by_id.values(), key=lambda s: int(s.session_id))

    def by_player(self, player_id: str) -> Session | None:
        """The live session of *player_id*, if any."""
        sid = self._by_player.get(player_id)
        return self._by_id.get(sid) if sid is not None else None

    def to_json(self, session: Session) -> dict[str, Any]:
        """The normalised session object."""
        return session.to_json(self.clock.seconds(), self.field_providers)

    def refresh(self, session: Session) -> defer.Deferred:
        """Fires once every refresher has read *session*'s counters (errors are logged)."""
        def report(results: list[Any]) -> None:
            for ok, failure in results:
                if not ok:
                    log.warn("session refresher failed: {e}", e=failure.getErrorMessage())

        reads = [defer.maybeDeferred(self.shaping.refresh, session.port)] if self.shaping is not None else []
        d = defer.DeferredList(reads, consumeErrors=True)
        d.addCallback(report)
        return d

    def refresh_all(self) -> defer.Deferred:
        """Fires once every bulk refresher has read all sessions' counters (errors are logged)."""
        def report(results: list[Any]) -> None:
            for ok, failure in results:
                if not ok:
                    log.warn("session refresher failed: {e}", e=failure.getErrorMessage())

        reads = [defer.maybeDeferred(self.shaping.refresh_all)] if self.shaping is not None else []
        d = defer.DeferredList(reads, consumeErrors=True)
        d.addCallback(report)
        return d

    def snapshot(self) -> list[dict[str, Any]]:
        """Every session as JSON (the SSE and GET /api/sessions body)."""
        now = self.clock.seconds()
        return [s.to_json(now, self.field_providers) for s in self.all()]

    # ------------------------------------------------------------------ create

    def get_or_create(self, player_id: str, *, client_ip: str = "", user_agent: str = "",
                      set_: Mapping[str, Any] | None = None) -> tuple[Session, bool]:
        """The session of *player_id*, created (with *set_* applied first) when missing.

        Raises Invalid (bad player id or bad *set_*, nothing created), TooMany
        (``max_sessions_per_client_ip``), Unavailable (no free port)."""
        if not isinstance(player_id, str) or not player_id.strip() or len(player_id) > 256:
            raise Invalid("invalid", detail="player_id must be a non-empty string (max 256 chars)",
                          fields={"player_id": "must be a non-empty string"})
        player_id = player_id.strip()
        existing = self.by_player(player_id)
        if existing is not None:
            if set_:
                self.patch(existing.session_id, set_)
            return existing, False
        if not self.accepting:
            raise Unavailable("shutting down", detail="the daemon is stopping; no new sessions")
        changes: dict[str, Any] = {}
        defaults = fields_mod.control_defaults(self.config.shaping.default_rate_mbps)
        if set_:
            changes = fields_mod.validate(set_, None, defaults)
        limit = self.config.server.max_sessions_per_client_ip
        if limit and client_ip and is_public_ip(client_ip):
            count = sum(1 for s in self._by_id.values() if s.player_ip == client_ip)
            if count >= limit:
                raise TooMany("too many sessions", detail=f"{client_ip} already has {count} sessions",
                              retry_after=int(self.idle_timeout))
        session = self._open(player_id, defaults)
        session.player_ip = client_ip
        session.user_agent = user_agent
        joined: list[str] = []
        group = group_of_player(player_id)
        if group is not None:
            joined = self._join_group(session, group)
        if changes:
            self._apply(session, changes, None, publish_self=False)
        self._publish_changed(session, sorted(set(changes) | set(joined)))
        self.feed.changed(urgent=True)
        return session, True

    def _open(self, player_id: str, defaults: dict[str, Any]) -> Session:

        now = self.clock.seconds()
        tried = 0
        while True:
            port = self.pool.acquire(now)
            if port is None:
                raise Unavailable("no free session port",
                                  detail=f"all {self.pool.hi - self.pool.lo + 1} session ports are busy")
            sid = str(self._sid_seq + 1)
            controls = ControlState(defaults, next_revision=self._next_rev)
            engine = FaultEngine(controls.values, now)
            session = Session(sid, port, port + self.config.server.advertised_port_offset, player_id,
                              controls=controls, engine=engine,
                              netlog=NetworkLog(self.config.sessions.network_log_size,
                                                self.config.sessions.network_log_max_bytes), now=now)
            site = SessionSite(session, self.origin, self.clock, self, self.settings)
            factory: IProtocolFactory = site
            if self.shaping is not None:
                factory = self.shaping.wrap_listener(port, factory)
            try:
                session.listener = self._listen(self._listen_reactor, port, factory,
                                                self.config.server.session_interface or "")
            except CannotListenError as exc:
                log.warn("session port {port} refused: {err}", port=port, err=exc)
                self.pool.refuse(port, now)
                tried += 1
                continue
            session.site = site
            self._sid_seq += 1
            self._by_id[sid] = session
            self._by_player[player_id] = sid
            self._expiry[sid] = self.clock.callLater(self.idle_timeout, self._check_expiry, sid)
            return session

    # ------------------------------------------------------------------ change

    def patch(self, session_id: str, set_: Mapping[str, Any], fields: Sequence[str] | None = None,
              base_revision: str | None = None, *, coerce_strings: bool = False) -> dict[str, Any]:
        """Validate and apply a control change (group-wide for group fields); returns the
        session JSON.  Invalid / Conflict (with the session in the body) / NotFound."""
        session = self.get(session_id)
        changes = fields_mod.validate(set_, fields, session.controls.values, coerce_strings=coerce_strings,
                                      variants=session.manifest_variants or None)
        merged = {**session.controls.values, **changes}
        if self.shaping is not None:
            self.shaping.check_controls(merged, session.port)
        conflicts = session.controls.conflicts(changes, base_revision, changes)
        if conflicts:
            raise Conflict("revision_conflict", conflicts=conflicts, session=self.to_json(session),
                           control_revision=session.controls.revision)
        self._apply(session, changes, base_revision)
        self.feed.changed(urgent=True)
        return self.to_json(session)

    def _apply(self, session: Session, changes: Mapping[str, Any], base_revision: str | None, *,
               publish_self: bool = True) -> None:
        rev = self._next_rev()
        changed = session.controls.apply(changes, base_revision, revision=rev)
        if any(k.startswith("manifest_fault_") for k in changes):  # set, even to the same value: re-armed
            session.manifest_state = manifest_faults.ManifestFaultState()
        if "seed" in changes and "seed" not in changed:  # the same seed again: replay from the start
            session.engine.configure(session.controls.values, ["seed"], self.clock.seconds())
        touched = [(session, changed)]
        group_changes = {k: v for k, v in changes.items() if k in fields_mod.GROUP_FIELDS}
        if session.group_id and group_changes:
            for sid in self._groups.get(session.group_id, []):
                member = self._by_id.get(sid)
                if member is None or member is session:
                    continue
                touched.append((member, member.controls.apply(group_changes, None, revision=rev)))
        now = self.clock.seconds()
        for member, names in touched:
            if not names:
                continue
            member.engine.configure(member.controls.values, names, now)
            self._schedule_disarm(member)
            if member is not session or publish_self:
                self._publish_changed(member, names)
            self._mark(member, names, now)

    def notify(self, session_id: str) -> None:
        """Runtime fields of *session_id* changed (no revision bump): schedule an SSE update."""
        self.feed.changed(urgent=True)

    def bump_fault_counter(self, session_id: str, key: str, n: int = 1) -> None:
        """Count *n* faults under ``fault_count_<key>`` (and the total)."""
        session = self._by_id.get(str(session_id))
        if session is not None:
            session.count_fault(key, n)
            self.feed.changed()

    def post_metrics(self, session_id: str, set_: Mapping[str, Any], play_id: str | None = None,
                     attempt_id: str | None = None) -> bool:
        """Store player metrics (never touches controls); False when stale and ignored."""
        session = self.get(session_id)
        metrics = fields_mod.validate_metrics(set_)
        stored = session.store_metrics(metrics, self.clock.seconds(), play_id, attempt_id)
        if stored:
            self.feed.changed()
        return stored

    # ------------------------------------------------------------------ groups

    def _join_group(self, session: Session, group_id: str) -> list[str]:
        """Add *session* to *group_id*; it takes the group's shared fields.  Returns the
        control names that changed (the caller publishes them)."""
        members = self._groups.setdefault(group_id, [])
        if session.session_id in members:
            return []
        if len(members) >= MAX_GROUP:
            log.warn("group {g} is full; {sid} stays alone", g=group_id, sid=session.session_id)
            if not members:
                del self._groups[group_id]
            return []
        source = next((self._by_id[m] for m in members if m in self._by_id), None)
        members.append(session.session_id)
        session.group_id = group_id
        if source is None:
            return []
        shared = {k: v for k, v in source.controls.values.items() if k in fields_mod.GROUP_FIELDS}
        changed = session.controls.apply(shared, None, revision=self._next_rev())
        if changed:
            session.engine.configure(session.controls.values, changed, self.clock.seconds())
        return changed

    def _publish_changed(self, session: Session, names: Sequence[str]) -> None:
        self.bus.publish("session.changed", {"session_id": session.session_id, "port": session.port,
                                             "changed": list(names), "controls": session.controls.snapshot()})
        if self.shaping is not None:
            follow_up = self.shaping.controls_changed(ControlsChanged(
                session.session_id, session.port, tuple(names), session.controls.snapshot(),
                tuple(session.manifest_variants)))
            if follow_up:  # e.g. a plain rate stopped the pattern: stored as the next change
                self._apply(session, follow_up, None)

    def _shaping_fields(self, session: Session) -> Mapping[str, Any]:
        return self.shaping.runtime_fields(session.port) if self.shaping is not None else {}

    def link(self, session_ids: Sequence[str], group_id: str | None = None) -> dict[str, Any]:
        """Create or extend a group; returns ``{"group_id","session_ids"}``."""
        if not isinstance(session_ids, list) or not session_ids or \
                not all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in session_ids):
            raise Invalid("invalid", fields={"session_ids": "must be a non-empty list of session ids"})
        if group_id is not None and (not isinstance(group_id, str) or not group_id.strip()
                                     or len(group_id) > 64):
            raise Invalid("invalid", fields={"group_id": "must be a non-empty string (max 64 chars)"})
        ids = list(dict.fromkeys(str(s) for s in session_ids))
        missing = [s for s in ids if s not in self._by_id]
        if missing:
            raise NotFound("session not found", detail=missing)
        if group_id is None:
            group_id = next((self._by_id[s].group_id for s in ids if self._by_id[s].group_id), None)
        if group_id is None:
            self._group_seq += 1
            while f"G{self._group_seq}" in self._groups:
                self._group_seq += 1
            group_id = f"G{self._group_seq}"
        members = list(self._groups.get(group_id, []))
        new = [s for s in ids if s not in members]
        if len(members) + len(new) > MAX_GROUP:
            raise Invalid("invalid", detail=f"a group has at most {MAX_GROUP} members",
                          fields={"session_ids": f"a group has at most {MAX_GROUP} members"})
        for sid in new:
            old = self._by_id[sid].group_id
            if old and old != group_id:
                self._leave_group(self._by_id[sid])
        for sid in new:
            changed = self._join_group(self._by_id[sid], group_id)
            if changed:
                self._publish_changed(self._by_id[sid], changed)
        self.feed.changed(urgent=True)
        return {"group_id": group_id, "session_ids": list(self._groups.get(group_id, []))}

    def unlink(self, session_id: str) -> dict[str, Any]:
        """Take *session_id* out of its group (a one-member group dissolves)."""
        session = self.get(session_id)
        group = session.group_id
        self._leave_group(session)
        self.feed.changed(urgent=True)
        return {"session_id": session.session_id, "group_id": group or "",
                "session_ids": list(self._groups.get(group, [])) if group else []}

    def _leave_group(self, session: Session) -> None:
        group = session.group_id
        session.group_id = None
        if not group or group not in self._groups:
            return
        members = self._groups[group]
        if session.session_id in members:
            members.remove(session.session_id)
        if len(members) <= 1:
            for sid in members:
                if sid in self._by_id:
                    self._by_id[sid].group_id = None
            del self._groups[group]

    def group(self, group_id: str) -> dict[str, Any]:
        """``{"group_id","session_ids","sessions"}``; NotFound for unknown groups."""
        members = self._groups.get(group_id)
        if not members:
            raise NotFound("group not found", detail=group_id)
        return {"group_id": group_id, "session_ids": list(members),
                "sessions": [self.to_json(self._by_id[s]) for s in members if s in self._by_id]}

    # ------------------------------------------------------------------ removal

    def remove(self, session_id: str, reason: str = "deleted") -> defer.Deferred:
        """Close the session: listener, connections, timers, log, groups, release hooks.
        The Deferred fires when the port may be reused."""
        session = self.get(session_id)
        session.closed = True
        sid, port = session.session_id, session.port
        self._by_id.pop(sid, None)
        if self._by_player.get(session.player_id) == sid:
            del self._by_player[session.player_id]
        self._keep.discard(sid)
        self._countdown.pop(sid, None)
        for timers in (self._expiry, self._disarm_timers):
            timer = timers.pop(sid, None)
            if timer is not None and timer.active():
                timer.cancel()
        self._leave_group(session)
        self.pool.begin_release(port)
        waits: list[defer.Deferred] = []
        if session.listener_stopped is not None:
            waits.append(session.listener_stopped)
        elif session.listener is not None:
            waits.append(defer.maybeDeferred(session.listener.stopListening))
        if session.site is not None:
            session.site.abort_all()
        if session.net_stream is not None:
            session.net_stream.close()
        session.netlog = None
        for removed in self.removal_hooks:
            try:
                removed(session)
            except Exception:  # noqa: BLE001 - an observer must not block the release
                log.failure("session removal hook failed")
        if self.shaping is not None:
            waits.append(defer.maybeDeferred(self.shaping.session_removed, port))
        self.bus.publish("session.removed", {"session_id": sid, "port": port})
        self.feed.changed(urgent=True)
        log.info("session {sid} on port {port} removed ({reason})", sid=sid, port=port, reason=reason)

        def done(results: list[Any]) -> None:
            for ok, value in results:
                if not ok:
                    log.failure("release of port {port} failed", value, port=port)
            self.pool.end_release(port, self.clock.seconds())
            self._releasing.pop(port, None)

        d = defer.DeferredList(waits, consumeErrors=True)
        d.addCallback(done)
        self._releasing[port] = d
        return d

    def clear(self) -> tuple[int, defer.Deferred]:
        """Remove every session; (count, Deferred fired when all ports are released)."""
        ids = [s.session_id for s in self.all()]
        ds = [self.remove(sid, "cleared") for sid in ids]
        return len(ids), defer.DeferredList(ds)

    def _lifetime(self, session: Session, now: float) -> lifetime.Lifetime:
        defaults = self._defaults
        stream = session.net_stream
        return lifetime.decide(
            now, session.last_activity, self.idle_timeout, self.expiry_grace,
            keep=session.session_id in self._keep, watched=bool(stream is not None and stream.clients),
            has_controls=bool(lifetime.controls_set(session.controls.values, defaults)),
            in_flight=session.in_flight, countdown_from=self._countdown.get(session.session_id))

    def _lifetime_fields(self, session: Session) -> dict[str, Any]:
        now = self.clock.seconds()
        verdict = self._lifetime(session, now)
        return {"session_keep": session.session_id in self._keep, "session_state": verdict.state,
                "session_idle_s": round(max(0.0, now - session.last_activity), 1),
                "session_idle_timeout_s": self.idle_timeout,
                "session_expires_at": iso(verdict.expires_at) if verdict.expires_at is not None else None,
                "session_expires_in_s": round(max(0.0, verdict.expires_at - now), 1)
                if verdict.expires_at is not None else None}

    def set_keep(self, session_id: str, keep: bool) -> dict[str, Any]:
        """Keep *session_id* while idle (``keep``), or let it expire by the usual rules."""
        session = self.get(session_id)
        if keep:
            self._keep.add(session.session_id)
        else:
            self._keep.discard(session.session_id)
        self._countdown.pop(session.session_id, None)
        self._reschedule_expiry(session.session_id, 0.01)
        self.feed.changed(urgent=True)
        return self.to_json(session)

    def _reschedule_expiry(self, sid: str, delay: float) -> None:
        timer = self._expiry.pop(sid, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._expiry[sid] = self.clock.callLater(max(0.01, delay), self._check_expiry, sid)

    def _check_expiry(self, sid: str) -> None:
        self._expiry.pop(sid, None)
        session = self._by_id.get(sid)
        if session is None:
            return
        try:
            now = self.clock.seconds()
            verdict = self._lifetime(session, now)
            if verdict.state == lifetime.EXPIRED:
                self.remove(sid, "expired")
                return
            if verdict.countdown_from is not None:
                if sid not in self._countdown:
                    log.info("session {sid} idle with controls set: expires in {grace:g} s unless kept",
                             sid=sid, grace=self.expiry_grace)
                    self.feed.changed(urgent=True)
                self._countdown[sid] = verdict.countdown_from
            else:
                self._countdown.pop(sid, None)
            delay = max(0.01, verdict.recheck_at - now)
            self._expiry[sid] = self.clock.callLater(delay, self._check_expiry, sid)
        except Exception:  # noqa: BLE001 - timers survive their errors
            log.failure("expiry check failed")

    def stop_accepting(self) -> defer.Deferred:
        """Graceful stop, first phase: no new session, no new connection on any session
        port; connections already open keep being served.  Fires when every port closed."""
        self.accepting = False
        waits = []
        for session in self._by_id.values():
            if session.listener is not None and session.listener_stopped is None:
                d = defer.maybeDeferred(session.listener.stopListening)
                # remove() waits on this too; keep a result for it
                session.listener_stopped = d.addErrback(
                    lambda f, port=session.port: log.failure("closing session port {port}", f, port=port))
                waits.append(session.listener_stopped)
        return defer.DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> defer.Deferred:
        """Daemon stop: remove every session, stop timers and SSE."""
        self.stopped = True
        self.accepting = False
        if self._ticker.running:
            self._ticker.stop()
        if self.pinger is not None:
            self.pinger.close()
        _, d = self.clear()
        self.feed.stop()
        self.stream.close()
        return d

    # ------------------------------------------------------------------ listener hooks

    def classify(self, path: str) -> str:
        """Request kind of *path*."""
        return classify_mod.classify(path)

    def connection_opened(self, session: Session, channel: Any) -> None:
        """A client connected to *session*'s port."""
        if not self._ticker.running and not self.stopped:
            self._ticker.start(TICK, now=False)

    def request_arrived(self, session: Session, request: Any, kind: str, url: str, path: str,
                        now: float) -> None:
        """Counters, activity, identity updates for a request on a session port."""
        session.on_request(kind, url, path, now)
        channel = request.channel
        ip = getattr(channel, "client_ip", None)
        if ip is None:  # once per connection: X-Forwarded-For parsing is not free
            ip = self.client_ip(request)
            try:
                channel.client_ip = ip
            except AttributeError:
                pass
            if ip:
                self.external_ips.seen(ip, now)
        if ip and not session.player_ip:
            session.player_ip = ip
        ua = request.getHeader(b"user-agent")
        if ua:
            session.user_agent = ua.decode("utf-8", "replace")[:512]
        args = request.args or {}
        for name, attr in ((b"play_id", "play_id"), (b"attempt_id", "attempt_id")):
            values = args.get(name)
            if values:
                setattr(session, attr, values[0].decode("utf-8", "replace")[:256])
        if kind == "segment":
            rung = classify_mod.variant_of(path)
            if rung and not classify_mod.is_audio(path, kind):
                origin = self.origin() if callable(self.origin) else self.origin
                loop_of = getattr(origin, "loop_of_path", None)  # n<N> URLs name their loop
                session.on_video_segment(rung, path, loop_of(path) if loop_of is not None else None)
        self.feed.changed()

    def after_decide(self, session: Session, faulted: bool = True) -> None:
        """Apply one-shot disarms the engine reported; after a fault, arm the timer of a
        seconds-mode one-shot window that must end even without requests."""
        try:
            disarmed = session.engine.take_disarmed()
        except Exception:  # noqa: BLE001
            log.failure("take_disarmed failed")
            return
        if not disarmed:
            if faulted and session.session_id not in self._disarm_timers:
                self._schedule_disarm(session)
            return
        names: list[str] = []
        for item in disarmed:
            name = item if str(item).endswith("_failure_type") else f"{item}_failure_type"
            if name in session.controls.values:
                session.controls.values[name] = "none"
                names.append(name)
        if names:
            session.controls.bump(names)
            session.engine.configure(session.controls.values, names, self.clock.seconds())
            self._publish_changed(session, names)
            self._mark(session, names, self.clock.seconds(), " (one-shot)")
            self.feed.changed(urgent=True)

    def _schedule_disarm(self, session: Session) -> None:
        """Arm a timer for a seconds-mode one-shot that must disarm even without requests."""
        timer = self._disarm_timers.pop(session.session_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        deadline = session.engine.next_deadline()
        if deadline is None or session.closed:
            return
        delay = max(0.0, deadline - self.clock.seconds())
        self._disarm_timers[session.session_id] = self.clock.callLater(delay, self._poll_disarm, session)

    def _poll_disarm(self, session: Session) -> None:
        self._disarm_timers.pop(session.session_id, None)
        if session.closed:
            return
        try:
            session.engine.poll(self.clock.seconds())
            self.after_decide(session)
        except Exception:  # noqa: BLE001 - timers survive their errors
            log.failure("one-shot disarm failed")

    def fault(self, session: Session, fault_type: str) -> None:
        """A fault of *fault_type* was injected on *session*."""
        key = counter_key(fault_type)
        session.count_fault(key)
        self.feed.changed()

    def rewrite_master(self, session: Session, path: str, body: bytes) -> bytes:
        """Record the ladder of the unmodified master, then apply the content edits."""
        text = body.decode("utf-8")
        controls = session.controls.values
        is_mpd = path.endswith(".mpd")
        # An MPD changes on every request (publishTime) but its ladder does not: parse the
        # ladder again only for another path or after 10 s.
        key = (path, int(self.clock.seconds() // 10)) if is_mpd else None
        if not is_mpd or key != session.variants_key:
            parse = rewrite.variants_of_mpd if is_mpd else rewrite.variants_of_master
            session.manifest_variants = parse(text)
            session.variants_key = key
        if not rewrite.rewrite_needed(controls):
            return body
        out = rewrite.rewrite_mpd(text, controls) if is_mpd else rewrite.rewrite_hls_master(text, controls)
        return out.encode("utf-8")

    def manifest_fault(self, session: Session, kind: str, path: str, body: bytes) -> tuple[bytes, str]:
        """Apply the session's manifest fault to a 200 playlist/MPD body: ``(body, fault
        name or "")`` (called only while ``manifest_fault_type`` is set)."""
        text = body.decode("utf-8")
        out, applied = manifest_faults.apply(text, kind, path, session.controls.values, self.clock.seconds(),
                                             session.manifest_state)
        return (out.encode("utf-8") if out is not text else body), applied

    def request_done(self, session: Session, request: Any, now: float) -> None:
        """One network-log entry for a finished (or cut) request."""
        f = request.log_fields(now)
        for observe in self.request_observers:
            try:
                observe(session, f)
            except Exception:  # noqa: BLE001 - an observer must not break the log
                log.failure("request observer failed")
        if f["kind"] == "segment" and f["first"] is not None and f["last"] is not None \
                and not f["fault_category"]:
            session.on_segment_complete(f["bytes_out"], f["last"] - f["first"])
        if session.netlog is None:
            return
        up = getattr(request, "upstream_log", None) or {}  # upstream origins (docs/upstream.md)
        entry = make_entry(
            timestamp=f["arrived"], method=f["method"], url=f["url"], path=f["path"],
            request_kind=f["kind"], status=f["status"], bytes_in=f["bytes_in"], bytes_out=f["bytes_out"],
            content_type=f["content_type"], play_id=session.play_id, request_range=f["range"],
            accepted=f["accepted"], parsed=f["arrived"], first_byte=f["first"], last_byte=f["last"],
            finished=now, fault_action=f["fault_action"],
            fault_category=f["fault_category"] or ("upstream" if up.get("failure") else ""),
            fault_type=f["fault_type"] or up.get("failure", ""),
            shaper_delay_ms=f.get("shaper_delay_ms", 0.0), upstream_ttfb_ms=up.get("ttfb_ms"))
        stored = session.netlog.append(
            entry, request.requestHeaders.getAllRawHeaders(),
            request.responseHeaders.getAllRawHeaders() if f["status"] else ())
        if session.net_stream is not None and session.net_stream.clients:
            session.net_stream.publish("entry", stored, stored.get("seq"))

    def _mark(self, session: Session, names: Sequence[str], now: float, suffix: str = "") -> None:
        """A control-change marker in the session's network log (and on its SSE stream)."""
        if session.netlog is None or not names:
            return
        kind, text = markers.describe(names, session.controls.values)
        marker = session.netlog.mark(now, kind, text + suffix, names)
        if session.net_stream is not None and session.net_stream.clients:
            session.net_stream.publish("marker", marker)

    def network_stream(self, session: Session) -> EventStream:
        """The SSE stream of new network-log entries of *session* (created on demand)."""
        if session.net_stream is None:
            session.net_stream = EventStream(self.clock)
        return session.net_stream

    def client_ip(self, request: Any) -> str:
        """The client address, honouring X-Forwarded-For only from trusted proxies."""
        return bootstrap_client_ip(request, self.config.server.trusted_proxies)

    # ------------------------------------------------------------------ metrics ticker

    def _tick(self) -> None:
        """Every 100 ms: transfer rates; RTT samples and 1 s windows; ICMP pings.

        TCP_INFO is read only from sessions with an open connection, and at the full
        100 ms rate only while someone watches the sessions live (SSE): then a second's
        window has ten samples and its max/min mean something.  Unwatched, one sample a
        second is the window (``client_rtt_ms`` stays fresh and exact for a GET).  Each
        player address is pinged once a second however many sessions it has."""
        try:
            self._ticks += 1
            now = self.clock.seconds()
            roll = self._ticks % 10 == 0
            sample_rtt = roll or bool(self.feed.stream.clients)
            pinger = self.pinger if roll and getattr(self.pinger, "available", True) else None
            pinged: set[str] = set()
            any_open = False
            any_moving = False
            for session in list(self._by_id.values()):
                if session.channels:
                    any_open = True
                    transport = session.latest_transport
                    if sample_rtt and transport is not None:
                        info = read_tcp_info(socket_of(transport))
                        if info is not None:
                            session.rtt.add(info)
                    session.sample_rate(now)
                elif session.mbps_transfer_rate:
                    session.sample_rate(now)  # falls to 0 within the rate window
                if session.mbps_transfer_rate:
                    any_moving = True
                if roll:
                    session.rtt.roll()
                    if pinger is not None and session.player_ip:
                        ip = session.player_ip
                        session.ping_rtt_ms = pinger.rtt_ms(ip, now)
                        if session.channels and ip not in pinged:
                            pinged.add(ip)
                            pinger.ping(ip)
            if self._by_id:
                self.feed.changed()
            if roll and not any_open and not any_moving:
                self._ticker.stop()
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("session metrics tick failed")
