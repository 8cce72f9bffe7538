"""UploadService: single-shot and chunked uploads.

Bytes land in ``<state_dir>/uploads/<upload_id>.part``.  Every chunk is written and
fsynced before it is acknowledged, and the acknowledged size is persisted in sqlite, so
a daemon restart loses nothing a client was told it had sent (the part file is cut back
to the acknowledged size and its SHA-256 recomputed in a thread).  The running SHA-256
is updated in the thread that writes the chunk, in order (one chunk at a time per
upload).  Only a complete, hash-checked, probed file is moved into originals/, so a
half-uploaded file is never a source.  Uploads without a chunk for ``upload_ttl`` are
deleted by a reactor timer and their jobs failed (``upload abandoned``).

This module is the upload protocol (single shot, init/chunk/complete, cancel, sweep);
the bytes on disk are :mod:`streamlab.uploads.partfile`, the ``uploads`` rows
:mod:`streamlab.uploads.table`, what a restart resumes :mod:`streamlab.uploads.recovery`,
the pure checks :mod:`streamlab.uploads.core`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet import defer, task, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from streamlab.config import Config
from streamlab.errors import (
    Conflict,
    Invalid,
    NotFound,
    StreamlabError,
    TooLarge,
    Unavailable,
    Unprocessable,
)
from streamlab.formats import iso_s
from streamlab.interfaces import IDaemonReactor, IJobQueue, ISourceStore
from streamlab.sources import files
from streamlab.sources.service import jobs_ready, valid_id
from streamlab.storage.db import Database
from streamlab.uploads import core, forms
from streamlab.uploads.partfile import (
    apply_chunk,
    create_empty,
    extract_chunk,
    free_bytes,
    write_single,
)
from streamlab.uploads.recovery import recover_uploads
from streamlab.uploads.table import Upload, UploadTable

log = Logger()

COMPLETED_KEPT = 256
FREE_SPACE_MARGIN = 64 * 1024 * 1024


class UploadService(Service):
    """Uploads into the source library; ``jobs`` is a getter for the JobService."""

    name = "uploads"

    def __init__(self, config: Config, db: Database, sources: ISourceStore, reactor: IDaemonReactor,
                 jobs: Callable[[], IJobQueue | None] | None = None, sweep_interval: float | None = None,
                 thread_runner: Callable[..., Deferred[Any]] | None = None) -> None:
        self.config = config
        self.db = db
        self.sources = sources
        self.reactor = reactor
        self._jobs = jobs or (lambda: None)
        self.uploads_dir = os.path.join(os.path.abspath(config.paths.state_dir), "uploads")
        self.table = UploadTable(db, self.uploads_dir)
        self.max_bytes = int(config.jobs.max_upload_bytes)
        self.ttl = float(config.jobs.upload_ttl)
        self.sweep_interval = sweep_interval or max(0.25, min(60.0, self.ttl / 4))
        self._uploads: dict[str, Upload] = {}
        self._load_outcome: Any = False
        self._load_waiters: list[Deferred[None]] = []
        self._sweeper: task.LoopingCall | None = None
        self._completed: dict[str, dict[str, Any]] = {}
        self._thread = thread_runner or (
            lambda fn, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *a))

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        """Load persisted uploads (rehashing part files in a thread), start the sweeper."""
        super().startService()
        os.makedirs(self.uploads_dir, exist_ok=True)
        d = defer.ensureDeferred(self._load())

        def loaded(_: Any) -> None:
            self._settle(None)
            self._sweeper = task.LoopingCall(self._sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.sweep_interval, now=True).addErrback(
                lambda f: log.failure("upload sweeper stopped", f))

        def failed(failure: Any) -> None:
            log.failure("could not load uploads", failure)
            self._settle(failure)

        d.addCallbacks(loaded, failed)

    def stopService(self) -> None:
        """Stop the sweeper."""
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def _settle(self, outcome: Any) -> None:
        self._load_outcome = outcome
        waiters, self._load_waiters = self._load_waiters, []
        for d in waiters:
            if outcome is None:
                d.callback(None)
            else:
                d.errback(Unavailable("uploads unavailable", detail="loading uploads failed"))

    def ready(self) -> Deferred[None]:
        """Fires when persisted uploads are loaded."""
        if self._load_outcome is None:
            return defer.succeed(None)
        if self._load_outcome is not False:
            return defer.fail(Unavailable("uploads unavailable", detail="loading uploads failed"))
        d: Deferred[None] = Deferred()
        self._load_waiters.append(d)
        return d

    async def _load(self) -> None:
        jobs = self._jobs()
        if jobs is not None:
            await jobs_ready(jobs)  # job states must be known before uploads touch them
        for upload in await recover_uploads(self.table, self.sources, jobs, self._in_thread,
                                            self.reactor.seconds()):
            self._uploads[upload.upload_id] = upload

    # ------------------------------------------------------------------ helpers

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return self._thread(fn, *args)

    def _jobs_gone(self, upload: Upload) -> bool:
        """True when every job of *upload* was cancelled/failed/deleted meanwhile."""
        jobs = self._jobs()
        if jobs is None:
            return False
        for job_id in upload.job_ids:
            try:
                status = jobs.get(job_id).get("status")
            except StreamlabError:
                continue
            if status not in ("cancelled", "failed", "complete"):
                return False
        return True

    async def _check_alive(self, upload: Upload) -> None:
        """409 (and the bytes deleted) when the upload's jobs were cancelled meanwhile."""
        if self._jobs_gone(upload):
            await self._discard(upload, "upload cancelled")
            raise Conflict("upload cancelled", detail="its jobs were cancelled; the upload was discarded")

    def jobs(self) -> Any:
        """The JobService (503 while there is none)."""
        jobs = self._jobs()
        if jobs is None:
            raise Unavailable("jobs unavailable", detail="the job queue is not running")
        return jobs

    def _parse_options(self, raw: dict[str, Any], source_name: str, source_height: int | None) -> Any:
        from streamlab.jobs.options import parse_encode_options

        return parse_encode_options(raw, source_name=source_name, source_height=source_height,
                                    encoders=set(self.jobs().encoders))

    def _get(self, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id) if valid_id(upload_id) else None
        if upload is None:
            raise NotFound("upload not found", detail=upload_id)
        return upload

    def _persist(self, upload: Upload) -> Deferred[None]:
        return self.table.update(upload)

    async def _discard(self, upload: Upload, error: str) -> None:
        """Fail an upload's jobs, then delete its bytes and row."""
        upload.status = "discarding"  # refuses chunks from now on
        try:
            jobs = self._jobs()
            if jobs is not None:
                await jobs.fail_jobs(upload.job_ids, error)
        finally:
            self._uploads.pop(upload.upload_id, None)
        await self._in_thread(files.remove_file, upload.part_path)
        await self.table.delete(upload.upload_id)
        log.info("upload {id} discarded: {error}", id=upload.upload_id, error=error)

    # ------------------------------------------------------------------ single shot

    async def upload_single(self, content: IO[bytes], content_type: str) -> dict[str, Any]:
        """``POST /api/upload``: multipart ``file`` + encode options -> source + queued jobs.

        The options are validated (400) before any byte is stored.
        """
        await self.ready()
        first = await self._in_thread(forms.parse_multipart, content, content_type)
        if not first.has_file:
            raise Invalid("invalid upload", detail="multipart field 'file' is missing",
                          fields={"file": "required"})
        if first.file_size > self.max_bytes:
            raise TooLarge("upload too large",
                           detail=f"{first.file_size} bytes exceeds max_upload_bytes {self.max_bytes}",
                           limit=self.max_bytes)
        if first.file_size == 0:
            raise Unprocessable("not a media file", detail="the file is empty")
        raw = forms.flatten(first.fields)
        filename = files.safe_filename(first.filename)
        name = files.source_name(filename)
        self._parse_options(raw, name, None)  # 400 before storing anything
        part = os.path.join(self.uploads_dir, f"single-{uuid.uuid4()}.part")
        try:
            await self._in_thread(write_single, content, content_type, part, self.max_bytes)
            probed = await self.sources.probe(part)
            options = self._parse_options(raw, name, probed.height)
            source = await self.sources.add_file(part, first.filename or filename, probed=probed)
        finally:
            await self._in_thread(files.remove_file, part)
        created = await self.jobs().create_jobs(source["source_id"], source["name"], options)
        job_ids = [j["job_id"] for j in created]
        return {"job_id": job_ids[0] if job_ids else None, "job_ids": job_ids,
                "source_id": source["source_id"], "status": "queued"}

    # ------------------------------------------------------------------ chunked

    async def init(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/upload/init``: validate, create the jobs (``uploading``) and the part file."""
        await self.ready()
        original = raw.get("filename")
        if isinstance(original, list):
            original = original[0] if original else None
        if not isinstance(original, str) or not original.strip():
            raise Invalid("invalid upload", detail="filename is required", fields={"filename": "required"})
        size = core.parse_file_size(raw.get("file_size"), self.max_bytes)
        sha = core.parse_sha256(raw.get("sha256"))
        filename = files.safe_filename(original)
        name = files.source_name(filename)
        # The source's height is unknown until it is complete: without an explicit
        # max_resolution ask for the top rung; the encoder skips rungs above the source.
        options = self._parse_options(raw, name, None if raw.get("max_resolution") else 2160)
        free = await self._in_thread(free_bytes, self.uploads_dir)
        if free is not None and size > free - FREE_SPACE_MARGIN:
            raise TooLarge("not enough disk space", detail=f"{size} bytes do not fit: {free} bytes free",
                           free_bytes=free, file_size=size)
        source_id = str(uuid.uuid4())
        created = await self.jobs().create_jobs(source_id, name, options, status="uploading")
        job_ids = [j["job_id"] for j in created]
        upload_id = job_ids[0]
        now = self.reactor.seconds()
        upload = Upload(upload_id=upload_id, job_ids=job_ids, source_id=source_id, filename=filename,
                        original_filename=original, expected_size=size, received_size=0, sha256=sha,
                        part_path=os.path.join(self.uploads_dir, f"{upload_id}.part"),
                        options={k: v for k, v in raw.items() if k not in ("file_size", "sha256")},
                        status="uploading", created_at=iso_s(now), last_activity=now,
                        hasher=hashlib.sha256())
        try:
            await self._in_thread(create_empty, upload.part_path)
            await self.table.insert(upload)
        except Exception:
            await self._in_thread(files.remove_file, upload.part_path)
            await self.jobs().fail_jobs(job_ids, "upload could not be started")
            raise
        self._uploads[upload_id] = upload
        log.info("upload {id} started: {filename} ({size} bytes)", id=upload_id, filename=filename, size=size)
        return {"job_id": upload_id, "job_ids": job_ids, "source_id": source_id, "status": "uploading",
                "chunk_size_hint": core.chunk_size_hint(size), "expected_size": size, "received_size": 0}

    async def chunk(self, upload_id: str, offset: int | None, body: IO[bytes], body_length: int,
                    content_type: str = "", content_range: str | None = None) -> dict[str, Any]:
        """``POST /api/upload/chunk/{job_id}``: store one chunk (raw body or multipart ``file``).

        Idempotent: a repeated chunk with the same bytes is acknowledged; a gap, or a
        repeat with different bytes, is 409 with ``received_size``.
        """
        await self.ready()
        upload = self._get(upload_id)
        src: IO[bytes] = body
        spool: IO[bytes] | None = None
        length = body_length
        try:
            if content_type.split(";")[0].strip().lower() == "multipart/form-data":
                result, spool = await self._in_thread(extract_chunk, body, content_type, self.max_bytes)
                if not result.has_file:
                    raise Invalid("invalid chunk", detail="multipart field 'file' is missing",
                                  fields={"file": "required"})
                src, length = spool, result.file_size
                if offset is None:
                    offset = core.parse_offset(forms.flatten(result.fields).get("offset"))
            if offset is None:
                offset = core.parse_content_range(content_range, length)
            if offset is None:
                raise Invalid("invalid chunk", detail="offset is required (query, form or Content-Range)",
                              fields={"offset": "required"})
            if length == 0:
                raise Invalid("invalid chunk", detail="empty chunk")
            await upload.lock.acquire()
            try:
                if self._uploads.get(upload_id) is not upload:
                    raise NotFound("upload not found", detail=upload_id)
                if upload.status != "uploading":
                    raise Conflict(f"upload is {upload.status}", received_size=upload.received_size,
                                   expected_size=upload.expected_size)
                await self._check_alive(upload)
                plan = core.plan_chunk(upload.received_size, upload.expected_size, offset, length)
                try:
                    hasher = await self._in_thread(apply_chunk, upload.part_path, plan, src, 0, upload.hasher)
                except OSError as exc:
                    # nothing was acknowledged: the next chunk rewrites from received_size
                    log.error("upload {id}: writing a chunk failed: {exc}", id=upload_id, exc=exc)
                    raise Unavailable("cannot store chunk", detail=exc.strerror or str(exc),
                                      received_size=upload.received_size,
                                      expected_size=upload.expected_size) from None
                if hasher is None:
                    raise core.mismatch(upload.received_size, upload.expected_size)
                upload.hasher = hasher
                upload.received_size = max(upload.received_size, plan.offset + plan.length)
                upload.last_activity = self.reactor.seconds()
                await self._persist(upload)
                result = {**upload.progress(), "offset": offset, "length": length}
            finally:
                upload.lock.release()
        finally:
            if spool is not None:
                spool.close()
        return result

    def progress(self, upload_id: str) -> dict[str, Any]:
        """``GET /api/upload/{job_id}`` (a recently completed upload answers ``complete``)."""
        done = self._completed.get(upload_id)
        if done is not None:
            return {"job_id": upload_id, "received_size": done["file_size"],
                    "expected_size": done["file_size"], "status": "complete", "source_id": done["source_id"]}
        return self._get(upload_id).progress()

    async def complete(self, upload_id: str, sha256: str | None) -> dict[str, Any]:
        """``POST /api/upload/complete/{job_id}``: check size + hash, probe, publish the source.

        Size or hash mismatch: 422 and the upload stays resumable.  Not a video: 422 and
        the upload is discarded (its jobs fail).
        """
        await self.ready()
        given = core.parse_sha256(sha256)
        if upload_id in self._completed:  # a client retrying after a lost answer
            return self._completed[upload_id]
        upload = self._get(upload_id)
        await upload.lock.acquire()
        try:
            if upload_id in self._completed:
                return self._completed[upload_id]
            if self._uploads.get(upload_id) is not upload:
                raise NotFound("upload not found", detail=upload_id)
            await self._check_alive(upload)
            expected_sha = given or upload.sha256
            actual = upload.hasher.hexdigest()
            core.check_complete(upload.expected_size, upload.received_size, expected_sha, actual)
            upload.status = "completing"
            await self._persist(upload)
            try:
                probed = await self.sources.probe(upload.part_path)
            except Unprocessable as exc:
                await self._discard(upload, f"invalid media: {exc.detail or exc.error}")
                raise Unprocessable(exc.error, detail=exc.detail, discarded=True) from None
            try:
                source = await self.sources.add_file(upload.part_path, upload.original_filename,
                                                     source_id=upload.source_id, probed=probed)
            except StreamlabError:
                upload.status = "uploading"
                await self._persist(upload)
                raise
            self._uploads.pop(upload_id, None)
            await self.table.delete(upload_id)
            jobs = self._jobs()
            if jobs is not None:
                await jobs.release_upload(upload.job_ids)
        finally:
            upload.lock.release()
        log.info("upload {id} complete: source {source_id}", id=upload_id, source_id=source["source_id"])
        result = {"job_id": upload_id, "job_ids": upload.job_ids, "source_id": source["source_id"],
                  "status": "queued", "sha256": actual, "file_size": upload.expected_size}
        self._completed[upload_id] = result
        while len(self._completed) > COMPLETED_KEPT:
            self._completed.pop(next(iter(self._completed)))
        return result

    def active(self) -> dict[str, Any]:
        """``GET /api/upload/active``."""
        jobs = self._jobs()
        uploads = sorted(self._uploads.values(), key=lambda u: u.created_at)
        return {"active_uploads": len(uploads),
                "queue_length": int(jobs.queue_length()) if jobs is not None else 0,
                "uploads": [{"job_id": u.upload_id, "filename": u.filename, "received_size": u.received_size,
                             "expected_size": u.expected_size, "status": u.status} for u in uploads]}

    async def cancel(self, upload_id: str, error: str = "upload cancelled") -> None:
        """Throw an upload away (e.g. when its job is cancelled)."""
        upload = self._get(upload_id)
        await upload.lock.acquire()
        try:
            if self._uploads.get(upload_id) is upload:
                await self._discard(upload, error)
        finally:
            upload.lock.release()

    # ------------------------------------------------------------------ abandonment

    def _sweep(self) -> Deferred[None]:
        """Discard uploads idle for ``upload_ttl`` (survives its own errors)."""
        now = self.reactor.seconds()
        idle = [u for u in list(self._uploads.values()) if u.status == "uploading" and not u.lock.locked]
        ds = [defer.ensureDeferred(self._discard(u, "upload abandoned"))
              for u in idle if now - u.last_activity >= self.ttl]
        ds += [defer.ensureDeferred(self._discard(u, "upload cancelled"))
               for u in idle if now - u.last_activity < self.ttl and self._jobs_gone(u)]
        d = defer.DeferredList(ds, consumeErrors=True)

        def report(results: list[tuple[bool, Any]]) -> None:
            for ok, value in results:
                if not ok:
                    log.failure("discarding an abandoned upload failed", value)

        return d.addCallback(report)

