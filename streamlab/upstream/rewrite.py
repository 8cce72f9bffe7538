"""URL rewriting of upstream HLS playlists and DASH MPDs (pure).

Every http(s) URL a manifest names — relative or absolute — becomes an absolute-path
reference ``/go-live/{name}/...`` (see :mod:`.paths`), so a player keeps talking to the
host and port that served the manifest: the main port, or its session port.

HLS: URI lines (variant playlists after ``EXT-X-STREAM-INF``, segments) and every
``URI="..."`` attribute (``EXT-X-MEDIA``, ``EXT-X-I-FRAME-STREAM-INF``, ``EXT-X-MAP``,
``EXT-X-KEY``, ``EXT-X-SESSION-KEY``, ``EXT-X-PART``, ``EXT-X-PRELOAD-HINT``,
``EXT-X-RENDITION-REPORT``, ...).  Non-http URIs (``skd://``, ``data:``) stay.

DASH: the MPD is served at ``/go-live/{name}/manifest.mpd`` while its relative URLs mean
"next to the upstream MPD", so the MPD-level ``BaseURL`` is set to the local path of the
upstream MPD's directory (resolving an upstream MPD-level ``BaseURL`` first); deeper
``BaseURL``\\ s, ``SegmentTemplate@media``/``@initialization`` (``$Number$``, ``$Time$``
and friends survive untouched), ``SegmentURL@media``, ``Initialization@sourceURL`` and
``Location`` are rewritten when absolute and left alone when relative (they resolve
through the rewritten base, which keeps the upstream's directory layout).  The rest of
the document is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.sax.saxutils import escape, unescape

from streamlab.upstream.paths import Origin, absolute, local_url

_URI_ATTR = re.compile(r'(?<![A-Z-])URI="([^"]*)"')
_PLAYLIST_TAGS = ("#EXT-X-MEDIA:", "#EXT-X-I-FRAME-STREAM-INF:", "#EXT-X-RENDITION-REPORT:")
_ATTR_ESC = {'"': "&quot;"}


def _is_playlist_ref(url: str) -> bool:
    return url.split("?", 1)[0].split("#", 1)[0].lower().endswith((".m3u8", ".m3u"))


def rewrite_hls(text: str, base: str, origin: Origin, name: str) -> str:
    """*text* (a master or media playlist fetched from *base*) with every URL local."""

    def local(ref: str, playlist: bool) -> str:
        if not ref.strip():
            return ref
        full = absolute(base, ref)
        out = local_url(origin, name, full, playlist=playlist or _is_playlist_ref(full))
        return ref if out is None else out

    lines = text.split("\n")
    out: list[str] = []
    stream_inf = False
    for raw in lines:
        line = raw.rstrip("\r")
        eol = raw[len(line):]
        stripped = line.strip()
        if stripped.startswith("#"):
            if stripped.startswith("#EXT"):
                playlist = stripped.startswith(_PLAYLIST_TAGS)
                line = _URI_ATTR.sub(_uri_rewriter(local, playlist), line)
                if stripped.startswith("#EXT-X-STREAM-INF"):
                    stream_inf = True
        elif stripped:
            line = local(stripped, stream_inf)
            stream_inf = False
        out.append(line + eol)
    return "\n".join(out)


_MPD_OPEN = re.compile(r"<(?:[\w.-]+:)?MPD\b[^>]*>")
_PERIOD = re.compile(r"<(?:[\w.-]+:)?Period\b")
_BASEURL = re.compile(r"(<(?:[\w.-]+:)?BaseURL\b[^>]*>)([^<]*)(</(?:[\w.-]+:)?BaseURL>)")
_LOCATION = re.compile(r"(<(?:[\w.-]+:)?Location\b[^>]*>)([^<]*)(</(?:[\w.-]+:)?Location>)")
_URL_ATTRS = re.compile(r'(\s(?:media|initialization|sourceURL|index)=)(["\'])([^"\']*)\2')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _dir_of(url: str) -> str:
    path = url.split("#", 1)[0].split("?", 1)[0]
    return path.rsplit("/", 1)[0] + "/"


def _uri_rewriter(local: Callable[[str, bool], str], playlist: bool) -> Callable[[re.Match[str]], str]:
    """The ``re.sub`` replacement for one tag's ``URI="..."`` attribute."""

    def replace(match: re.Match[str]) -> str:
        return f'URI="{local(match.group(1), playlist)}"'

    return replace


def rewrite_mpd(text: str, base: str, origin: Origin, name: str) -> str:
    """*text* (an MPD fetched from *base*) with every URL on this host (module docstring)."""
    period = _PERIOD.search(text)
    first_period = period.start() if period else len(text)
    mpd_level: list[str] = []

    def base_sub(m: re.Match[str]) -> str:
        ref = unescape(m.group(2)).strip()
        top = m.start() < first_period
        if top:
            mpd_level.append(ref)
        if not top and not _SCHEME.match(ref):
            return m.group(0)  # relative: resolves through the rewritten MPD-level base
        full = absolute(base, ref) if ref else _dir_of(base)
        out = local_url(origin, name, full)
        return m.group(0) if out is None else f"{m.group(1)}{escape(out)}{m.group(3)}"

    def attr_sub(m: re.Match[str]) -> str:
        ref = unescape(m.group(3), _ATTR_ESC)
        if not _SCHEME.match(ref):
            return m.group(0)
        out = local_url(origin, name, ref)
        return m.group(0) if out is None else f"{m.group(1)}{m.group(2)}{escape(out, _ATTR_ESC)}{m.group(2)}"

    def location_sub(m: re.Match[str]) -> str:
        out = local_url(origin, name, absolute(base, unescape(m.group(2))))
        return m.group(0) if out is None else f"{m.group(1)}{escape(out)}{m.group(3)}"

    text = _BASEURL.sub(base_sub, text)
    text = _URL_ATTRS.sub(attr_sub, text)
    text = _LOCATION.sub(location_sub, text)
    if not mpd_level:
        opening = _MPD_OPEN.search(text)
        local_dir = local_url(origin, name, _dir_of(base))
        if opening is not None and local_dir is not None:
            prefix = opening.group(0)[1:].split("MPD", 1)[0]  # keep a namespace prefix
            element = f"<{prefix}BaseURL>{escape(local_dir)}</{prefix}BaseURL>"
            text = text[:opening.end()] + element + text[opening.end():]
    return text
