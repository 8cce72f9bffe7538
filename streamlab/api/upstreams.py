"""``/api/upstreams``: register, list, show and delete upstream HLS/DASH origins
(docs/upstream.md).  Thin: parse JSON, call the UpstreamService, answer JSON."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.content import base_url
from streamlab.api.jsonio import read_json, respond
from streamlab.upstream.service import UpstreamService


class UpstreamsApi:
    """Routes over one UpstreamService."""

    app = Klein()

    def __init__(self, upstreams: UpstreamService, advertised_host: str = "") -> None:
        self.upstreams = upstreams
        self.advertised_host = advertised_host

    def _base(self, request: IRequest) -> str:
        return base_url(request, self.advertised_host)

    @app.route("/upstreams", methods=["GET"])
    def list_upstreams(self, request: IRequest) -> bytes:
        """All upstreams by name."""
        base = self._base(request)
        return respond(request, [u.describe(base) for u in self.upstreams.items()])

    @app.route("/upstreams", methods=["POST"])
    async def create(self, request: IRequest) -> bytes:
        """``{"name", "url", "headers"?, "verify_tls"?}`` -> 201 and the upstream, after the
        manifest was fetched and recognised (400 bad input, 409 duplicate, 422 upstream)."""
        body: Any = read_json(request)
        up = await self.upstreams.create(body)
        return respond(request, up.describe(self._base(request)), 201)

    @app.route("/upstreams/<name>", methods=["GET"])
    def show(self, request: IRequest, name: str) -> bytes:
        """One upstream (404 when unknown)."""
        return respond(request, self.upstreams.show(name).describe(self._base(request)))

    @app.route("/upstreams/<name>", methods=["DELETE"])
    async def delete(self, request: IRequest, name: str) -> bytes:
        """Forget an upstream."""
        up = await self.upstreams.delete(name)
        return respond(request, {"deleted": up.name})

    errors.install(app)
