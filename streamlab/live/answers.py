"""HTTP answer pieces every part of the origin shares: cache and type headers, CORS, the
query reader, JSON bodies and the 405 error."""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.web.iweb import IRequest
from twisted.web.server import Request

from streamlab.errors import StreamlabError

MANIFEST_CACHE = b"no-cache, no-store, must-revalidate"
MEDIA_CACHE = b"public, max-age=31536000, immutable"
HLS_TYPE = b"application/vnd.apple.mpegurl"
DASH_TYPE = b"application/dash+xml"
CORS = {
    b"access-control-allow-origin": b"*",
    b"access-control-expose-headers": b"Content-Length, Content-Range, Date, Accept-Ranges, Age",
}
PREFLIGHT = {
    b"access-control-allow-methods": b"GET, HEAD, DELETE, OPTIONS",
    b"access-control-allow-headers": b"Range, Content-Type, Authorization, Player-ID, X-Playback-Session-Id",
    b"access-control-max-age": b"86400",
}


class MethodNotAllowed(StreamlabError):
    """HTTP method not supported on this path (405)."""

    status = 405
    error = "method not allowed"


def query_arg(request: IRequest, name: str) -> str | None:
    """The first value of query parameter *name* (decoded), or None."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    v = values[0]
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def json_answer(request: IRequest, body: Any, status: int = 200) -> bytes:
    """*body* as an uncacheable JSON answer."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", MANIFEST_CACHE)
    return json.dumps(body, separators=(",", ":")).encode()


def as_held(request: IRequest) -> Request:
    """*request* typed as the ``twisted.web`` Request it is on every Site the origin is
    mounted on: ``IRequest`` declares neither ``notifyFinish`` nor the producer methods
    that held and paced answers use (a cast, nothing is checked at run time)."""
    return cast(Request, request)
