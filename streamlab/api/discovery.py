"""``/api/rendezvous`` and ``/api/announce-now`` (content.md section 5)."""

from __future__ import annotations

from klein import Klein
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import read_no_fields, respond
from streamlab.discovery.service import DiscoveryService


class DiscoveryApi:
    """Routes over one DiscoveryService."""

    app = Klein()

    def __init__(self, discovery: DiscoveryService) -> None:
        self.discovery = discovery

    @app.route("/rendezvous", methods=["GET"])
    def rendezvous(self, request: IRequest) -> bytes:
        """``{"url", "label"}`` (plus this server's id and announce state)."""
        return respond(request, self.discovery.info())

    @app.route("/announce-now", methods=["POST"])
    def announce_now(self, request: IRequest) -> bytes:
        """Trigger one announce (coalesced with a pending one); answers at once."""
        read_no_fields(request)
        self.discovery.announce_now()
        return respond(request, {"ok": True, "enabled": self.discovery.enabled})

    errors.install(app)
