"""Graceful stop on SIGTERM.

twistd stops every service when the reactor shuts down: the listeners stop accepting,
the job service terminates its encoders, the shaping service removes its tc classes and
nftables rules, the session registry releases every port.  This module adds the two
pieces that were missing:

* :class:`InFlight` counts HTTP requests that are being answered on the main listener
  and on the session ports (event streams and WebSockets excepted);
  :meth:`GracefulStop.drain` (called by the daemon before it stops any subsystem) stops
  every listener from accepting (main, bootstrap, session ports) and waits until those
  requests have finished or ``shutdown_grace_seconds`` have passed, whichever comes
  first, then until the finished responses have left Twisted's write buffers (same
  deadline).  Then the subsystems stop (session ports, encoders, shaping); whatever is
  still open is cut when the reactor disconnects every connection.
* twistd re-raises the signal that stopped it (so the exit status of a SIGTERM-stopped
  daemon is "killed by signal 15"); after an orderly stop on SIGTERM we exit 0 instead,
  which is what systemd, scripts and the spec expect.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class InFlight:
    """Number of requests being answered; waiters are told when it drops to zero."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[defer.Deferred[None]] = []

    def begin(self) -> None:
        """A request started."""
        self.count += 1

    def end(self) -> None:
        """A request finished or its connection was lost."""
        self.count = max(0, self.count - 1)
        if self.count == 0 and self._waiters:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def idle(self) -> defer.Deferred[None]:
        """Fires when no request is in flight (at once when none is)."""
        if self.count == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d


FLUSH_POLL = 0.02  # seconds between two looks at the write buffers while stopping


def _pending_writes(reactor: IReactorTime) -> bool:
    """Whether any TCP connection still has bytes to write (the reactor watches a
    connection for writability exactly while its buffer is not empty)."""
    get_writers = getattr(reactor, "getWriters", None)
    if get_writers is None:
        return False
    return any(isinstance(w, tcp.Connection) for w in get_writers())


def _settled(stop: Callable[[], Any]) -> defer.Deferred[None]:
    """Run *stop*; a fresh Deferred that fires (with None) once it is done, whatever its
    result.  Fresh, because a StreamServerEndpointService hands back its own internal
    Deferred, which the daemon's later stopService call chains onto again."""
    done: defer.Deferred[None] = defer.Deferred()

    def settled(result: Any) -> None:
        if isinstance(result, Failure):
            log.failure("graceful stop: stopping a listener", result)
        done.callback(None)

    defer.maybeDeferred(stop).addBoth(settled)
    return done


class GracefulStop(Service):
    """Stop phase: wait for *inflight* to drain, at most *grace* seconds; exit 0 on SIGTERM."""

    name = "graceful-stop"

    def __init__(self, reactor: IReactorTime, inflight: InFlight, grace: float) -> None:
        self.reactor = reactor
        self.inflight = inflight
        self.grace = float(grace)
        self._trigger: object = None  # the system event trigger's id

    def startService(self) -> None:  # noqa: N802 - twisted API
        super().startService()
        add = getattr(self.reactor, "addSystemEventTrigger", None)
        if add is not None and self._trigger is None:
            self._trigger = add("after", "shutdown", self._exit_status)

    def drain(self, *stoppers: Callable[[], Any]) -> defer.Deferred[None]:
        """Call every *stopper* (each makes one kind of listener stop accepting: the main
        listener, the bootstrap listener and the session ports), then wait until no request
        is in flight, at most ``grace`` seconds.  The daemon calls this before it stops its
        subsystems, so a held request (e.g. an LL-HLS blocking reload) still gets its
        answer from a live origin."""
        stopped = defer.gatherResults([_settled(stop) for stop in stoppers])
        return stopped.addCallback(lambda _: self._wait())

    def _wait(self) -> defer.Deferred[None]:
        deadline = self.reactor.seconds() + self.grace
        waiting = self.inflight.count
        if waiting == 0:
            return self._flushed(deadline)
        log.info("stopping: waiting up to {grace}s for {n} in-flight response(s)",
                 grace=self.grace, n=waiting)
        d = self.inflight.idle()
        timeout = self.reactor.callLater(self.grace, self._cut, d)

        def done(result: None) -> None:
            if timeout.active():
                timeout.cancel()
            return result

        d.addBoth(done)
        d.addCallback(lambda _: self._flushed(deadline))
        return d

    def _cut(self, d: defer.Deferred[None]) -> None:
        if not d.called:
            log.info("stopping: cutting {n} response(s) still in flight after {grace}s",
                     n=self.inflight.count, grace=self.grace)
            d.callback(None)

    def _flushed(self, deadline: float) -> defer.Deferred[None]:
        """Fires once no connection has response bytes waiting in its write buffer, or at
        *deadline*.  A finished response may still sit in Twisted's buffer (it goes out on
        the next writable turn, a large one over many); the reactor's shutdown closes every
        connection at once and would drop those bytes."""
        d: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if not _pending_writes(self.reactor) or self.reactor.seconds() >= deadline:
                d.callback(None)
            else:
                self.reactor.callLater(FLUSH_POLL, check)

        check()
        return d

    def _exit_status(self) -> None:
        """twistd would re-raise SIGTERM after the reactor stops; an orderly stop exits 0."""
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None  # type: ignore[attr-defined]
