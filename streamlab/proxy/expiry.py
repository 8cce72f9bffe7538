"""Idle expiry of sessions: one timer per session that applies the pure verdict of
:mod:`streamlab.proxy.lifetime` (docs/sessions.md "Session lifetime"), the ``keep`` flags,
the visible countdowns, and the lifetime fields of the session JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from streamlab.proxy import lifetime
from streamlab.proxy.session import Session, iso

log = Logger()


class SessionExpiry:
    """Expiry of the sessions *lookup* finds; *expire(session_id)* removes one;
    *changed(session, urgent)* tells the SSE feed."""

    def __init__(self, clock: IReactorTime, idle_timeout: float, grace: float, defaults: Mapping[str, Any], *,
                 lookup: Callable[[str], Session | None], expire: Callable[[str], Any],
                 changed: Callable[[Session, bool], None]) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.grace = grace
        self._defaults = defaults
        self._lookup = lookup
        self._expire = expire
        self._changed = changed
        self._keep: set[str] = set()
        self._countdown: dict[str, float] = {}
        self._timers: dict[str, IDelayedCall] = {}

    def start(self, sid: str) -> None:
        """A new session: first look at it after the idle timeout."""
        self._timers[sid] = self.clock.callLater(self.idle_timeout, self._check, sid)

    def forget(self, sid: str) -> None:
        """The session went away: its timer, keep flag and countdown too."""
        self._keep.discard(sid)
        self._countdown.pop(sid, None)
        timer = self._timers.pop(sid, None)
        if timer is not None and timer.active():
            timer.cancel()

    def set_keep(self, session: Session, keep: bool) -> None:
        """Keep *session* while idle (``keep``), or let it expire by the usual rules."""
        if keep:
            self._keep.add(session.session_id)
        else:
            self._keep.discard(session.session_id)
        self._countdown.pop(session.session_id, None)
        self._reschedule(session.session_id, 0.01)

    def _lifetime(self, session: Session, now: float) -> lifetime.Lifetime:
        stream = session.net_stream
        return lifetime.decide(
            now, session.last_activity, self.idle_timeout, self.grace,
            keep=session.session_id in self._keep, watched=bool(stream is not None and stream.clients),
            has_controls=bool(lifetime.controls_set(session.controls.values, self._defaults)),
            in_flight=session.in_flight, countdown_from=self._countdown.get(session.session_id))

    def fields(self, session: Session) -> dict[str, Any]:
        """The lifetime fields of the session JSON (a registry field provider)."""
        now = self.clock.seconds()
        verdict = self._lifetime(session, now)
        return {"session_keep": session.session_id in self._keep, "session_state": verdict.state,
                "session_idle_s": round(max(0.0, now - session.last_activity), 1),
                "session_idle_timeout_s": self.idle_timeout,
                "session_expires_at": iso(verdict.expires_at) if verdict.expires_at is not None else None,
                "session_expires_in_s": round(max(0.0, verdict.expires_at - now), 1)
                if verdict.expires_at is not None else None}

    def _reschedule(self, sid: str, delay: float) -> None:
        timer = self._timers.pop(sid, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._timers[sid] = self.clock.callLater(max(0.01, delay), self._check, sid)

    def _check(self, sid: str) -> None:
        self._timers.pop(sid, None)
        session = self._lookup(sid)
        if session is None:
            return
        try:
            now = self.clock.seconds()
            verdict = self._lifetime(session, now)
            if verdict.state == lifetime.EXPIRED:
                self._expire(sid)
                return
            if verdict.countdown_from is not None:
                if sid not in self._countdown:
                    log.info("session {sid} idle with controls set: expires in {grace:g} s unless kept",
                             sid=sid, grace=self.grace)
                    self._changed(session, True)
                self._countdown[sid] = verdict.countdown_from
            else:
                self._countdown.pop(sid, None)
            delay = max(0.01, verdict.recheck_at - now)
            self._timers[sid] = self.clock.callLater(delay, self._check, sid)
        except Exception:  # noqa: BLE001 - timers survive their errors
            log.failure("expiry check failed")
