"""``/api/upload...``: single-shot and chunked uploads (content.md section 2).

Upload paths are served with twisted's form parsing switched off
(:mod:`streamlab.uploads.request`), so bodies are parsed here: JSON and url-encoded
forms are small and read directly; multipart bodies are streamed from the buffered
body file in a thread.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from klein import Klein
from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads
from twisted.web.iweb import IRequest

from streamlab.api import errors, schemas
from streamlab.api.jsonio import MAX_JSON_BYTES, read_body, read_json, respond
from streamlab.errors import Invalid
from streamlab.uploads import core, forms
from streamlab.uploads.service import UploadService


def _ctype(request: IRequest) -> str:
    return (request.getHeader(b"content-type") or b"").decode("latin-1")


def _query(request: IRequest) -> dict[str, Any]:
    uri = request.uri or b""
    if b"?" not in uri:
        return {}
    parsed = parse_qs(uri.split(b"?", 1)[1].decode("utf-8", "replace"), keep_blank_values=True)
    return forms.flatten(parsed)


async def read_fields(request: IRequest, reactor: IReactorThreads,
                      schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Small form (url-encoded or multipart without a file) or JSON object, over the query.
    A JSON body must have the property types *schema* declares (forms carry strings)."""
    out = _query(request)
    ctype = _ctype(request).split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        content = request.content
        content.seek(0, 2)
        if content.tell() > MAX_JSON_BYTES:
            raise Invalid("invalid form", detail="form too large (file parts go to /api/upload/chunk)")
        result = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), forms.parse_multipart,
                                                 content, _ctype(request))
        out.update(forms.flatten(result.fields))
    elif ctype == "application/x-www-form-urlencoded":
        raw = read_body(request).decode("utf-8", "replace")
        out.update(forms.flatten(parse_qs(raw, keep_blank_values=True)))
    else:
        body = read_json(request, empty={})
        if not isinstance(body, dict):
            raise Invalid("invalid json", detail="expected a JSON object")
        if schema is not None:
            schemas.check_types(body, schema)
        out.update(body)
    return out


class UploadsApi:
    """Routes over one UploadService."""

    app = Klein()

    def __init__(self, uploads: UploadService, reactor: IReactorThreads) -> None:
        self.uploads = uploads
        self.reactor = reactor

    @app.route("/upload", methods=["POST"])
    async def upload(self, request: IRequest) -> bytes:
        """Multipart ``file`` + encode options -> ``{"job_id","job_ids","source_id","status"}``."""
        if _ctype(request).split(";")[0].strip().lower() != "multipart/form-data":
            raise Invalid("invalid upload", detail="multipart/form-data with a 'file' field expected")
        result = await self.uploads.upload_single(request.content, _ctype(request))
        return respond(request, result)

    @app.route("/upload/init", methods=["POST"])
    async def init(self, request: IRequest) -> bytes:
        """Start a chunked upload (jobs are created in status ``uploading``)."""
        raw = await read_fields(request, self.reactor, schemas.UPLOAD_INIT)
        return respond(request, await self.uploads.init(raw))

    @app.route("/upload/active", methods=["GET"])
    async def active(self, request: IRequest) -> bytes:
        """Uploads in flight and the encode queue length."""
        await self.uploads.ready()
        return respond(request, self.uploads.active())

    @app.route("/upload/chunk/<job_id>", methods=["POST", "PUT"])
    async def chunk(self, request: IRequest, job_id: str) -> bytes:
        """One chunk: raw body or multipart ``file``; offset from query, form or Content-Range."""
        query = _query(request)
        offset = core.parse_offset(query.get("offset") if isinstance(query.get("offset"), str) else None)
        content = request.content
        content.seek(0, 2)
        length = content.tell()
        content_range = request.getHeader(b"content-range")
        result = await self.uploads.chunk(
            job_id, offset, content, length, content_type=_ctype(request),
            content_range=content_range.decode("latin-1") if content_range else None)
        return respond(request, result)

    @app.route("/upload/complete/<job_id>", methods=["POST"])
    async def complete(self, request: IRequest, job_id: str) -> bytes:
        """Check size + SHA-256, probe, publish the source and queue the jobs."""
        raw = await read_fields(request, self.reactor, schemas.UPLOAD_COMPLETE)
        return respond(request, await self.uploads.complete(job_id, raw.get("sha256")))

    @app.route("/upload/<job_id>", methods=["GET"])
    async def progress(self, request: IRequest, job_id: str) -> bytes:
        """``{"received_size","expected_size","status"}``."""
        await self.uploads.ready()
        return respond(request, self.uploads.progress(job_id))

    @app.route("/upload/<job_id>", methods=["DELETE"])
    async def cancel(self, request: IRequest, job_id: str) -> bytes:
        """Abort a chunked upload: bytes deleted, jobs failed."""
        await self.uploads.ready()
        await self.uploads.cancel(job_id)
        return respond(request, {"cancelled": job_id})

    errors.install(app)
