"""SourceService: the source library (files in ``<media_dir>/originals/`` + sqlite records).

File moves, deletes and directory listings run in the thread pool; ffprobe runs as a
child process; records live in sqlite.  A file only becomes a source once it is
complete, probed and moved into originals/ atomically.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.config import Config
from streamlab.deferreds import when_fired
from streamlab.errors import Conflict, Invalid, NotFound, StreamlabError
from streamlab.formats import iso_s
from streamlab.interfaces import IDaemonReactor, IJobQueue, ISourceStore
from streamlab.sources import files
from streamlab.sources.probe import ProbeResult, probe
from streamlab.sources.store import SourceStore
from streamlab.storage.db import Database

log = Logger()

PROBE_TIMEOUT = 30.0


def jobs_ready(jobs: IJobQueue) -> Deferred[None]:
    """Fires once the job service has loaded its jobs (its ``ready`` Deferred, if any)."""
    ready = getattr(jobs, "ready", None)
    if isinstance(ready, Deferred) and not ready.called:
        return when_fired(ready, None)
    return defer.succeed(None)


def valid_id(value: str) -> bool:
    """True for a UUID string (every path parameter is validated before use)."""
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return len(value) == 36


@implementer(ISourceStore)
class SourceService(Service):
    """The source library.  ``jobs`` is a getter for the JobService (or None)."""

    name = "sources"

    def __init__(self, config: Config, db: Database, reactor: IDaemonReactor,
                 jobs: Callable[[], IJobQueue | None] | None = None,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.config = config
        self.db = db
        self.reactor = reactor
        self.store = SourceStore(db)
        self.media_dir = os.path.abspath(config.paths.media_dir)
        self.originals_dir = os.path.join(self.media_dir, files.ORIGINALS)
        self.ffprobe = config.jobs.ffprobe
        self.probe_timeout = probe_timeout
        self._jobs = jobs or (lambda: None)
        self._scan_lock = DeferredLock()

    def startService(self) -> None:
        """Make sure originals/ exists."""
        super().startService()
        os.makedirs(self.originals_dir, exist_ok=True)

    # ------------------------------------------------------------------ reading

    def get(self, source_id: str) -> Deferred[dict[str, Any]]:
        """One source (NotFound for unknown or malformed ids)."""
        if not valid_id(source_id):
            return defer.fail(NotFound("source not found", detail=source_id))
        return self.store.get(source_id)

    def list(self) -> Deferred[list[dict[str, Any]]]:
        """All sources, newest first."""
        return self.store.list()

    def count(self) -> Deferred[int]:
        """Number of sources."""
        return self.store.count()

    def path_of(self, source: dict[str, Any]) -> str:
        """Absolute path of a source's file (always inside media_dir)."""
        path = os.path.abspath(os.path.join(self.media_dir, str(source["file_path"])))
        if not path.startswith(self.media_dir + os.sep):
            raise Invalid("bad source path", detail=source["file_path"])
        return path

    def probe(self, path: str) -> Deferred[ProbeResult]:
        """ffprobe *path* (422 Unprocessable when it is not a video)."""
        return probe(self.reactor, self.ffprobe, path, timeout=self.probe_timeout)

    # ------------------------------------------------------------------ writing

    @defer.inlineCallbacks
    def add_file(self, path: str, original_filename: str, source_id: str | None = None,
                 probed: ProbeResult | None = None) -> Any:
        """Probe *path*, move it into originals/ (unique name, atomic) and record it.

        Raises Unprocessable (422) when the file is not a video; the file is then left
        where it was (the caller discards it).  Returns the new source object.
        """
        if probed is None:
            probed = yield self.probe(path)
        filename = files.safe_filename(original_filename)
        final = yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                _move_and_size, path, self.originals_dir, filename)
        final_path, size = final
        record = self._record(source_id or str(uuid.uuid4()), os.path.basename(final_path),
                              original_filename, size, probed, None)
        try:
            yield self.store.insert(record)
        except Exception:
            yield self._in_thread(files.remove_file, final_path)
            raise
        log.info("source {source_id} added: {file_path}", source_id=record["source_id"],
                 file_path=record["file_path"])
        source = yield self.store.get(record["source_id"])
        return source

    def _record(self, source_id: str, filename: str, original_filename: str, size: int,
                probed: ProbeResult | None, error: str | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "source_id": source_id,
            "name": files.source_name(filename),
            "original_filename": original_filename or filename,
            "file_path": f"{files.ORIGINALS}/{filename}",
            "file_size": size,
            "uploaded_at": iso_s(self.reactor.seconds()),
            "status": "ready" if error is None else "invalid",
            "error": error,
        }
        for name in ("duration", "width", "height", "codec", "fps", "audio_codec"):
            record[name] = getattr(probed, name) if probed is not None else None
        return record

    @defer.inlineCallbacks
    def delete(self, source_id: str) -> Any:
        """Delete a source's file and record; 409 while a queued/encoding/uploading job uses it."""
        source = yield self.get(source_id)
        jobs = self._jobs()
        if jobs is not None:
            yield jobs_ready(jobs)
            using = yield jobs.jobs_using_source(source_id)
            if using:
                raise Conflict("source in use", detail="jobs still need this source",
                               job_ids=[j.get("job_id") for j in using])
        yield self._in_thread(files.remove_file, self.path_of(source))
        yield self.store.delete(source_id)
        log.info("source {source_id} deleted", source_id=source_id)
        return source

    @defer.inlineCallbacks
    def scan_originals(self) -> Any:
        """Index files that appeared in originals/ and forget records whose file vanished.

        Returns ``{"scanned", "new", "removed", "invalid"}``: files looked at, new ready
        sources, records removed, new files that are not videos (recorded as invalid).
        """
        yield self._scan_lock.acquire()
        try:
            listing = yield self._in_thread(files.list_originals, self.originals_dir)
            known = yield self.store.paths()
            on_disk = {f"{files.ORIGINALS}/{name}": size for name, size in listing}
            removed = 0
            for file_path, source_id in known.items():
                if file_path not in on_disk:
                    yield self.store.delete(source_id)
                    removed += 1
            new = invalid = 0
            for file_path, size in on_disk.items():
                if file_path in known:
                    continue
                filename = file_path.split("/", 1)[1]
                try:
                    probed = yield self.probe(os.path.join(self.originals_dir, filename))
                    error = None
                except StreamlabError as exc:
                    probed, error = None, f"{exc.error}: {exc.detail}" if exc.detail else exc.error
                record = self._record(str(uuid.uuid4()), filename, filename, size, probed, error)
                yield self.store.insert(record)
                if error is None:
                    new += 1
                else:
                    invalid += 1
            result = {"scanned": len(on_disk), "new": new, "removed": removed, "invalid": invalid}
            log.info("scanned originals: {result}", result=result)
            return result
        finally:
            self._scan_lock.release()

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)


def _move_and_size(src: str, directory: str, filename: str) -> tuple[str, int]:
    final = files.move_into(src, directory, filename)
    return final, os.path.getsize(final)
