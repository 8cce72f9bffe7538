"""The one Content-Type table for manifests and media (origin, session ports, relays).

Media types follow the file extension; an fMP4 file (``.m4s``, ``.mp4``, ``.m4v``) is
``audio/mp4`` when it lives under the item's ``audio/`` directory and ``video/mp4``
otherwise, so an audio segment has the same type whichever port serves it.
"""

from __future__ import annotations

import posixpath

HLS = "application/vnd.apple.mpegurl"
DASH = "application/dash+xml"

CONTENT_TYPES: dict[str, str] = {
    ".m3u8": HLS,
    ".mpd": DASH,
    ".ts": "video/mp2t",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
    ".cmfa": "audio/mp4",
    ".cmfv": "video/mp4",
    ".m4s": "video/mp4",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".vtt": "text/vtt",
    ".webvtt": "text/vtt",
}
"""Extension -> type; the fMP4 ones below switch to ``audio/mp4`` under ``audio/``."""

FMP4_BY_TOP_DIR = frozenset({".m4s", ".mp4", ".m4v"})
MEDIA_EXTS = frozenset(CONTENT_TYPES) - {".m3u8", ".mpd"}
DEFAULT = "application/octet-stream"
LIVE_PREFIX = "/go-live/"


def content_type(rel_path: str) -> str:
    """Content-Type of the file at *rel_path*, relative to the item directory
    (``audio/en/n5.m4s`` -> ``audio/mp4``)."""
    ext = posixpath.splitext(rel_path)[1].lower()
    if ext in FMP4_BY_TOP_DIR and rel_path.split("/", 1)[0] == "audio":
        return "audio/mp4"
    return CONTENT_TYPES.get(ext, DEFAULT)


def url_content_type(path: str) -> bytes:
    """Content-Type header value for a request *path* such as
    ``/go-live/<item>/audio/en/n5.m4s`` (the item-relative part decides, as on the origin)."""
    if path.startswith(LIVE_PREFIX):
        rest = path[len(LIVE_PREFIX):]
        path = rest.split("/", 1)[1] if "/" in rest else rest
    return content_type(path.lstrip("/")).encode("ascii")
