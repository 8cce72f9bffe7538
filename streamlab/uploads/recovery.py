"""What a daemon restart does with the chunked uploads it finds in sqlite.

Each persisted upload either resumes (its part file cut back to the acknowledged size
and hashed again in a thread; the restart counts as activity, so the client gets a full
``upload_ttl`` to come back), or, when its part file is gone, is settled: the daemon
stopped while completing it (the source exists: its jobs are released) or the file was
lost (its jobs fail).  Leftovers of interrupted single-shot uploads are deleted.  What
changes here is the restart policy, never the upload protocol
(:mod:`streamlab.uploads.service`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from streamlab.errors import NotFound
from streamlab.interfaces import IJobQueue, ISourceStore
from streamlab.uploads.partfile import hash_file, remove_strays
from streamlab.uploads.table import Upload, UploadTable

log = Logger()


async def recover_uploads(table: UploadTable, sources: ISourceStore, jobs: IJobQueue | None,
                          in_thread: Callable[..., Deferred[Any]], now: float) -> list[Upload]:
    """The persisted uploads that resume (hasher rebuilt, rows updated); the others are
    settled and forgotten, stray part files deleted.  *jobs* must be ready."""
    resumed = []
    referenced = set()
    for upload in await table.load():
        referenced.add(os.path.basename(upload.part_path))
        if not os.path.exists(upload.part_path):
            await _settle_missing_part(table, sources, jobs, upload)
            continue
        hasher, present = await in_thread(hash_file, upload.part_path, upload.received_size)
        if present != upload.received_size:
            log.warn("upload {id}: part file has {present} of {acked} acknowledged bytes",
                     id=upload.upload_id, present=present, acked=upload.received_size)
            upload.received_size = present
        upload.hasher = hasher
        # a restart counts as activity: the client gets a full ttl to resume
        upload.last_activity = max(upload.last_activity, now)
        await table.update(upload)
        resumed.append(upload)
        log.info("upload {id} resumable at {size} of {expected} bytes", id=upload.upload_id,
                 size=upload.received_size, expected=upload.expected_size)
    await in_thread(remove_strays, table.uploads_dir, referenced)
    return resumed


async def _settle_missing_part(table: UploadTable, sources: ISourceStore, jobs: IJobQueue | None,
                               upload: Upload) -> None:
    """A row without its part file: the daemon stopped during completion (or the file
    was removed by hand)."""
    try:
        await sources.get(upload.source_id)
        exists = True
    except NotFound:
        exists = False
    if jobs is not None:
        if exists:
            await jobs.release_upload(upload.job_ids)
        else:
            await jobs.fail_jobs(upload.job_ids, "upload lost")
    await table.delete(upload.upload_id)
