"""``/api/sources...``: the source library and re-encodes (content.md section 1).

Thin: parse input, call :class:`~streamlab.sources.service.SourceService` and the job
service, answer JSON; errors go through the one error mapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from streamlab.api import errors, schemas
from streamlab.api.jsonio import is_form, read_json, read_no_fields, read_object, respond
from streamlab.errors import Invalid, StreamlabError, Unavailable, Unprocessable
from streamlab.interfaces import IJobQueue, ISourceStore
from streamlab.jobs.options import EncodeOptions, parse_encode_options
from streamlab.sources.service import jobs_ready

MAX_BATCH = 500


def parse_options(jobs: IJobQueue, raw: dict[str, Any], source: dict[str, Any]) -> EncodeOptions:
    """Encode options for *source* (400 when invalid)."""
    return parse_encode_options(raw, source_name=source["name"], source_height=source.get("height"),
                                encoders=set(jobs.encoders))


class SourcesApi:
    """Routes over one SourceService; ``jobs`` is a getter for the JobService."""

    app = Klein()

    def __init__(self, sources: ISourceStore, jobs: Callable[[], IJobQueue | None]) -> None:
        self.sources = sources
        self._jobs = jobs

    def jobs(self) -> IJobQueue:
        """The JobService (503 while there is none)."""
        jobs = self._jobs()
        if jobs is None:
            raise Unavailable("jobs unavailable", detail="the job queue is not running")
        return jobs

    @app.route("/sources", methods=["GET"])
    async def list_sources(self, request: IRequest) -> bytes:
        """All sources, newest first."""
        return respond(request, await self.sources.list())

    @app.route("/sources/scan-originals", methods=["POST"])
    async def scan(self, request: IRequest) -> bytes:
        """Index new files in originals/, forget vanished ones."""
        read_no_fields(request)
        return respond(request, await self.sources.scan_originals())

    @app.route("/sources/batch-reencode-json", methods=["POST"])
    async def batch(self, request: IRequest) -> bytes:
        """``{"source_ids": [...], <options>}`` -> ``{"jobs": [...], "errors": [...]}``."""
        body = read_json(request)
        if not isinstance(body, dict):
            raise Invalid("invalid json", detail="expected a JSON object")
        schemas.check_types(body, schemas.BATCH_REENCODE)
        ids = body.get("source_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise Invalid("invalid batch", detail="source_ids must be a non-empty list of ids",
                          fields={"source_ids": "a non-empty list of source ids"})
        if len(ids) > MAX_BATCH:
            raise Invalid("invalid batch", detail=f"at most {MAX_BATCH} sources per batch",
                          fields={"source_ids": f"at most {MAX_BATCH}"})
        raw = {k: v for k, v in body.items() if k != "source_ids"}
        jobs = self.jobs()
        await jobs_ready(jobs)
        # the options themselves are checked once, before anything is queued
        parse_options(jobs, raw, {"name": "batch", "height": None})
        created: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for source_id in dict.fromkeys(ids):
            try:
                source = await self.sources.get(source_id)
                if source["status"] != "ready":
                    raise Unprocessable("source is invalid", detail=source.get("error"))
                options = parse_options(jobs, raw, source)
                for job in await jobs.create_jobs(source_id, source["name"], options):
                    created.append({"job_id": job["job_id"], "source_id": source_id})
            except StreamlabError as exc:
                failures.append({"source_id": source_id, "error": exc.error, "detail": exc.detail})
        return respond(request, {"jobs": created, "errors": failures})

    @app.route("/sources/<source_id>", methods=["GET"])
    async def get_source(self, request: IRequest, source_id: str) -> bytes:
        """One source."""
        return respond(request, await self.sources.get(source_id))

    @app.route("/sources/<source_id>", methods=["DELETE"])
    async def delete_source(self, request: IRequest, source_id: str) -> bytes:
        """Delete file + record (409 while a job still needs it)."""
        source = await self.sources.delete(source_id)
        return respond(request, {"deleted": source["source_id"]})

    @app.route("/sources/<source_id>/reencode", methods=["POST"])
    async def reencode(self, request: IRequest, source_id: str) -> bytes:
        """Form or JSON encode options -> ``{"job_ids", "source_id", "status": "queued"}``."""
        raw = read_object(request)
        if not is_form(request):
            schemas.check_types(raw, schemas.ENCODE_OPTIONS)
        source = await self.sources.get(source_id)
        if source["status"] != "ready":
            raise Unprocessable("source is invalid", detail=source.get("error"))
        jobs = self.jobs()
        await jobs_ready(jobs)
        options = parse_options(jobs, raw, source)
        created = await jobs.create_jobs(source_id, source["name"], options)
        job_ids = [j["job_id"] for j in created]
        return respond(request, {"job_ids": job_ids, "job_id": job_ids[0] if job_ids else None,
                                 "source_id": source_id, "status": "queued"})

    errors.install(app)
