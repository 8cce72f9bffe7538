"""The main listener's root resource: /api, /go-live, /dashboard, /metrics, /debug, /."""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.util import Redirect

from streamlab.errors import NotFound
from streamlab.web.errors import write_error


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        return write_error(request, NotFound("not found", detail=request.path.decode("utf-8", "replace")))


class MainRoot(Resource):
    """Children are mounted by streamlab.tap; anything unknown is a JSON 404."""

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"", Redirect(b"/dashboard/"))

    def mount(self, name: str, resource: IResource) -> None:
        """Serve *resource* at ``/<name>``."""
        self.putChild(name.encode(), resource)

    def getChild(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802
        return _NotFound()
