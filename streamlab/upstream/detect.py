"""Validation of an upstream's registration and detection of what its manifest is (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from streamlab.errors import Invalid

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MAX_HEADERS = 32
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding", "upgrade", "te",
                  "keep-alive", "proxy-connection", "trailer"})


@dataclass(frozen=True)
class Registration:
    """What a tester asked for, checked."""

    name: str
    url: str
    headers: dict[str, str]
    verify_tls: bool


def check_registration(body: Any) -> Registration:
    """*body* of ``POST /api/upstreams`` as a :class:`Registration` (400 with the field
    that is wrong otherwise)."""
    if not isinstance(body, dict):
        raise Invalid("invalid upstream", detail="expected a JSON object")
    unknown = sorted(set(body) - {"name", "url", "headers", "verify_tls"})
    if unknown:
        raise Invalid("invalid upstream", detail=f"unknown fields: {', '.join(unknown)}",
                      fields={k: "unknown field" for k in unknown})
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name) or name in ("api", "healthz", "time"):
        raise Invalid("bad name", detail="name must be 1-100 of A-Z a-z 0-9 _ - (not api/healthz/time)",
                      fields={"name": "1-100 of [A-Za-z0-9_-]"})
    url = body.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if not isinstance(url, str) or parts is None or parts.scheme not in ("http", "https") \
            or not parts.hostname or len(url) > 4096:
        raise Invalid("bad url", detail="url must be an absolute http(s) URL of a master playlist or MPD",
                      fields={"url": "absolute http(s) URL"})
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise Invalid("bad headers", detail=f"headers must be an object of at most {MAX_HEADERS} strings",
                      fields={"headers": "object name -> value"})
    clean: dict[str, str] = {}
    for k, v in headers.items():
        if not isinstance(v, str) or not _TOKEN.match(k) or k.lower() in _HOP \
                or any(c in v for c in "\r\n\0") or len(v) > 8192:
            raise Invalid("bad headers", detail=f"header {k!r} is not a usable extra request header",
                          fields={"headers": k})
        clean[k] = v
    verify = body.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise Invalid("bad verify_tls", detail="verify_tls must be true or false",
                      fields={"verify_tls": "boolean"})
    return Registration(name, url, clean, verify)


@dataclass(frozen=True)
class ManifestInfo:
    """What the upstream's manifest is."""

    format: str  # "hls" | "dash"
    low_latency: bool
    live: bool
    variants: int


def sniff(body: bytes) -> str | None:
    """``hls``, ``dash`` or None for a manifest body."""
    head = body[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"#EXTM3U"):
        return "hls"
    if b"<MPD" in head or b":MPD" in head:
        return "dash"
    return None


def hls_master_variants(text: str) -> list[str]:
    """The URIs of a master playlist's variants (empty for a media playlist)."""
    out: list[str] = []
    pending = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#EXT-X-STREAM-INF"):
            pending = True
        elif s and not s.startswith("#") and pending:
            out.append(s)
            pending = False
    return out


def hls_media_info(text: str) -> tuple[bool, bool]:
    """(low latency, live) of a media playlist."""
    ll = "#EXT-X-PART:" in text or "#EXT-X-PART-INF" in text
    vod = "#EXT-X-ENDLIST" in text or "#EXT-X-PLAYLIST-TYPE:VOD" in text
    return ll, not vod


def dash_info(text: str) -> ManifestInfo:
    """Format facts of an MPD."""
    live = bool(re.search(r'\btype=["\']dynamic["\']', text))
    ll = bool(re.search(r"availabilityTimeOffset|availabilityTimeComplete=[\"']false|<(?:\w+:)?Latency\b",
                        text))
    reps = len(re.findall(r"<(?:\w+:)?Representation\b", text))
    return ManifestInfo("dash", ll and live, live, reps)
