"""Chunked uploads in progress as values, and their ``uploads`` rows in sqlite.

:class:`Upload` is one upload the service is receiving; :class:`UploadTable` is the one
place that knows the ``uploads`` table (storage/schema/001_sources_uploads.sql): what a
row holds, how it is read back after a restart, updated after every acknowledged chunk
and deleted.  What changes here is the table, never the upload protocol
(:mod:`streamlab.uploads.service`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock

from streamlab.storage.db import Database


@dataclass
class Upload:
    """One chunked upload in progress (mirrors its ``uploads`` row)."""

    upload_id: str
    job_ids: list[str]
    source_id: str
    filename: str
    original_filename: str
    expected_size: int
    received_size: int
    sha256: str | None
    part_path: str
    options: dict[str, Any]
    status: str
    created_at: str
    last_activity: float
    hasher: Any = None
    lock: DeferredLock = field(default_factory=DeferredLock)

    def progress(self) -> dict[str, Any]:
        """What ``GET /api/upload/{job_id}`` answers."""
        return {"job_id": self.upload_id, "received_size": self.received_size,
                "expected_size": self.expected_size, "status": self.status}


class UploadTable:
    """The ``uploads`` rows of *db*; part files are kept in *uploads_dir*."""

    def __init__(self, db: Database, uploads_dir: str) -> None:
        self.db = db
        self.uploads_dir = uploads_dir

    async def load(self) -> list[Upload]:
        """Every persisted upload, ``uploading`` again (its hasher not rebuilt yet)."""
        rows = await self.db.run_query("SELECT * FROM uploads")
        return [Upload(
            upload_id=row["upload_id"], job_ids=json.loads(row["job_ids"]), source_id=row["source_id"],
            filename=row["filename"], original_filename=row["original_filename"],
            expected_size=row["expected_size"], received_size=row["received_size"], sha256=row["sha256"],
            # always inside uploads_dir, whatever the row says (and if state_dir moved)
            part_path=os.path.join(self.uploads_dir, os.path.basename(row["part_path"])),
            options=json.loads(row["options"]), status="uploading",
            created_at=row["created_at"], last_activity=row["last_activity"]) for row in rows]

    def insert(self, upload: Upload) -> Deferred[None]:
        """The row of a new upload (nothing received yet)."""
        return self.db.run_operation(
            "INSERT INTO uploads (upload_id, job_ids, source_id, filename, original_filename, "
            "expected_size, received_size, sha256, part_path, options, status, created_at, "
            "last_activity) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 'uploading', ?, ?)",
            (upload.upload_id, json.dumps(upload.job_ids), upload.source_id, upload.filename,
             upload.original_filename, upload.expected_size, upload.sha256, upload.part_path,
             json.dumps(upload.options, default=str), upload.created_at, upload.last_activity))

    def update(self, upload: Upload) -> Deferred[None]:
        """Persist what changes while an upload runs (size, status, activity, hash)."""
        return self.db.run_operation(
            "UPDATE uploads SET received_size = ?, status = ?, last_activity = ?, sha256 = ? "
            "WHERE upload_id = ?",
            (upload.received_size, upload.status, upload.last_activity, upload.sha256, upload.upload_id))

    def delete(self, upload_id: str) -> Deferred[None]:
        """Forget an upload's row (completed, discarded or lost)."""
        return self.db.run_operation("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
