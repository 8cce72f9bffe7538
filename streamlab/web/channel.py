"""HTTP/1.1 channel hygiene shared by every listener (main, bootstrap, session ports).

:class:`GuardedHTTPChannel` is Twisted's ``HTTPChannel`` plus:

* a request-head deadline: the request line and every header must arrive within
  ``head_timeout`` seconds of the connection opening (or of the first byte of the next
  request on a kept-alive connection).  Twisted's idle timeout is reset by every byte,
  so a client sending one header line every 45 s would otherwise hold the connection
  forever.  On expiry the client gets ``408`` (JSON) and the connection is closed;
* answers instead of silent closes: a request line over ``MAX_LENGTH`` -> ``414``, a
  header line or a head over ``totalHeadersSize`` -> ``431``, a ``Content-Length`` that
  is not a plain number of at most 18 digits -> ``400``, any other malformed head ->
  ``400``, each with a small JSON body;
* an optional per-client-address connection cap (the Site's ``client_slots``): a
  connection over the cap is answered ``429`` and closed.

The timers come from the Site's reactor (``self.callLater``), so tests drive them with a
``Clock`` over a ``StringTransport``.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

DEFAULT_HEAD_TIMEOUT = 20.0
MAX_CONTENT_LENGTH_DIGITS = 18
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
            429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}
_ERRORS = {400: "bad request", 408: "request timeout", 414: "request line too long",
           429: "too many connections", 431: "request header fields too large"}


def error_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response (JSON body, ``Connection: close``) for *status*."""
    body = json.dumps({"error": _ERRORS.get(status, "error"), "detail": detail}).encode()
    head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\ncache-control: no-store\r\naccess-control-allow-origin: *\r\n\r\n"
            % (status, _REASONS.get(status, b"Error"), len(body)))
    return head + body


class ClientSlots:
    """Open connections per client address, capped at *limit* (0 = unlimited).  Peers in
    *exempt* (networks, e.g. ``trusted_proxies``: every client behind a reverse proxy
    shares its address) are counted but never refused."""

    def __init__(self, limit: int, exempt: Sequence[str] = ()) -> None:
        self.limit = int(limit)
        self.open: Counter[str] = Counter()
        self._exempt = [ipaddress.ip_network(n, strict=False) for n in exempt]

    def _is_exempt(self, host: str) -> bool:
        if not self._exempt:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr.version == net.version and addr in net for net in self._exempt)

    def take(self, host: str) -> bool:
        """Count a new connection from *host*; False (nothing counted) when over the cap."""
        if self.limit and self.open[host] >= self.limit and not self._is_exempt(host):
            return False
        self.open[host] += 1
        return True

    def release(self, host: str) -> None:
        """A counted connection from *host* closed."""
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]


class GuardedHTTPChannel(HTTPChannel):
    """See the module docstring.  The Site may set ``head_timeout`` (seconds) and
    ``client_slots`` (a :class:`ClientSlots`)."""

    _head_timer: IDelayedCall | None = None
    _awaiting_head = True
    _slot_host: str | None = None
    _answered = False

    # ------------------------------------------------------------------ lifecycle

    def _site_setting(self, name: str, default: Any) -> Any:
        site = getattr(self, "site", None)
        value = getattr(site, name, None)
        if value is None:
            value = getattr(getattr(site, "settings", None), name, None)
        return default if value is None else value

    def connectionMade(self) -> None:  # noqa: N802 - twisted API
        super().connectionMade()
        slots = self._site_setting("client_slots", None)
        if slots is not None:
            peer = self.transport.getPeer() if self.transport is not None else None
            host = str(getattr(peer, "host", ""))
            if not slots.take(host):
                self._answer(429, f"more than {slots.limit} open connections from {host}")
                return
            self._slot_host = host
        self._awaiting_head = True
        self._arm_head_timer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - twisted API
        self._cancel_head_timer()
        host, self._slot_host = self._slot_host, None
        if host is not None:
            slots = self._site_setting("client_slots", None)
            if slots is not None:
                slots.release(host)
        super().connectionLost(reason)

    # ------------------------------------------------------------------ head deadline

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        timeout = float(self._site_setting("head_timeout", DEFAULT_HEAD_TIMEOUT))
        if timeout > 0:
            self._head_timer = self.callLater(timeout, self._head_expired)

    def _cancel_head_timer(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self._answered:
            timeout = self._site_setting("head_timeout", DEFAULT_HEAD_TIMEOUT)
            self._answer(408, f"the request head did not arrive within {timeout:g} s")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - twisted API
        if self._answered:
            return
        if self._awaiting_head and self._head_timer is None and data:
            self._arm_head_timer()  # first byte of the next request on a kept-alive connection
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802 - twisted API
        self._awaiting_head = False
        self._cancel_head_timer()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 - twisted API
        # The next head's deadline starts with its first byte (an idle kept-alive
        # connection is the idle timeout's business); a pipelined head already buffered
        # is parsed inside requestDone.
        self._awaiting_head = True
        super().requestDone(request)

    # ------------------------------------------------------------------ limits

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - twisted API
        if self._answered:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._answer(431, f"request line and headers exceed {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - twisted API
        if getattr(self, "_HTTPChannel__first_line", 1):
            self._answer(414, f"request line longer than {self.MAX_LENGTH} bytes")
        else:
            self._answer(431, f"header line longer than {self.MAX_LENGTH} bytes")

    def headerReceived(self, line: bytes) -> bool:  # noqa: N802 - twisted API
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > MAX_CONTENT_LENGTH_DIGITS:
                self._answer(400, "Content-Length must be a number of at most "
                                  f"{MAX_CONTENT_LENGTH_DIGITS} digits")
                return False
        return bool(super().headerReceived(line))

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - twisted API
        self._answer(400, "malformed request")

    def _answer(self, status: int, detail: str) -> None:
        """Write a complete error response and close, once; nothing more is read."""
        if self._answered:
            return
        self._answered = True
        self._cancel_head_timer()
        transport = self.transport
        if transport is None:
            return
        if not self.requests or not any(getattr(r, "startedWriting", False) for r in self.requests):
            transport.write(error_response(status, detail))
        if self.abortTimeout is not None:  # a client that does not read its answer is cut
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        transport.loseConnection()
