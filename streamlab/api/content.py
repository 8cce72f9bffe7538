"""``/api/content``: the encoded items the origin serves (spec/content.md section 3).

* ``GET /api/content`` lists usable items with their variants and absolute stream URLs
  (host from ``advertised_host`` or the request's ``Host``); ``?all=1`` appends the
  unusable ones as ``{"name", "usable": false, "reason"}``.
* ``POST /api/content/{name}/generate-byteranges`` re-reads the item's MP4 boxes in a
  thread, rewrites its ``content.json`` and refreshes the library →
  ``{"content", "segments", "parts"}`` (totals over the fMP4 tracks).
"""

from __future__ import annotations

import os
from typing import Any

from klein import Klein
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorThreads
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import query, read_no_fields, respond
from streamlab.errors import NotFound, Unprocessable
from streamlab.interfaces import IContentLibrary
from streamlab.media.index import ContentIndex, UnusableItem
from streamlab.media.indexer import rebuild_index
from streamlab.media.library import valid_name
from streamlab.upstream.service import UpstreamService

STREAM_FILES = {
    "hls_ll": "master.m3u8", "hls_2s": "master_2s.m3u8", "hls_6s": "master_6s.m3u8",
    "dash_ll": "manifest.mpd", "dash_2s": "manifest_2s.mpd", "dash_6s": "manifest_6s.mpd",
}


def base_url(request: IRequest, advertised_host: str = "") -> str:
    """``http(s)://host[:port]`` for URLs handed to players.

    *advertised_host* wins; without a port of its own it keeps the port the client used."""
    scheme = "https" if request.isSecure() else "http"
    host_header = (request.getHeader(b"host") or b"").decode("latin-1").strip()
    if not host_header:
        addr = request.getHost()
        host_header = f"{addr.host}:{addr.port}"
    if advertised_host:
        host = advertised_host
        if not _has_port(host):
            port = _port_of(host_header)
            if port:
                host = f"{host}:{port}"
        return f"{scheme}://{host}"
    return f"{scheme}://{host_header}"


def _has_port(host: str) -> bool:
    if host.startswith("["):
        return "]:" in host
    return host.count(":") == 1


def _port_of(host: str) -> str:
    if host.startswith("["):
        _, _, rest = host.partition("]")
        return rest[1:] if rest.startswith(":") else ""
    if host.count(":") == 1:
        return host.rsplit(":", 1)[1]
    return ""


def describe(index: ContentIndex, base: str) -> dict[str, Any]:
    """The list entry of one usable item."""
    videos = index.video
    top = max(videos, key=lambda t: t.height)
    prefix = f"{base}/go-live/{index.name}"
    urls = {key: f"{prefix}/{name}" for key, name in STREAM_FILES.items()}
    if index.ts_tracks:
        urls["hls_6s_ts"] = f"{prefix}/master_6s.m3u8?format=ts"
    return {
        "name": index.name, "usable": True, "source": index.source, "codec": index.codec,
        "segment_duration": index.segment_duration, "part_duration": index.part_duration,
        "gop_duration": index.gop_duration, "segment_count": index.segment_count,
        "duration": index.duration, "created_at": index.created_at,
        "max_resolution": f"{top.height}p", "max_height": top.height,
        "has_hls": True, "has_dash": True, "has_ts": bool(index.ts_tracks),
        "variants": [{"id": t.id, "bandwidth": t.bandwidth, "average_bandwidth": t.average_bandwidth,
                      "resolution": t.resolution, "codecs": t.codecs, "frame_rate": t.frame_rate}
                     for t in videos],
        "audio": [{"id": t.id, "bandwidth": t.bandwidth, "codecs": t.codecs, "channels": t.channels,
                   "sample_rate": t.sample_rate, "language": t.language} for t in index.audio],
        "urls": urls,
    }


class ContentApi:
    """The content list and the byte-range rebuild.  *library* is the ContentLibrary."""

    app = Klein()

    def __init__(self, library: IContentLibrary, reactor: IReactorThreads, advertised_host: str = "") -> None:
        self.library = library
        self.reactor = reactor
        self.advertised_host = advertised_host
        self.upstreams: UpstreamService | None = None  # its items are listed too, "upstream": true

    @app.route("/content", methods=["GET"])
    def list_content(self, request: IRequest) -> bytes:
        """Usable items (``?all=1``: and the unusable ones with their reason)."""
        base = base_url(request, self.advertised_host)
        body: list[dict[str, Any]] = [describe(i, base) for i in self.library.items()]
        if self.upstreams is not None:
            body += [u.describe(base) for u in self.upstreams.items()]
        if (query(request, "all") or "").lower() in ("1", "true", "yes"):
            body += [{"name": name, "usable": False, "reason": reason}
                     for name, reason in sorted(self.library.unusable().items())]
        return respond(request, body)

    @app.route("/content/<name>", methods=["GET"])
    def one_content(self, request: IRequest, name: str) -> bytes:
        """One usable item (404 when unknown or unusable, with the reason)."""
        index = self.library.get(name) if valid_name(name) else None
        if index is None:
            reason = self.library.unusable().get(name) if valid_name(name) else None
            raise NotFound("unknown content", detail=name, **({"reason": reason} if reason else {}))
        return respond(request, describe(index, base_url(request, self.advertised_host)))

    @app.route("/content/<name>/generate-byteranges", methods=["POST"])
    @inlineCallbacks
    def generate_byteranges(self, request: IRequest, name: str) -> Any:
        """Rebuild the item's part/byte-range index from its segment files."""
        read_no_fields(request)
        if not valid_name(name):
            raise NotFound("unknown content", detail=name)
        item_dir = self.library.item_dir(name)
        exists = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                 os.path.isdir, item_dir)
        if not exists:
            raise NotFound("unknown content", detail=name)
        try:
            index = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                    rebuild_index, item_dir)
        except UnusableItem as exc:
            raise Unprocessable("cannot index content", detail=str(exc)) from None
        yield self.library.refresh()
        fmp4 = [t for t in index.tracks if t.container == "fmp4"]
        return respond(request, {
            "content": name,
            "segments": sum(len(t.segments) for t in fmp4),
            "parts": sum(len(s.parts) for t in fmp4 for s in t.segments),
            "segment_count": index.segment_count, "tracks": len(index.tracks),
        })

    errors.install(app)
