"""The one session registry: the table of live sessions on their own ports — creating,
finding, expiring and removing them — and the front door of every session operation.

Its parts live beside it: control changes, groups and one-shot disarms in
:mod:`streamlab.proxy.control_changes`, each session port's request adapter in
:mod:`streamlab.proxy.session_exchange`, the metering ticker in
:mod:`streamlab.proxy.metering`, client addresses in :mod:`streamlab.proxy.external_ips`
and the sessions SSE feed in :mod:`streamlab.push.sse`.

Shaping is reached through one typed object, ``shaping``
(:class:`streamlab.shaping.host.SessionShaping`, set by ``tap.py``): it wraps each session
listener, checks merged controls before a change is stored, gets one ``controls_changed``
call per changed session (whose returned follow-up changes are stored next), releases a
removed session's port (the port is not reused before that fired), and adds its runtime
fields to the session JSON.  Shaping changes sessions back only through the registry's
:class:`streamlab.shaping.host.SessionHost` methods (``get``, ``get_by_port``, ``all``,
``patch``, ``bump_fault_counter``, ``notify``).

Read-only observers (metrics): ``request_observers``: ``(session, ExchangeRecord)``
after every session-port request, ``removal_hooks``: ``(session)`` when a session goes away.

Events on the bus: ``"session.changed"`` ``{"session_id","port","changed","controls"}``
after every control change (one per group member), ``"session.removed"``
``{"session_id","port"}``.

Why this module is a little over ~450 lines: it is the facade every session operation
enters by (the API, shaping, the scenario runner and the tests call it); each method is
a few lines delegating to the modules named above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from streamlab.config import Config
from streamlab.errors import Invalid, NotFound, TooMany, Unavailable
from streamlab.proxy import fields as fields_mod
from streamlab.proxy.control_changes import MAX_GROUP, ControlChanges
from streamlab.proxy.controls import ControlState
from streamlab.proxy.exchange import PortSettings
from streamlab.proxy.expiry import SessionExpiry
from streamlab.proxy.external_ips import ExternalIps, is_public_ip
from streamlab.proxy.faults import FaultEngine
from streamlab.proxy.listener import SessionSite
from streamlab.proxy.metering import Metering, Pinger
from streamlab.proxy.netlog import NetworkLog
from streamlab.proxy.ports import PortPool, listen_session_port
from streamlab.proxy.session import Session, group_of_player
from streamlab.proxy.session_exchange import RequestObserver, SessionExchange
from streamlab.push.sessions_feed import SessionsFeed
from streamlab.push.sse import EventStream
from streamlab.shaping.host import SessionShaping

if TYPE_CHECKING:
    from streamlab.interfaces import IEventBus
    from streamlab.shutdown import InFlight

__all__ = ["MAX_GROUP", "ExternalIps", "SessionRegistry", "is_public_ip"]

log = Logger()

ABORT_WAIT = 2.0  # seconds a removed session's connections wait for its kernel state to go


def _log_close_failure(failure: Failure, port: int) -> None:
    log.failure("closing session port {port}", failure, port=port)


def port_settings(cfg: Config) -> PortSettings:
    """The socket-fault settings of every session port (config ``[sessions]``)."""
    return PortSettings(socket_hang_seconds=cfg.sessions.socket_hang_seconds,
                        socket_delay_seconds=cfg.sessions.socket_delay_seconds,
                        socket_body_bytes=cfg.sessions.socket_body_bytes,
                        trusted_proxies=tuple(cfg.server.trusted_proxies or ()))


#: the origin resource session ports serve at ``/go-live``, or a callable returning it
#: once it is wired (None: not yet)
OriginRef: TypeAlias = "IResource | Callable[[], IResource | None] | None"


class SessionRegistry:
    """All live sessions (see the module docstring)."""

    def __init__(self, config: Config, clock: IReactorTime, bus: IEventBus, origin: OriginRef = None, *,
                 listen: Callable[[Any, int, IProtocolFactory, str], Any] = listen_session_port,
                 listen_reactor: Any = None, pinger: Pinger | None = None) -> None:
        self.config = config
        self.clock = clock
        self.bus = bus
        #: the origin resource session ports serve at /go-live, or a callable returning
        #: it (None until wired); resolved once per session
        self.origin = origin
        self._listen = listen
        self._listen_reactor = listen_reactor if listen_reactor is not None else clock
        self._by_id: dict[str, Session] = {}
        lo, hi = config.server.session_ports
        self.pool = PortPool(lo, hi, config.sessions.session_port_quarantine)
        self.settings = port_settings(config)
        self.idle_timeout = config.sessions.session_idle_timeout
        self._sid_seq = 0  # session ids are a counter, never reused while the daemon runs
        #: the shaping subsystem (set by the composition root; None: unshaped sessions)
        self.shaping: SessionShaping | None = None
        # read-only observers (metrics): every finished session-port request, every removal
        self.request_observers: list[RequestObserver] = []
        self.removal_hooks: list[Callable[[Session], None]] = []
        self.expiry = SessionExpiry(clock, config.sessions.session_idle_timeout,
                                    config.sessions.session_expiry_grace,
                                    fields_mod.control_defaults(config.shaping.default_rate_mbps),
                                    lookup=self._by_id_get, expire=self._expire, changed=self._changed)
        self.field_providers: list[Callable[[Session], Mapping[str, Any]]] = [self.expiry.fields,
                                                                              self._shaping_fields]
        self._by_player: dict[str, str] = {}
        self._releasing: dict[int, defer.Deferred] = {}
        self.external_ips = ExternalIps()
        self.feed = SessionsFeed(clock, self._session_keys, self._render, lambda: bool(self._by_id))
        self.stream = self.feed.stream
        self.changes = ControlChanges(self._by_id, clock, bus, changed=self._changed,
                                      shaping=lambda: self.shaping, to_json=self.to_json)
        self.metering = Metering(clock, self._by_id.values, lambda: self.feed.watched,
                                 self.feed.changed_many, pinger)
        # False once the daemon stops accepting (graceful stop): session ports are closed
        # for new connections, open ones finish their responses within the grace time
        self.accepting = True
        # streamlab.shutdown.InFlight (set by the daemon): session-port requests count there
        self.inflight: InFlight | None = None

    @property
    def stopped(self) -> bool:
        """True once the registry stopped (no metering starts)."""
        return self.metering.stopped

    @stopped.setter
    def stopped(self, value: bool) -> None:
        self.metering.stopped = value

    @property
    def pinger(self) -> Pinger | None:
        """The ICMP pinger of the metering ticker (None: no pings)."""
        return self.metering.pinger

    # ------------------------------------------------------------------ lookup

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
        """Every session as JSON (the GET /api/sessions body; the SSE feed renders the
        same objects one session at a time)."""
        now = self.clock.seconds()
        return [s.to_json(now, self.field_providers) for s in self.all()]

    def _by_id_get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def _expire(self, session_id: str) -> None:
        self.remove(session_id, "expired")

    def _session_keys(self) -> list[str]:
        return sorted(self._by_id, key=int)

    def _render(self, session_id: str) -> dict[str, Any]:
        return self.to_json(self._by_id[session_id])

    def _changed(self, session: Session | None, urgent: bool = False) -> None:
        """*session* (None: any) changed: the SSE feed sends it."""
        if session is None:
            self.feed.changed_all(urgent)
        else:
            self.feed.changed(session.session_id, urgent)

    def exchange(self, session: Session) -> SessionExchange:
        """The request adapter of *session*'s port."""
        return session.site.exchange

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
            joined = self.changes.join_group(session, group)
        if changes:
            self.changes.apply(session, changes, None, publish_self=False)
        self.changes.publish_changed(session, sorted(set(changes) | set(joined)))
        self._changed(session, urgent=True)
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
            controls = ControlState(defaults, next_revision=self.changes.next_rev)
            engine = FaultEngine(controls.values, now)
            session = Session(sid, port, port + self.config.server.advertised_port_offset, player_id,
                              controls=controls, engine=engine,
                              netlog=NetworkLog(self.config.sessions.network_log_size,
                                                self.config.sessions.network_log_max_bytes), now=now)
            exchange = SessionExchange(
                session, self.clock, changed=self.feed.changed, disarm=self.changes.disarm,
                metering=self.metering, external_ips=self.external_ips, observers=self.request_observers,
                loop_of=getattr(self._origin(), "loop_of_path", None))  # n<N> URLs name their loop
            site = SessionSite(exchange, self._origin(), self.clock, self.settings, inflight=self.inflight,
                               head_timeout=getattr(self.config.server, "request_head_timeout", None))
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
            self.expiry.start(sid)
            return session

    # ------------------------------------------------------------------ change

    def patch(self, session_id: str, set_: Mapping[str, Any], fields: Sequence[str] | None = None,
              base_revision: str | None = None, *, coerce_strings: bool = False) -> dict[str, Any]:
        """Validate and apply a control change (group-wide for group fields); returns the
        session JSON.  Invalid / Conflict (with the session in the body) / NotFound."""
        session = self.get(session_id)
        self.changes.patch(session, set_, fields, base_revision, coerce_strings=coerce_strings)
        return self.to_json(session)

    def notify(self, session_id: str) -> None:
        """Runtime fields of *session_id* changed (no revision bump): schedule an SSE update."""
        session = self._by_id.get(str(session_id))
        if session is not None:
            self._changed(session, urgent=True)

    def bump_fault_counter(self, session_id: str, key: str, n: int = 1) -> None:
        """Count *n* faults under ``fault_count_<key>`` (and the total)."""
        session = self._by_id.get(str(session_id))
        if session is not None:
            session.count_fault(key, n)
            self._changed(session)

    def post_metrics(self, session_id: str, set_: Mapping[str, Any], play_id: str | None = None,
                     attempt_id: str | None = None) -> bool:
        """Store player metrics (never touches controls); False when stale and ignored."""
        session = self.get(session_id)
        metrics = fields_mod.validate_metrics(set_)
        stored = session.store_metrics(metrics, self.clock.seconds(), play_id, attempt_id)
        if stored:
            self._changed(session)
        return stored

    # ------------------------------------------------------------------ groups

    def _shaping_fields(self, session: Session) -> Mapping[str, Any]:
        return self.shaping.runtime_fields(session.port) if self.shaping is not None else {}

    def link(self, session_ids: Sequence[str], group_id: str | None = None) -> dict[str, Any]:
        """Create or extend a group; returns ``{"group_id","session_ids"}``."""
        return self.changes.link(session_ids, group_id)

    def unlink(self, session_id: str) -> dict[str, Any]:
        """Take *session_id* out of its group (a one-member group dissolves)."""
        return self.changes.unlink(self.get(session_id))

    def group(self, group_id: str) -> dict[str, Any]:
        """``{"group_id","session_ids","sessions"}``; NotFound for unknown groups."""
        return self.changes.group(group_id)

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
        self.expiry.forget(sid)
        self.changes.disarm.cancel(sid)
        self.changes.leave_group(session)
        self.pool.begin_release(port)
        waits: list[defer.Deferred] = []
        if session.listener_stopped is not None:
            waits.append(session.listener_stopped)
        elif session.listener is not None:
            waits.append(defer.maybeDeferred(session.listener.stopListening))
        if session.net_stream is not None:
            session.net_stream.close()
        session.netlog = None
        for removed in self.removal_hooks:
            try:
                removed(session)
            except Exception:  # noqa: BLE001 - an observer must not block the release
                log.failure("session removal hook failed")
        released = (defer.maybeDeferred(self.shaping.session_removed, port) if self.shaping is not None
                    else defer.succeed(None))
        waits.append(released)
        if session.site is not None:
            self._abort_after(released, session)
        self.bus.publish("session.removed", {"session_id": sid, "port": port})
        self._changed(None, urgent=True)  # gone, and its group may have dissolved
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

    def _abort_after(self, released: defer.Deferred, session: Session) -> None:
        """Reset *session*'s open connections once its kernel shaping is gone (at most
        ``ABORT_WAIT`` seconds later).  Not before: an RST queued behind the port's htb
        class, or dropped by its DROP rule, dies with the class or the rule, and the
        player would hang on a connection the daemon already forgot."""
        site, channels = session.site, session.channels
        done = False

        def abort(result: Any = None) -> Any:
            nonlocal done
            if not done:
                done = True
                if timer.active():
                    timer.cancel()
                site.abort_all(channels)
            return result

        timer = self.clock.callLater(ABORT_WAIT, abort)
        released.addBoth(abort)

    def clear(self) -> tuple[int, defer.Deferred]:
        """Remove every session; (count, Deferred fired when all ports are released)."""
        ids = [s.session_id for s in self.all()]
        ds = [self.remove(sid, "cleared") for sid in ids]
        return len(ids), defer.DeferredList(ds)

    def set_keep(self, session_id: str, keep: bool) -> dict[str, Any]:
        """Keep *session_id* while idle (``keep``), or let it expire by the usual rules."""
        session = self.get(session_id)
        self.expiry.set_keep(session, keep)
        self._changed(session, urgent=True)
        return self.to_json(session)

    def stop_accepting(self) -> defer.Deferred:
        """Graceful stop, first phase: no new session, no new connection on any session
        port; connections already open keep being served.  Fires when every port closed."""
        self.accepting = False
        waits = []
        for session in self._by_id.values():
            if session.listener is not None and session.listener_stopped is None:
                d = defer.maybeDeferred(session.listener.stopListening)
                # remove() waits on this too; keep a result for it
                session.listener_stopped = d.addErrback(_log_close_failure, session.port)
                waits.append(session.listener_stopped)
        return defer.DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> defer.Deferred:
        """Daemon stop: remove every session, stop timers and SSE."""
        self.accepting = False
        self.metering.stop()
        _, d = self.clear()
        self.feed.stop()
        self.stream.close()
        return d

    # ------------------------------------------------------------------ network log

    def network_stream(self, session: Session) -> EventStream:
        """The SSE stream of new network-log entries of *session* (created on demand)."""
        if session.net_stream is None:
            session.net_stream = EventStream(self.clock)
        return session.net_stream

    def _origin(self) -> IResource | None:
        """The origin resource (resolved once it is wired)."""
        origin = self.origin
        if origin is not None and callable(origin) and not hasattr(origin, "render"):
            resolved = origin()
            if resolved is not None:
                self.origin = resolved
            return resolved
        return cast("IResource | None", origin)  # not a getter: the resource itself
