"""The network log's entries as values (pure): the field list, :func:`make_entry`, the
entry of an :class:`~streamlab.proxy.exchange.ExchangeRecord`, timestamps and header
blocks.  The fields are described in :mod:`streamlab.proxy.netlog`, which stores them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streamlab.formats import iso_ms, iso_of_ms, parse_time_ms  # noqa: F401 - re-exported
from streamlab.proxy.exchange import ExchangeRecord

ENTRY_FIELDS: tuple[str, ...] = (
    "seq", "timestamp", "method", "url", "path", "request_kind", "status", "bytes_in", "bytes_out",
    "content_type", "play_id", "request_range", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms",
    "transfer_ms", "total_ms", "faulted", "fault_type", "fault_action", "fault_category",
    "shaper_delay_ms", "upstream_ttfb_ms",
)


HEADER_CAP = 4096


def pack_headers(pairs: Iterable[tuple[Any, Any]]) -> str:
    """``name: value`` lines of *pairs* (bytes or str; a value may be a list of values, as
    in Twisted's ``getAllRawHeaders()``), at most :data:`HEADER_CAP` chars."""
    lines = []
    for name, value in pairs:
        n = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        for one in value if isinstance(value, (list, tuple)) else (value,):
            v = one.decode("latin-1") if isinstance(one, bytes) else str(one)
            lines.append(f"{n}: {v}".replace("\n", " "))
    text = "\n".join(lines)
    return text[:HEADER_CAP]


def pack_raw_headers(pairs: tuple[tuple[Any, Any], ...]) -> str:
    """:func:`pack_headers` of Twisted's ``(bytes, [bytes])`` pairs, joined as bytes (the
    per-request path; other shapes fall back to :func:`pack_headers`)."""
    try:
        joined = b"\n".join([name + b": " + value for name, values in pairs for value in values])
    except TypeError:
        return pack_headers(pairs)
    return joined[:HEADER_CAP].decode("latin-1")


def unpack_headers(text: str) -> list[dict[str, str]]:
    """HAR-shaped ``[{"name", "value"}]`` of a :func:`pack_headers` text."""
    out = []
    for line in text.split("\n") if text else ():
        name, _, value = line.partition(": ")
        out.append({"name": name, "value": value})
    return out


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
               decision: Any = None, shaper_delay_ms: float = 0.0,
               upstream_ttfb_ms: float | None = None) -> dict[str, Any]:
    """Build one log entry (see the module docstring for every field).

    Timings come either from raw clock stamps in seconds — *accepted* (connection
    accepted; pass it only for the request that opened the connection), *tls_done*
    (its TLS handshake done; ``tls_ms`` is accepted -> tls_done, at most ``connect_ms``),
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
    t_ms = tls_ms if tls_ms is not None else (
        min(_ms(accepted, tls_done), c_ms) if accepted is not None else 0.0)
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
        "faulted": fault_category != "upstream"
        and (bool(fault_type) or bool(fault_category and fault_category != "client_disconnect")),
        "fault_type": fault_type or "",
        "fault_action": fault_action or "",
        "fault_category": fault_category or "",
        "shaper_delay_ms": round(float(shaper_delay_ms or 0.0), 3),
        "upstream_ttfb_ms": None if upstream_ttfb_ms is None else round(float(upstream_ttfb_ms), 3),
    }


#: the fields of an ExchangeRecord a ring row keeps (everything before the raw headers)
RAW_FIELDS = ExchangeRecord._fields.index("request_headers")


def entry_of_record(raw: tuple[Any, ...], seq: int, ts_ms: int, play_id: str) -> dict[str, Any]:
    """The entry fields of a record added with :meth:`NetworkLog.add`."""
    r = ExchangeRecord._make(raw + ((), ()))
    arrived, first = r.arrived, r.first_byte
    if first is not None:
        ttfb = _ms(arrived, first)
        transfer = _ms(first, r.last_byte)
        total = round(ttfb + transfer, 3)
    else:
        ttfb = transfer = 0.0
        total = _ms(arrived, r.finished)
    accepted = r.accepted
    if accepted is not None:
        connect = _ms(accepted, arrived)
        tls = min(_ms(accepted, r.tls_done), connect)  # the handshake is part of connect
    else:
        connect = tls = 0.0
    upstream = r.upstream_failure
    fault_type = r.fault_type or upstream
    category = r.fault_category or ("upstream" if upstream else "")
    return {
        "seq": seq, "timestamp": iso_of_ms(ts_ms), "method": r.method, "url": r.url, "path": r.path,
        "request_kind": r.kind, "status": r.status, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out,
        "content_type": r.content_type, "play_id": play_id, "request_range": r.request_range,
        "dns_ms": 0.0, "connect_ms": connect, "tls_ms": tls, "ttfb_ms": ttfb, "transfer_ms": transfer,
        "total_ms": total,
        "faulted": category != "upstream"
        and (bool(fault_type) or bool(category and category != "client_disconnect")),
        "fault_type": fault_type, "fault_action": r.fault_action, "fault_category": category,
        "shaper_delay_ms": r.shaper_delay_ms,
        "upstream_ttfb_ms": None if r.upstream_ttfb_ms is None else round(float(r.upstream_ttfb_ms), 3),
    }
