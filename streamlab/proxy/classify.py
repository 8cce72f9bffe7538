"""Request kinds, variants and fault-scope matching for origin paths (pure).

Origin layout (spec/streams.md): ``/go-live/<content>/master*.m3u8`` and
``manifest*.mpd`` are masters, ``playlist_[<2s|6s>_]<variant>.m3u8`` media playlists,
``video/<rung>/...``, ``audio/<track>/...``, ``ts/<rung>/...`` media and init segments.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

KINDS: tuple[str, ...] = ("master_manifest", "manifest", "segment", "other")

SEGMENT_EXTENSIONS: frozenset[str] = frozenset({
    ".m4s", ".mp4", ".ts", ".m4a", ".aac", ".cmfv", ".cmfa", ".webm", ".vtt", ".webvtt", ".m4v",
})
AUDIO_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".cmfa"})

_PLAYLIST = re.compile(r"^playlist_(?:(?:ll|\d+(?:\.\d+)?s)_)?(?P<variant>.+)\.m3u8$", re.IGNORECASE)
_MASTER = re.compile(r"^(?:master[^/]*\.m3u8|manifest[^/]*\.mpd)$", re.IGNORECASE)
_ROOT = "/go-live/"


def _clean(path: str) -> str:
    """The decoded path without query or fragment (accepts full URLs too)."""
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    return unquote(path)


def _content_rest(path: str) -> list[str] | None:
    """Path components after ``/go-live/<content>/`` (None when not under a content)."""
    if not path.startswith(_ROOT):
        return None
    parts = [p for p in path[len(_ROOT):].split("/") if p]
    if len(parts) < 2 or parts[0] == "api":
        return None
    return parts[1:]


def classify(path: str) -> str:
    """``master_manifest | manifest | segment | other`` for a request path (query ignored)."""
    rest = _content_rest(_clean(path))
    if not rest:
        return "other"
    name = rest[-1]
    if len(rest) == 1:
        if _MASTER.match(name):
            return "master_manifest"
        if _PLAYLIST.match(name):
            return "manifest"
    ext = posixpath.splitext(name)[1].lower()
    if ext in SEGMENT_EXTENSIONS:
        return "segment"
    return "other"


def playlist_variant(name: str) -> str | None:
    """``720p`` for ``playlist_720p.m3u8`` / ``playlist_6s_720p.m3u8`` (else None)."""
    m = _PLAYLIST.match(posixpath.basename(_clean(name)))
    return m.group("variant") if m else None


def variant_of(path: str) -> str | None:
    """The variant (rung id or audio track id) a request belongs to, or None.

    Media playlists carry it in the name, segments in their parent directory
    (``video/720p/seg_00001.m4s`` -> ``720p``); masters and other paths have none.
    """
    clean = _clean(path)
    rest = _content_rest(clean)
    if not rest:
        return None
    name = rest[-1]
    if len(rest) == 1:
        return playlist_variant(name)
    if posixpath.splitext(name)[1].lower() in SEGMENT_EXTENSIONS and len(rest) >= 2:
        return rest[-2]
    return None


def is_audio(path: str, kind: str | None = None) -> bool:
    """Whether a request is for audio: under ``audio/``, an audio extension, or the
    media playlist of a variant whose id starts with ``audio``."""
    clean = _clean(path)
    rest = _content_rest(clean) or []
    if len(rest) >= 2 and rest[0].lower() == "audio":
        return True
    if posixpath.splitext(clean)[1].lower() in AUDIO_EXTENSIONS:
        return True
    variant = playlist_variant(clean) if len(rest) == 1 else None
    return bool(variant and variant.lower().startswith("audio"))


def is_all(urls: Sequence[str] | None) -> bool:
    """True when a scope list means every request (empty, or only ``All``)."""
    if not urls:
        return True
    return all(not u.strip() or u.strip().lower() == "all" for u in urls)


class _Request:
    """The parts of one request path that scope entries are compared with."""

    __slots__ = ("clean", "variant", "name", "kind", "_audio")

    def __init__(self, path: str, kind: str) -> None:
        self.clean = _clean(path)
        self.variant = variant_of(self.clean)
        self.name = posixpath.basename(self.clean)
        self.kind = kind
        self._audio: bool | None = None

    @property
    def audio(self) -> bool:
        if self._audio is None:
            self._audio = is_audio(self.clean, self.kind)
        return self._audio


def _entry_matches(entry: str, req: _Request) -> bool:
    entry = entry.strip()
    if not entry or entry.lower() == "all":
        return True
    if "://" in entry:
        entry = _clean(entry)
    if req.variant is not None and entry == req.variant:
        return True
    if entry == req.name or entry in req.clean:
        return True
    if entry.lower() == "audio" and req.audio:
        return True
    if req.kind == "segment" and req.variant is not None and entry.endswith(".m3u8"):
        return playlist_variant(entry) == req.variant
    return False


def scope_matches(urls: Sequence[str] | None, path: str, kind: str) -> bool:
    """Whether a request is in a rule's ``P_failure_urls`` scope.

    Empty or ``["All"]`` = every request.  An entry matches when it equals the variant
    (rung id / parent directory), equals the file name, or is a substring of the decoded
    path; ``audio`` matches audio requests; ``playlist_*_X.m3u8`` also matches X's segments.
    """
    if is_all(urls):
        return True
    req = _Request(path, kind)
    return any(_entry_matches(u, req) for u in urls or () if u.strip())
