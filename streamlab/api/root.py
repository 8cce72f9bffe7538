"""``/api``: dispatch by the first path segment to the resource-group apps.

Every answer under /api carries CORS and no-cache headers; CORS pre-flights are
answered here; an unknown group is a JSON 404.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from streamlab.errors import Invalid, NotFound
from streamlab.web.errors import write_error

CORS_HEADERS = {
    b"access-control-allow-origin": b"*",
    b"access-control-allow-methods": b"GET, POST, PATCH, PUT, DELETE, OPTIONS",
    b"access-control-allow-headers": b"Content-Type, Authorization, Content-Range, Player-ID, "
    b"X-Playback-Session-Id",
    b"access-control-expose-headers": b"Content-Length, Content-Range, Retry-After",
}


def apply_api_headers(request: IRequest) -> None:
    """CORS + no-cache, as every API answer carries."""
    for name, value in CORS_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")


def _utf8(segments: list[bytes]) -> bool:
    """Do all (percent-decoded) path *segments* decode as UTF-8?"""
    try:
        for seg in segments:
            seg.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, status: int, exc: Exception | None = None) -> None:
        super().__init__()
        self._status = status
        self._exc = exc

    def render(self, request: IRequest) -> bytes:
        if self._exc is not None:
            return write_error(request, self._exc)
        request.setResponseCode(self._status)
        return b""


class ApiRoot(Resource):
    """The ``/api`` resource; ``mount("sessions", app.resource())`` adds a group."""

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[bytes, IResource] = {}

    def mount(self, first_segment: str, resource: IResource) -> None:
        """Route ``/api/<first_segment>/...`` to *resource* (Klein routes see the full
        path below /api, e.g. ``/sessions/stream``)."""
        self._groups[first_segment.encode()] = resource

    def getChild(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802
        apply_api_headers(request)
        if request.method == b"OPTIONS":
            return _Leaf(204)
        if not _utf8([path, *request.postpath]):
            # Klein would log a traceback per request for this (UnicodeDecodeError)
            return _Leaf(400, Invalid("invalid path",
                                      detail="path segments must be UTF-8 after percent-decoding"))
        target = self._groups.get(path)
        if target is None:
            return _Leaf(404, NotFound("not found", detail=request.path.decode("utf-8", "replace")))
        # Give the segment back so the group's routes match the path below /api.
        request.postpath.insert(0, request.prepath.pop())
        return target

    def render(self, request: IRequest) -> bytes:
        apply_api_headers(request)
        return write_error(request, NotFound("not found", detail="/api"))
