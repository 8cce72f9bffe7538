"""``/api/jobs``: list, inspect, cancel and delete encoding jobs; the live WebSocket stream."""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import query, read_no_fields, respond
from streamlab.errors import NotFound
from streamlab.interfaces import IEventBus, IJobQueue
from streamlab.push.jobs_sse import JobsFeed
from streamlab.push.jobs_ws import job_stream_resource
from streamlab.push.sse import SSEResource


class JobsApi:
    """Klein app over the JobService (mounted as ``jobs``)."""

    app = Klein()

    def __init__(self, jobs: IJobQueue, bus: IEventBus, feed: JobsFeed | None = None) -> None:
        self.jobs = jobs
        self.bus = bus
        self.feed = feed  # None: no /jobs/stream

    @app.route("/jobs", methods=["GET"])
    @defer.inlineCallbacks
    def list_jobs(self, request: IRequest) -> Any:
        """All jobs, newest first; ``?status=`` filters."""
        yield self.jobs.when_ready()
        return respond(request, self.jobs.list(query(request, "status")))

    @app.route("/jobs/stream", methods=["GET"])
    @defer.inlineCallbacks
    def jobs_stream(self, request: IRequest) -> Any:
        """SSE: one ``jobs`` event with the full list now, then one per change (throttled)."""
        if self.feed is None:
            raise NotFound("no job stream")
        yield self.jobs.when_ready()
        return SSEResource(self.feed.attach)

    @app.route("/jobs/<string:job_id>", methods=["GET"])
    @defer.inlineCallbacks
    def get_job(self, request: IRequest, job_id: str) -> Any:
        """One job with its config (404 unknown)."""
        yield self.jobs.when_ready()
        return respond(request, self.jobs.get(job_id))

    @app.route("/jobs/<string:job_id>/cancel", methods=["POST"])
    @defer.inlineCallbacks
    def cancel_job(self, request: IRequest, job_id: str) -> Any:
        """queued/uploading/encoding -> cancelled (409 otherwise)."""
        read_no_fields(request)
        yield self.jobs.when_ready()
        job = yield self.jobs.cancel(job_id)
        return respond(request, job)

    @app.route("/jobs/<string:job_id>", methods=["DELETE"])
    @defer.inlineCallbacks
    def delete_job(self, request: IRequest, job_id: str) -> Any:
        """Remove record + log (+ the source when unused); 409 while running."""
        yield self.jobs.when_ready()
        result = yield self.jobs.delete(job_id)
        return respond(request, result)

    @app.route("/jobs/<string:job_id>/stream", methods=["GET"])
    @defer.inlineCallbacks
    def stream(self, request: IRequest, job_id: str) -> Any:
        """WebSocket: the log so far, then live log/progress/end frames (4404 unknown job)."""
        yield self.jobs.when_ready()
        return job_stream_resource(self.jobs, self.bus, job_id)

    errors.install(app)
