"""``/api/setup``: first-run status, initialize, seed the demo item."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import read_no_fields, respond
from streamlab.jobs.setup import SetupService


class SetupApi:
    """Klein app over the SetupService (mounted as ``setup``)."""

    app = Klein()

    def __init__(self, setup: SetupService) -> None:
        self.setup = setup

    @app.route("/setup", methods=["GET"])
    @defer.inlineCallbacks
    def status(self, request: IRequest) -> Any:
        """ready|incomplete, paths, ffmpeg, counts, issues, recommendations."""
        body = yield self.setup.status()
        return respond(request, body)

    @app.route("/setup/initialize", methods=["POST"])
    @defer.inlineCallbacks
    def initialize(self, request: IRequest) -> Any:
        """Create the layout + schema and write the marker (idempotent); the new status."""
        read_no_fields(request)
        body = yield self.setup.initialize()
        return respond(request, body)

    @app.route("/setup/seed", methods=["POST"])
    @defer.inlineCallbacks
    def seed(self, request: IRequest) -> Any:
        """Synthesise + encode the demo clip: 202 ``queued``; 200 ``exists`` when present."""
        read_no_fields(request)
        body = yield self.setup.seed()
        return respond(request, body, status=202 if body.get("status") == "queued" else 200)

    errors.install(app)
