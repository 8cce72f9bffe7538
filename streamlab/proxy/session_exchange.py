"""The session side of a session port's requests: :class:`SessionExchange` implements
:class:`~streamlab.proxy.exchange.ISessionExchange` for one :class:`Session`.

``begin`` counts the request, updates the session's identity, asks the fault engine and
plans the request; ``rewrite`` applies the content edits and the manifest fault to a
buffered playlist; ``end`` counts late faults, feeds the metrics observers and appends
the network-log entry.  One adapter per session, built by the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.proxy import classify as classify_mod
from streamlab.proxy import faults, manifest_faults, rewrite
from streamlab.proxy.control_changes import DisarmTimers
from streamlab.proxy.exchange import ExchangeRecord, ISessionExchange, Plan, RequestInfo
from streamlab.proxy.external_ips import ExternalIps
from streamlab.proxy.fields import HTTP_PREFIXES
from streamlab.proxy.metering import Metering
from streamlab.proxy.session import Session

log = Logger()

#: the controls naming each HTTP rule's fault type
_RULE_TYPES = tuple(f"{prefix}_failure_type" for prefix in HTTP_PREFIXES)
_NONE = ("none",) * len(_RULE_TYPES)
_rule_types = itemgetter(*_RULE_TYPES)


def _armed(controls: Mapping[str, Any]) -> bool:
    """Whether any HTTP fault rule is set (the engine has something to decide)."""
    try:
        return _rule_types(controls) != _NONE
    except KeyError:
        return True


def _plan(kind: str, method: str, controls: Mapping[str, Any]) -> Plan:
    """The plan of an unfaulted request of *kind*: its transfer timeouts, and whether its
    body is held for the master edits or the manifest fault."""
    buffer_body = method == "GET" and (
        kind == "master_manifest"
        or (kind == "manifest" and controls.get("manifest_fault_type", "none") != "none"))
    active, idle = faults.transfer_timeouts(controls, kind) if kind != "other" else (0.0, 0.0)
    return Plan(kind, None, active, idle, buffer_body)

#: ``(session, record)`` after every finished session-port request (metrics)
RequestObserver = Callable[[Session, ExchangeRecord], None]


@implementer(ISessionExchange)
class SessionExchange:
    """The :class:`ISessionExchange` of one session (see the module docstring).

    *changed(session_id)* tells the SSE feed the session moved; *loop_of(path)* is the
    origin's loop number of a sequence-addressed segment URL (None: not known)."""

    def __init__(self, session: Session, clock: IReactorTime, *, changed: Callable[[str], None],
                 disarm: DisarmTimers, metering: Metering, external_ips: ExternalIps,
                 observers: Sequence[RequestObserver],
                 loop_of: Callable[[str], int | None] | None = None) -> None:
        self.session = session
        self.clock = clock
        self._changed = changed
        self._disarm = disarm
        self._metering = metering
        self._external_ips = external_ips
        self._observers = observers
        self._loop_of = loop_of
        #: request kinds by path: a player asks for the same playlists again and again
        self._kinds: dict[str, str] = {}
        #: the unfaulted plan per (kind, method) under the controls of revision _plans_rev
        self._plans: dict[tuple[str, str], Plan] = {}
        self._plans_rev = -1
        self._armed = False

    # ------------------------------------------------------------------ connections

    def connection_made(self, channel: Any) -> None:
        """A client connected: its transport is the one metering reads."""
        self.session.channels.add(channel)
        self.session.latest_transport = channel.transport
        self._metering.connection_opened()

    def connection_lost(self, channel: Any) -> None:
        """A client's connection closed."""
        self.session.channels.discard(channel)

    # ------------------------------------------------------------------ requests

    def begin(self, info: RequestInfo, now: float) -> Plan:
        """Count, identify, decide and plan one request."""
        session = self.session
        session.shaper_delay_ms = round(info.shaper_hold * 1000.0, 3)
        path = info.path
        kind = self._kinds.get(path)
        if kind is None:
            kind = classify_mod.classify(path)
            if kind != "segment":  # segment paths rarely come back
                if len(self._kinds) >= 256:
                    self._kinds.clear()
                self._kinds[path] = kind
        session.on_request(kind, info.url, path, now)
        ip = info.client_ip
        if ip:
            if info.new_connection:
                self._external_ips.seen(ip, now)
            if not session.player_ip:
                session.player_ip = ip
        if info.user_agent:
            session.user_agent = info.user_agent
        if info.play_id:
            session.play_id = info.play_id
        if info.attempt_id:
            session.attempt_id = info.attempt_id
        if kind == "segment":
            rung = classify_mod.variant_of(path)
            if rung and not classify_mod.is_audio(path, kind):
                loop_of = self._loop_of
                session.on_video_segment(rung, path, loop_of(path) if loop_of is not None else None)
        controls = session.controls
        if controls.revision_number != self._plans_rev:  # every control write bumps it
            self._plans_rev = controls.revision_number
            self._plans = {}
            self._armed = _armed(controls.values)
        decision = None
        # no HTTP rule armed (the usual case): the engine has nothing to decide or disarm
        if self._armed:
            if path.startswith("/go-live/"):
                try:
                    decision = session.engine.decide(kind, path, now)
                except Exception:  # noqa: BLE001 - a broken rule must not break serving
                    log.failure("fault engine failed")
            self._disarm.after_decide(session, decision is not None)
            if decision is not None:
                session.count_fault(faults.counter_key(decision.fault_type))
        session.in_flight += 1
        self._changed(session.session_id)
        plan = self._plans.get((kind, info.method))
        if plan is None:
            plan = self._plans[(kind, info.method)] = _plan(kind, info.method, controls.values)
        return plan if decision is None else plan._replace(fault=decision)

    def sent(self, nbytes: int) -> None:
        """Body bytes written to the client."""
        self.session.bytes_out_total += nbytes

    def faulted(self, fault_type: str) -> None:
        """A fault the request hit after ``begin`` (transfer timeout, manifest fault)."""
        self.session.count_fault(faults.counter_key(fault_type))
        self._changed(self.session.session_id)

    def rewrite(self, plan: Plan, path: str, body: bytes, now: float) -> tuple[bytes, str]:
        """Master edits (and the ladder of the unmodified master), then the manifest fault."""
        session = self.session
        if plan.kind == "master_manifest":
            try:
                body = self._rewrite_master(path, body, now)
            except Exception:  # noqa: BLE001 - never break a master over a rewrite bug
                log.failure("master rewrite failed")
        applied = ""
        if session.controls.values.get("manifest_fault_type", "none") != "none":
            try:
                text = body.decode("utf-8")
                out, applied = manifest_faults.apply(text, plan.kind, path, session.controls.values, now,
                                                     session.manifest_state)
                if out is not text:
                    body = out.encode("utf-8")
            except Exception:  # noqa: BLE001 - never break a playlist over a fault bug
                log.failure("manifest fault failed")
                applied = ""
        return body, applied

    def _rewrite_master(self, path: str, body: bytes, now: float) -> bytes:
        session = self.session
        text = body.decode("utf-8")
        controls = session.controls.values
        is_mpd = path.endswith(".mpd")
        # An MPD changes on every request (publishTime) but its ladder does not: parse the
        # ladder again only for another path or after 10 s.
        key = (path, int(now // 10)) if is_mpd else None
        if not is_mpd or key != session.variants_key:
            parse = rewrite.variants_of_mpd if is_mpd else rewrite.variants_of_master
            session.manifest_variants = parse(text)
            session.variants_key = key
        if not rewrite.rewrite_needed(controls):
            return body
        out = rewrite.rewrite_mpd(text, controls) if is_mpd else rewrite.rewrite_hls_master(text, controls)
        return out.encode("utf-8")

    def end(self, record: ExchangeRecord) -> None:
        """Observe and log the finished request."""
        session = self.session
        session.in_flight -= 1
        if record.undelivered:
            # counted when written; these bytes never left for the client
            session.bytes_out_total = max(0, session.bytes_out_total - record.undelivered)
        for observe in self._observers:
            try:
                observe(session, record)
            except Exception:  # noqa: BLE001 - an observer must not break the log
                log.failure("request observer failed")
        first, last = record.first_byte, record.last_byte
        if record.kind == "segment" and first is not None and last is not None and not record.fault_category:
            session.on_segment_complete(record.bytes_out, last - first)
        self._changed(session.session_id)
        netlog = session.netlog
        if netlog is None:
            return
        seq = netlog.add(record, session.play_id)
        stream = session.net_stream
        if stream is not None and stream.clients:
            stream.publish("entry", netlog.entry(seq, headers=False), seq)
