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
                          connection (0 on a reused connection); on a TLS port it
                          *includes* the handshake (as HAR's ``connect`` includes ``ssl``)
``tls_ms``                accept -> TLS handshake done, for the request that opened a TLS
                          connection (0 on plain HTTP and on a reused connection; never
                          more than ``connect_ms``, which contains it)
``ttfb_ms``               request parsed -> first response byte written (0 if none)
``transfer_ms``           first -> last response byte written
``total_ms``              ttfb + transfer; without any byte written, parsed -> end
``faulted``               whether an *injected* fault touched this request (a client that
                          went away by itself, ``client_disconnect``, is not a fault)
``fault_type``            canonical fault type ("" when not faulted)
``fault_action``          what was done (``status``, ``connect_reset``, ``body_hang``,
                          ``corrupt``, ``active_timeout``, ``client_disconnect``, ...)
``fault_category``        ``http|socket|corruption|transfer_timeout|client_disconnect|transport``,
                          or ``upstream`` when an upstream origin failed (its status, a
                          timeout or a refused connection; not an injected fault)
``shaper_delay_ms``       delay the userspace shaper added before the server saw the request
                          (extra field; already inside ``ttfb_ms``/``total_ms``)
``upstream_ttfb_ms``      upstream origins only (docs/upstream.md): request sent upstream ->
                          its response headers (extra field; null for local content)
========================  ==============================================================

Durations are milliseconds rounded to 0.001.

Memory bound: the ring keeps at most ``size`` entries *and* at most ``max_bytes`` of
estimated memory (``sys.getsizeof`` of the stored row, its values and its packed header
text); the oldest entries go first.  Entries are stored as compact tuples and expanded to
dicts only when read.  Request and response headers are kept per entry (each header block
capped at :data:`HEADER_CAP` characters) and returned by ``entries(headers=True)`` and in the
HAR.  Control-change *markers* (fault armed, shaping changed, ...) are kept beside the
entries (:meth:`NetworkLog.mark`) so a waterfall or chart can show when they happened.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streamlab.errors import Invalid
from streamlab.proxy.exchange import ExchangeRecord
from streamlab.proxy.har import to_har
from streamlab.proxy.netlog_entry import (
    ENTRY_FIELDS,
    HEADER_CAP,
    RAW_FIELDS,
    entry_of_record,
    iso_ms,
    iso_of_ms,
    make_entry,
    pack_headers,
    pack_raw_headers,
    parse_time_ms,
    unpack_headers,
)

__all__ = ["ENTRY_FIELDS", "HEADER_CAP", "NetworkLog", "iso_ms", "make_entry", "pack_headers",
           "parse_time_ms", "to_har", "unpack_headers"]

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MARKERS_KEPT = 500


# categorical string fields: interned, so every entry shares one object per value
_SHARED = frozenset({"method", "request_kind", "content_type", "play_id", "fault_type", "fault_action",
                     "fault_category"})
_TS = 1  # "timestamp" is rebuilt from the stored milliseconds
_PATH = 4  # "path" is stored as None when it equals the url without its query


# the fields whose values are not interned / shared: only these add memory per entry
_OWN = tuple(i for i, name in enumerate(ENTRY_FIELDS) if name not in _SHARED)
_SHARED_AT = tuple(i for i, name in enumerate(ENTRY_FIELDS) if name in _SHARED)


def _row_cost(row: tuple[Any, ...]) -> int:
    size = sys.getsizeof(row)
    for i in _OWN:
        v = row[i]
        if v is None or v is True or v is False or (type(v) is int and -5 <= v <= 256):
            continue
        size += sys.getsizeof(v)
    return size


# the part of an add()ed row's cost that does not depend on the request: the payload
# tuple, the ring's own tuple and ints, and six boxed floats (the request's time stamps
# and shaper delay)
_ADD_FIXED = sys.getsizeof(tuple(range(ExchangeRecord._fields.index("request_headers")))) + 120 + 6 * 24


#: one ring row (see NetworkLog.__init__)
_Row = tuple[int, int, int, tuple[Any, ...], str, str, "str | None"]
#: the fields of an ExchangeRecord a ring row keeps (everything before the raw headers)
_RAW = RAW_FIELDS


class NetworkLog:
    """The last entries of one session, newest last, bounded by count (*size*) and by
    estimated memory (*max_bytes*); plus the session's control-change markers."""

    def __init__(self, size: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if size < 1:
            raise ValueError("network log size must be at least 1")
        if max_bytes < 1024:
            raise ValueError("network log max_bytes must be at least 1024")
        self.size = size
        self.max_bytes = max_bytes
        # (timestamp ms, seq, cost, payload, request headers, response headers, play id):
        # the payload is the values in ENTRY_FIELDS order (append) or the record's
        # measurements (add, then the play id is set)
        self._ring: deque[_Row] = deque()
        self._bytes = 0
        self._seq = 0
        self.dropped = 0
        self._markers: deque[dict[str, Any]] = deque(maxlen=MARKERS_KEPT)
        # the previous header blocks, raw (as given) and packed: a player repeats its
        # request headers, and a playlist's response headers repeat too
        self._last_req: tuple[tuple[Any, ...], str] = ((), "")
        self._last_resp: tuple[tuple[Any, ...], str] = ((), "")

    @property
    def count(self) -> int:
        """Entries held now (at most :attr:`size`)."""
        return len(self._ring)

    @property
    def total(self) -> int:
        """Entries ever appended (the ``seq`` of the newest one)."""
        return self._seq

    @property
    def bytes_used(self) -> int:
        """Estimated memory held by the entries (at most :attr:`max_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._ring)

    def append(self, entry: Mapping[str, Any], request_headers: Iterable[tuple[Any, Any]] = (),
               response_headers: Iterable[tuple[Any, Any]] = ()) -> dict[str, Any]:
        """Add *entry* (as built by :func:`make_entry`) with its headers, dropping the oldest
        entries while over the count or memory bound.  Sets ``seq``; returns the entry as
        stored (without headers)."""
        self._seq += 1
        if tuple(entry) == ENTRY_FIELDS:  # as make_entry builds it: copied in C
            stored = dict(entry)
        else:
            stored = {k: entry.get(k) for k in ENTRY_FIELDS}
        stored["seq"] = self._seq
        ts = parse_time_ms(stored["timestamp"])
        row = list(stored.values())
        for i in _SHARED_AT:
            if isinstance(row[i], str):
                row[i] = sys.intern(row[i])
        row[_TS] = None
        if row[_PATH] == str(stored.get("url") or "").split("?", 1)[0]:
            row[_PATH] = None
        self._store(ts, tuple(row), request_headers, response_headers)
        return stored

    def add(self, record: ExchangeRecord, play_id: str = "") -> int:
        """Add the entry of one session-port request; returns its ``seq``.

        The per-request path: the record's measurements are kept as they are (one tuple
        slice) and turned into the entry's fields only when the entry is read."""
        self._seq += 1
        url, path, rng = record.url, record.path, record.request_range
        # what _row_cost would say, without walking the row: the strings of this request
        # and the big ints (the floats are the request's own stamps, counted in the fixed part)
        cost = _ADD_FIXED + sys.getsizeof(url) + (0 if path is url else sys.getsizeof(path)) \
            + (sys.getsizeof(rng) if rng else 0) + (28 if record.bytes_in > 256 else 0) \
            + (28 if record.bytes_out > 256 else 0) + (28 if self._seq > 256 else 0)
        req, added = self._pack(record.request_headers, "_last_req")
        cost += added
        resp, added = self._pack(record.response_headers, "_last_resp")
        cost += added
        ts = int(record.arrived * 1000 // 1)
        self._append_row((ts, self._seq, cost, record[:_RAW], req, resp, play_id))
        return self._seq

    def _store(self, ts: int, values: tuple[Any, ...], request_headers: Iterable[tuple[Any, Any]],
               response_headers: Iterable[tuple[Any, Any]]) -> None:
        cost = _row_cost(values) + 120  # + the ring's own tuple and the boxed ints
        # headers: a block equal to the previous one is shared, not stored again
        req, added = self._pack(request_headers, "_last_req")
        cost += added
        resp, added = self._pack(response_headers, "_last_resp")
        cost += added
        self._append_row((ts, self._seq, cost, values, req, resp, None))

    def _append_row(self, row: _Row) -> None:
        self._ring.append(row)
        self._bytes += row[2]
        while len(self._ring) > 1 and (len(self._ring) > self.size or self._bytes > self.max_bytes):
            self._bytes -= self._ring.popleft()[2]
            self.dropped += 1

    def _pack(self, pairs: Iterable[tuple[Any, Any]], last_attr: str) -> tuple[str, int]:
        """*pairs* packed, and the memory it adds: nothing when equal to the previous
        block (compared raw, before packing; the packed text is then shared)."""
        raw = pairs if type(pairs) is tuple else tuple(pairs)
        last_raw, last_text = getattr(self, last_attr)
        if raw == last_raw:
            return last_text, 0
        text = pack_raw_headers(raw)
        if text == last_text:
            setattr(self, last_attr, (raw, last_text))
            return last_text, 0
        setattr(self, last_attr, (raw, text))
        return text, sys.getsizeof(text)

    def entries(self, since: str | None = None, limit: int | None = None, *,
                after_seq: int | None = None, headers: bool = False) -> list[dict[str, Any]]:
        """Entries oldest first; *since* (ISO timestamp, exclusive, millisecond
        precision) and *after_seq* (exclusive) filter, *limit* keeps the newest N;
        *headers* adds ``request_headers``/``response_headers`` (``[{"name","value"}]``).

        Raises ``Invalid`` for an unparseable *since* or a negative *limit*.
        """
        rows: Iterable[_Row] = self._ring
        if since not in (None, ""):
            try:
                since_ms = parse_time_ms(str(since))
            except (ValueError, OverflowError):
                raise Invalid("invalid", fields={"since": "must be an ISO-8601 timestamp"}) from None
            rows = [r for r in rows if r[0] > since_ms]
        if after_seq is not None:
            rows = [r for r in rows if r[1] > after_seq]
        rows = list(rows)
        if limit is not None:
            if limit < 0:
                raise Invalid("invalid", fields={"limit": "must be 0 or more"})
            rows = rows[-limit:] if limit else []
        return [self._expand(r, headers) for r in rows]

    def entry(self, seq: int, headers: bool = True) -> dict[str, Any] | None:
        """One entry (with its headers unless *headers* is False), or None when it is no
        longer (or not yet) held."""
        for r in reversed(self._ring):
            if r[1] == seq:
                return self._expand(r, headers)
            if r[1] < seq:
                break
        return None

    @staticmethod
    def _expand(row: _Row, headers: bool) -> dict[str, Any]:
        if row[6] is not None:  # added from a record
            out = entry_of_record(row[3], row[1], row[0], row[6])
        else:
            out = dict(zip(ENTRY_FIELDS, row[3], strict=True))
            out["timestamp"] = iso_of_ms(row[0])
            if out["path"] is None:
                out["path"] = str(out["url"] or "").split("?", 1)[0]
        if headers:
            out["request_headers"] = unpack_headers(row[4])
            out["response_headers"] = unpack_headers(row[5])
        return out

    def mark(self, t: float, kind: str, text: str, fields: Sequence[str] = ()) -> dict[str, Any]:
        """Record a control change at epoch *t* (``kind``: ``fault|shaping|transport|content|
        timeout|other``; *text*: what a tester reads) and return the marker."""
        marker = {"timestamp": iso_ms(t), "kind": kind, "text": text, "fields": list(fields)}
        self._markers.append(marker)
        return marker

    def markers(self) -> list[dict[str, Any]]:
        """Control-change markers, oldest first (the last :data:`MARKERS_KEPT`)."""
        return list(self._markers)

    def stats(self) -> dict[str, Any]:
        """What the ring holds: count, bytes, bounds, dropped, and the time span covered."""
        span = (self._ring[-1][0] - self._ring[0][0]) / 1000.0 if self._ring else 0.0
        return {"count": len(self._ring), "bytes": self._bytes, "max_bytes": self.max_bytes,
                "max_entries": self.size, "dropped": self.dropped, "span_s": round(span, 3)}

    def clear(self) -> None:
        """Drop every entry (``seq`` keeps counting)."""
        self._ring.clear()
        self._bytes = 0
