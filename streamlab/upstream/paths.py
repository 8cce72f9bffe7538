"""The mapping between upstream URLs and local origin paths (pure).

An upstream registered as *name* with manifest URL ``M`` is served below
``/go-live/{name}/``:

* ``master.m3u8`` (HLS) or ``manifest.mpd`` (DASH) is ``M`` itself;
* ``playlist_{token}.m3u8`` is an HLS media playlist: *token* is the playlist's path on
  the upstream host with ``/`` written as ``~`` and the ``.m3u8`` suffix dropped
  (``live/720p/index.m3u8`` -> ``playlist_live~720p~index.m3u8``), or ``b64.`` and the
  URL-safe base64 of the path when that is not reversible.  Naming media playlists like
  the local origin's keeps the session fault layer's classification (``manifest``) and its
  variant scopes (a scope ``720p`` is a substring of the path) working unchanged;
* any other path is the same path on the upstream host (segments keep their directory, so
  ``live/720p/seg_1.m4s`` classifies as a ``segment`` of variant ``720p``);
* ``_o/{scheme}/{host[:port]}/{path}`` is a path on another host (a CDN named by absolute
  URLs in a manifest).

Query strings pass through unchanged in both directions.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

MASTER_HLS = "master.m3u8"
MASTER_DASH = "manifest.mpd"
OTHER_HOST = "_o"
_B64 = "b64."


@dataclass(frozen=True)
class Origin:
    """The upstream's manifest URL, split once."""

    url: str
    dash: bool = False

    @property
    def scheme(self) -> str:
        """``http`` or ``https``."""
        return urlsplit(self.url).scheme.lower()

    @property
    def netloc(self) -> str:
        """``host[:port]`` of the manifest URL."""
        return urlsplit(self.url).netloc.lower()


def _encode_playlist(path: str) -> str:
    if path.endswith(".m3u8") and "~" not in path and not path.startswith(_B64) and path:
        return path[: -len(".m3u8")].replace("/", "~")
    return _B64 + base64.urlsafe_b64encode(path.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_playlist(token: str) -> str | None:
    if token.startswith(_B64):
        raw = token[len(_B64):]
        try:
            padded = raw + "=" * (-len(raw) % 4)
            path = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        return path or None
    return token.replace("~", "/") + ".m3u8"


def _host_rel(origin: Origin, absolute: str) -> str | None:
    """The local relative path (no query) of an absolute http(s) URL, or None when it is
    not http(s)."""
    parts = urlsplit(absolute)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None
    path = posixpath.normpath(parts.path or "/") if parts.path not in ("", "/") else "/"
    if parts.path.endswith("/") and not path.endswith("/"):
        path += "/"
    path = path.lstrip("/")
    if scheme == origin.scheme and parts.netloc.lower() == origin.netloc:
        return path
    return f"{OTHER_HOST}/{scheme}/{parts.netloc.lower()}/{path}"


def local_url(origin: Origin, name: str, absolute: str, *, playlist: bool = False) -> str | None:
    """The absolute-path reference (``/go-live/{name}/...[?query]``) a client should use
    for the upstream URL *absolute*; None for URLs that are not http(s) (``data:``,
    ``skd://``), which stay as they are.  *playlist* marks an HLS media playlist."""
    rel = _host_rel(origin, absolute)
    if rel is None:
        return None
    query = urlsplit(absolute).query
    if absolute.split("#", 1)[0].split("?", 1)[0] == origin.url.split("#", 1)[0].split("?", 1)[0]:
        local = MASTER_DASH if origin.dash else MASTER_HLS
    elif playlist:
        local = f"playlist_{_encode_playlist(rel)}.m3u8"
    else:
        local = rel
    out = f"/go-live/{name}/{local}"
    return f"{out}?{query}" if query else out


def upstream_url(origin: Origin, rest: str, query: str = "") -> str | None:
    """The upstream URL for the local path *rest* below ``/go-live/{name}/`` (None when it
    names nothing: a malformed token or other-host path)."""
    if rest in (MASTER_HLS, MASTER_DASH):
        if (rest == MASTER_DASH) != origin.dash:
            return None
        base = origin.url.split("#", 1)[0]
        if not query:
            return base
        parts = urlsplit(base)
        merged = f"{parts.query}&{query}" if parts.query else query
        return urlunsplit((parts.scheme, parts.netloc, parts.path, merged, ""))
    if "/" not in rest and rest.startswith("playlist_") and rest.endswith(".m3u8"):
        path = _decode_playlist(rest[len("playlist_"):-len(".m3u8")])
        if path is None:
            return None
        rest = path
    scheme, netloc = origin.scheme, origin.netloc
    if rest.startswith(OTHER_HOST + "/"):
        bits = rest.split("/", 3)
        if len(bits) < 4 or bits[1] not in ("http", "https") or not bits[2]:
            return None
        scheme, netloc, rest = bits[1], bits[2], bits[3]
    return urlunsplit((scheme, netloc, "/" + rest, query, ""))


def absolute(base: str, ref: str) -> str:
    """*ref* resolved against the upstream URL *base*."""
    return urljoin(base, ref.strip())
