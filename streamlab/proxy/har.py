"""HAR 1.2 export of a session's network log (pure): :func:`to_har` turns network-log
entries (:mod:`streamlab.proxy.netlog`) into a HAR document, fault details under each
entry's ``_streamlab``."""

from __future__ import annotations

import http.client
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit


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
    req_headers = list(entry.get("request_headers") or ())
    if not req_headers and entry.get("request_range"):
        req_headers = [{"name": "Range", "value": entry["request_range"]}]
    resp_headers = list(entry.get("response_headers") or ())
    if not resp_headers and entry.get("content_type"):
        resp_headers = [{"name": "Content-Type", "value": entry["content_type"]}]
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
            from streamlab import __version__ as creator_version
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
