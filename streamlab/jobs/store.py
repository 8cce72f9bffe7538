"""Job persistence: :class:`SqliteJobStore` on the daemon database and
:class:`MemoryJobStore` for unit tests, with the same Deferred-returning interface.

The JobService keeps every job in memory and writes through to the store; the store is
read once at start (``load_all``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred

from streamlab.jobs.state import Job
from streamlab.storage.db import Database

_COLUMNS = ("job_id", "seq", "name", "source_id", "status", "progress", "stage", "config",
            "output_paths", "created_at", "started_at", "completed_at", "error")


class JobStore(Protocol):
    """What the JobService needs from persistence."""

    def load_all(self) -> Deferred[list[Job]]:
        """Every job, oldest first."""

    def save(self, job: Job) -> Deferred[None]:
        """Insert or replace *job*."""

    def delete(self, job_id: str) -> Deferred[None]:
        """Forget *job_id* (no error when unknown)."""


def _row(job: Job) -> tuple[Any, ...]:
    return (job.job_id, job.seq, job.name, job.source_id, job.status, float(job.progress), job.stage,
            json.dumps(job.config), json.dumps(list(job.output_paths)), job.created_at, job.started_at,
            job.completed_at, job.error)


def _job(row: Any) -> Job:
    values = {name: row[name] for name in _COLUMNS}
    values["config"] = json.loads(values["config"] or "{}")
    values["output_paths"] = tuple(json.loads(values["output_paths"] or "[]"))
    values["progress"] = float(values["progress"] or 0.0)
    values["stage"] = values["stage"] or ""
    return Job(**values)


class SqliteJobStore:
    """Jobs in the ``jobs`` table (``streamlab/storage/schema/002_jobs.sql``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def load_all(self) -> Deferred[list[Job]]:
        d = self._db.run_query(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq")
        return d.addCallback(lambda rows: [_job(r) for r in rows])

    def save(self, job: Job) -> Deferred[None]:
        marks = ", ".join("?" for _ in _COLUMNS)
        return self._db.run_operation(
            f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})", _row(job))

    def delete(self, job_id: str) -> Deferred[None]:
        return self._db.run_operation("DELETE FROM jobs WHERE job_id = ?", (job_id,))


class MemoryJobStore:
    """In-memory store (unit tests); survives a JobService restart within one test."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Any, ...]] = {}

    def load_all(self) -> Deferred[list[Job]]:
        jobs = [_job(dict(zip(_COLUMNS, row, strict=True))) for row in self.rows.values()]
        return defer.succeed(sorted(jobs, key=lambda j: j.seq))

    def save(self, job: Job) -> Deferred[None]:
        self.rows[job.job_id] = _row(job)
        return defer.succeed(None)

    def delete(self, job_id: str) -> Deferred[None]:
        self.rows.pop(job_id, None)
        return defer.succeed(None)
