"""A session's network log: a bounded ring of request entries, and its HAR 1.2 export (pure).

Entry fields (spec/sessions.md section 6; every entry has all of them):

========================  ==============================================================
``seq``                   monotonic number of the entry within the session (extra field)
``timestamp``             request arrival, ISO-8601 UTC with milliseconds and ``Z``
``method``                request method
``url``                   the request target as received (path + query, or absolute URL)
``path``                  decoded path without the query
``request_kind``          ``segment|manifest|master_manifest|other``
``status``                status the client saw; 0 when no status line was sent
``bytes_in``              request bytes received (request line + headers + body)
``bytes_out``             response *body* bytes actually written
``content_type``          response Content-Type ("" when none was sent)
``play_id``               the session's play id at the time of the request
``request_range``         the request's ``Range`` header ("" when none)
``dns_ms``                always 0 (name resolution happens on the client)
``connect_ms``            accept -> request parsed, for the request that opened the
                          connection (0 on a reused connection)
``tls_ms``                TLS handshake (accept -> handshake done), 0 without TLS / reuse
``ttfb_ms``               request parsed -> first response byte written (0 if none)
``transfer_ms``           first -> last response byte written
``total_ms``              ttfb + transfer; without any byte written, parsed -> end
``faulted``               whether a fault touched this request
``fault_type``            canonical fault type ("" when not faulted)
``fault_action``          what was done (``status``, ``connect_reset``, ``body_hang``,
                          ``corrupt``, ``active_timeout``, ``client_disconnect``, ...)
``fault_category``        ``http|socket|corruption|transfer_timeout|client_disconnect|transport``
``shaper_delay_ms``       delay the userspace shaper added before the server saw the request
                          (extra field; already inside ``ttfb_ms``/``total_ms``)
========================  ==============================================================

Durations are milliseconds rounded to 0.001.
"""

from __future__ import annotations

import datetime
import http.client
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from streamlab.errors import Invalid

ENTRY_FIELDS: tuple[str, ...] = (
    "seq", "timestamp", "method", "url", "path", "request_kind", "status", "bytes_in", "bytes_out",
    "content_type", "play_id", "request_range", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms",
    "transfer_ms", "total_ms", "faulted", "fault_type", "fault_action", "fault_category",
    "shaper_delay_ms",
)


def iso_ms(t: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds (truncated) and ``Z``."""
    ms = int(t * 1000 // 1)
    dt = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_time_ms(value: str | float | int) -> int:
    """Epoch milliseconds of an ISO-8601 timestamp (``Z`` or offset; naive = UTC) or of
    epoch seconds given as a number/numeric string.  ValueError when unparseable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(float(value) * 1000 // 1)
    text = str(value).strip()
    try:
        return int(float(text) * 1000 // 1)
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(text.replace(" ", "+") if "T" in text and " " in text else text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _ms(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0
    return round(max(0.0, (b - a) * 1000.0), 3)


def make_entry(*, timestamp: float | str, method: str = "GET", url: str = "", path: str = "",
               request_kind: str = "other", status: int = 0, bytes_in: int = 0, bytes_out: int = 0,
               content_type: str = "", play_id: str = "", request_range: str = "",
               accepted: float | None = None, parsed: float | None = None, tls_done: float | None = None,
               first_byte: float | None = None, last_byte: float | None = None,
               finished: float | None = None, dns_ms: float = 0.0,
               connect_ms: float | None = None, tls_ms: float | None = None, ttfb_ms: float | None = None,
               transfer_ms: float | None = None, total_ms: float | None = None,
               fault_type: str = "", fault_action: str = "", fault_category: str = "",
               decision: Any = None, shaper_delay_ms: float = 0.0) -> dict[str, Any]:
    """Build one log entry (see the module docstring for every field).

    Timings come either from raw clock stamps in seconds — *accepted* (connection
    accepted; pass it only for the request that opened the connection), *tls_done*,
    *parsed* (request parsed; defaults to *timestamp*), *first_byte*, *last_byte*,
    *finished* (end of the request, used when no byte was written) — or directly as
    ``*_ms`` values, which win.  *timestamp* is epoch seconds or an ISO string.
    *decision* (a :class:`~streamlab.proxy.faults.FaultDecision`) fills the fault fields
    that are not given.
    """
    if isinstance(timestamp, str):
        ts_ms = parse_time_ms(timestamp)
        t0 = ts_ms / 1000.0
    else:
        t0 = float(timestamp)
    if parsed is None:
        parsed = t0
    if decision is not None:
        fault_type = fault_type or decision.fault_type
        fault_category = fault_category or decision.category
        if not fault_action:
            fault_action = f"{decision.stage}_{decision.action}" if decision.stage else decision.action
    c_ms = connect_ms if connect_ms is not None else (_ms(accepted, parsed) if accepted is not None else 0.0)
    t_ms = tls_ms if tls_ms is not None else (_ms(accepted, tls_done) if accepted is not None else 0.0)
    f_ms = ttfb_ms if ttfb_ms is not None else (_ms(parsed, first_byte) if first_byte is not None else 0.0)
    x_ms = transfer_ms if transfer_ms is not None else (
        _ms(first_byte, last_byte) if first_byte is not None else 0.0)
    if total_ms is None:
        total_ms = round(f_ms + x_ms, 3) if first_byte is not None or ttfb_ms is not None \
            else _ms(parsed, finished)
    return {
        "seq": 0,
        "timestamp": iso_ms(t0),
        "method": method,
        "url": url,
        "path": path,
        "request_kind": request_kind,
        "status": int(status or 0),
        "bytes_in": int(bytes_in or 0),
        "bytes_out": int(bytes_out or 0),
        "content_type": content_type or "",
        "play_id": play_id or "",
        "request_range": request_range or "",
        "dns_ms": round(float(dns_ms), 3),
        "connect_ms": round(float(c_ms), 3),
        "tls_ms": round(float(t_ms), 3),
        "ttfb_ms": round(float(f_ms), 3),
        "transfer_ms": round(float(x_ms), 3),
        "total_ms": round(float(total_ms), 3),
        "faulted": bool(fault_type or fault_category),
        "fault_type": fault_type or "",
        "fault_action": fault_action or "",
        "fault_category": fault_category or "",
        "shaper_delay_ms": round(float(shaper_delay_ms or 0.0), 3),
    }


class NetworkLog:
    """Ring of the last *size* entries of one session, newest last."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("network log size must be at least 1")
        self.size = size
        self._ring: deque[tuple[int, dict[str, Any]]] = deque(maxlen=size)
        self._seq = 0

    @property
    def count(self) -> int:
        """Entries held now (at most :attr:`size`)."""
        return len(self._ring)

    @property
    def total(self) -> int:
        """Entries ever appended (the ``seq`` of the newest one)."""
        return self._seq

    def __len__(self) -> int:
        return len(self._ring)

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Add *entry* (as built by :func:`make_entry`), dropping the oldest when full.

        Sets its ``seq`` and returns the stored entry.
        """
        self._seq += 1
        stored = dict(entry)
        stored["seq"] = self._seq
        self._ring.append((parse_time_ms(stored["timestamp"]), stored))
        return stored

    def entries(self, since: str | None = None, limit: int | None = None, *,
                after_seq: int | None = None) -> list[dict[str, Any]]:
        """Entries oldest first; *since* (ISO timestamp, exclusive, millisecond
        precision) and *after_seq* (exclusive) filter, *limit* keeps the newest N.

        Raises ``Invalid`` for an unparseable *since* or a negative *limit*.
        """
        items: Iterable[tuple[int, dict[str, Any]]] = self._ring
        if since not in (None, ""):
            try:
                since_ms = parse_time_ms(since)  # type: ignore[arg-type]
            except (ValueError, OverflowError):
                raise Invalid("invalid", fields={"since": "must be an ISO-8601 timestamp"}) from None
            items = [(t, e) for t, e in items if t > since_ms]
        if after_seq is not None:
            items = [(t, e) for t, e in items if e["seq"] > after_seq]
        out = [e for _t, e in items]
        if limit is not None:
            if limit < 0:
                raise Invalid("invalid", fields={"limit": "must be 0 or more"})
            out = out[-limit:] if limit else []
        return out

    def clear(self) -> None:
        """Drop every entry (``seq`` keeps counting)."""
        self._ring.clear()


# --------------------------------------------------------------------------- HAR 1.2


def _status_text(status: int) -> str:
    return http.client.responses.get(status, "") if status else ""


def _har_entry(entry: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    url = str(entry.get("url") or entry.get("path") or "/")
    if "://" not in url:
        url = base_url.rstrip("/") + (url if url.startswith("/") else "/" + url)
    status = int(entry.get("status") or 0)
    connect = float(entry.get("connect_ms") or 0)
    tls = float(entry.get("tls_ms") or 0)
    dns = float(entry.get("dns_ms") or 0)
    wait = float(entry.get("ttfb_ms") or 0)
    receive = float(entry.get("transfer_ms") or 0)
    if status == 0 and not wait and not receive:
        wait = float(entry.get("total_ms") or 0)
    timings = {
        "blocked": -1,
        "dns": round(dns, 3) if dns > 0 else -1,
        "connect": round(connect, 3) if connect > 0 else -1,
        "ssl": round(tls, 3) if tls > 0 else -1,
        "send": 0,
        "wait": round(wait, 3),
        "receive": round(receive, 3),
    }
    total = sum(v for k, v in timings.items() if k != "ssl" and v > 0)
    req_headers = [{"name": "Range", "value": entry["request_range"]}] if entry.get("request_range") else []
    resp_headers = [{"name": "Content-Type", "value": entry["content_type"]}] \
        if entry.get("content_type") else []
    method = str(entry.get("method") or "GET")
    bytes_out = int(entry.get("bytes_out") or 0)
    return {
        "startedDateTime": entry.get("timestamp"),
        "time": round(total, 3),
        "request": {
            "method": method,
            "url": url,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": req_headers,
            "queryString": [{"name": k, "value": v}
                            for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)],
            "headersSize": -1,
            "bodySize": 0 if method in ("GET", "HEAD") else -1,
        },
        "response": {
            "status": status,
            "statusText": _status_text(status),
            "httpVersion": "HTTP/1.1" if status else "",
            "cookies": [],
            "headers": resp_headers,
            "content": {"size": bytes_out, "mimeType": entry.get("content_type") or "x-unknown"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": bytes_out,
        },
        "cache": {},
        "timings": timings,
        "_streamlab": {
            "seq": entry.get("seq"),
            "path": entry.get("path"),
            "request_kind": entry.get("request_kind"),
            "play_id": entry.get("play_id"),
            "bytes_in": entry.get("bytes_in"),
            "total_ms": entry.get("total_ms"),
            "faulted": bool(entry.get("faulted")),
            "fault_type": entry.get("fault_type") or "",
            "fault_action": entry.get("fault_action") or "",
            "fault_category": entry.get("fault_category") or "",
        },
    }


def to_har(*args: Any, session_id: Any = None, entries: Sequence[Mapping[str, Any]] | None = None,
           creator_version: str | None = None, base_url: str | None = None,
           host: str | None = None) -> dict[str, Any]:
    """A HAR 1.2 document of *entries* (fault details under each entry's ``_streamlab``).

    Canonical call: ``to_har(session_id, entries, creator_version, base_url=...)``; the
    form ``to_har(entries, session_id=..., host=...)`` is accepted too.  Relative entry URLs
    are made absolute with *base_url* (e.g. ``http://lab:30181``), else with *host* when it
    is a ``host[:port]``, else ``http://localhost``.
    """
    positional = list(args)
    if positional and isinstance(positional[0], (list, tuple)):
        entries = positional.pop(0)
        if positional:
            creator_version = positional.pop(0)
    else:
        names = ["session_id", "entries", "creator_version"]
        got = dict(zip(names, positional, strict=False))
        session_id = got.get("session_id", session_id)
        entries = got.get("entries", entries)
        creator_version = got.get("creator_version", creator_version)
    if creator_version is None:
        try:
            from streamlab import __version__ as creator_version  # type: ignore[attr-defined]
        except ImportError:
            creator_version = "0"
    if base_url is None:
        base_url = f"http://{host}" if host and " " not in host and "/" not in host else "http://localhost"
    log: dict[str, Any] = {
        "version": "1.2",
        "creator": {"name": "streamlab", "version": str(creator_version)},
        "entries": [_har_entry(e, base_url) for e in entries or ()],
        "comment": f"streamlab session {session_id}" + (f" ({host})" if host else ""),
    }
    return {"log": log}
