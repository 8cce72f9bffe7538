"""DiscoveryService: announces this server to the pairing rendezvous.

With ``rendezvous_url`` and ``announce_url`` set, ``{"server_id","url","label"}`` is
POSTed as JSON to ``<rendezvous_url>/announce`` at start, every ``announce_interval``
and on demand (:meth:`announce_now`, coalesced with any pending announce).  Failures are
logged and retried with exponential backoff; they never stop the daemon.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, cast

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent

from streamlab.config import Config
from streamlab.discovery import core
from streamlab.fsutil import atomic_write

log = Logger()

REQUEST_TIMEOUT = 10.0
SERVER_ID_FILE = "server_id"


class HTTPPoster(Protocol):
    """The part of a treq client the announce uses."""

    def post(self, url: str, **kwargs: Any) -> Deferred[Any]:
        """POST to *url* (treq keywords: ``json``, ``timeout``, ``reactor``)."""
        ...


def load_or_create_server_id(state_dir: str, configured: str = "") -> str:
    """The configured id, else the one kept in ``<state_dir>/server_id`` (created once).

    Small blocking file access, done once at start.
    """
    if configured:
        return configured
    path = os.path.join(state_dir, SERVER_ID_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
        if core.valid_server_id(value):
            return value
        log.warn("ignoring malformed server id in {path}", path=path)
    except FileNotFoundError:
        pass
    value = core.new_server_id()
    atomic_write(path, (value + "\n").encode())
    return value


class DiscoveryService(Service):
    """The announce loop.  *http* is a treq-like client (``post``); default: a treq
    ``HTTPClient`` on *reactor* (announces are hours apart: no connection pool)."""

    name = "discovery"

    def __init__(self, config: Config, reactor: IReactorTime, http: HTTPPoster | None = None,
                 server_id: str | None = None) -> None:
        self.reactor = reactor
        disc = config.discovery
        self.rendezvous_url = disc.rendezvous_url
        self.announce_url = disc.announce_url
        self.label = disc.announce_label
        self.interval = float(disc.announce_interval)
        self.state_dir = config.paths.state_dir
        self._configured_id = disc.server_id
        self.server_id = server_id or ""
        # treq's HTTPClient is an HTTPPoster (its decorated ``post`` hides that from mypy).
        self.http = http if http is not None else cast(HTTPPoster, HTTPClient(Agent(reactor)))
        self.failures = 0
        self.announces = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self._timer: IDelayedCall | None = None
        self._in_flight: Deferred[bool] | None = None

    @property
    def enabled(self) -> bool:
        """Announcing is on when both URLs are configured."""
        return bool(self.rendezvous_url and self.announce_url)

    def startService(self) -> None:
        """Resolve the server id and announce right away (when enabled)."""
        super().startService()
        if not self.server_id:
            self.server_id = load_or_create_server_id(self.state_dir, self._configured_id)
        if self.enabled:
            self._schedule(0)

    def stopService(self) -> None:
        """Stop announcing."""
        super().stopService()
        self._cancel_timer()
        if self._in_flight is not None:
            self._in_flight.cancel()

    def info(self) -> dict[str, Any]:
        """What ``GET /api/rendezvous`` answers."""
        return {"url": self.rendezvous_url or "", "label": self.label, "server_id": self.server_id,
                "enabled": self.enabled, "announces": self.announces, "failures": self.failures,
                "last_error": self.last_error}

    # ------------------------------------------------------------------ scheduling

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if self.running:
            self._timer = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._start_announce()

    def announce_now(self) -> Deferred[bool]:
        """Announce now; joins an announce already in flight instead of starting another.

        Fires with True/False (success) once that announce is done; never errbacks.
        """
        if not self.enabled:
            return defer.succeed(False)
        return self._start_announce()

    def _start_announce(self) -> Deferred[bool]:
        if self._in_flight is None:
            self._cancel_timer()
            d = self._announce()
            if d.called:  # finished without waiting (e.g. refused at once)
                outcome: list[Any] = []
                d.addBoth(outcome.append)
                return defer.succeed(bool(outcome and outcome[0] is True))
            self._in_flight = d

            def clear(result: Any) -> Any:
                self._in_flight = None
                return result

            d.addBoth(clear)
        waiter: Deferred[bool] = Deferred()

        def settle(result: object) -> object:
            waiter.callback(result is True)
            return result

        self._in_flight.addBoth(settle)
        return waiter

    # ------------------------------------------------------------------ the request

    @defer.inlineCallbacks
    def _announce(self) -> Any:
        url = f"{self.rendezvous_url}/announce"
        payload = core.announce_payload(self.server_id, self.announce_url, self.label)
        ok = False
        try:
            response = yield self.http.post(url, json=payload, timeout=REQUEST_TIMEOUT, reactor=self.reactor)
            yield response.content()
            if 200 <= response.code < 300:
                ok = True
            else:
                self.last_error = f"HTTP {response.code}"
        except defer.CancelledError:
            self.last_error = "timed out" if self.running else "stopped"
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        self.announces += 1
        if ok:
            self.failures = 0
            self.last_error = None
            self.last_ok = self.reactor.seconds()
            log.info("announced {server_id} to {url}", server_id=self.server_id, url=url)
            self._schedule(self.interval)
        else:
            self.failures += 1
            delay = core.backoff_delay(self.failures, self.interval)
            log.warn("announce to {url} failed ({error}); retry in {delay:.0f}s", url=url,
                     error=self.last_error, delay=delay)
            self._schedule(delay)
        return ok
