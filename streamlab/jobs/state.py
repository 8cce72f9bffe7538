"""The job model and its state machine (pure: time is passed in).

Statuses::

    uploading -> queued -> encoding -> complete
        |           |          |-----> failed
        |           |          |-----> cancelled
        |           |          '-----> queued      (daemon restart / shutdown)
        '-----------+--> cancelled, failed

``complete``, ``failed`` and ``cancelled`` are terminal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from streamlab.errors import Conflict
from streamlab.formats import iso_ms as iso

UPLOADING = "uploading"
QUEUED = "queued"
ENCODING = "encoding"
COMPLETE = "complete"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (UPLOADING, QUEUED, ENCODING, COMPLETE, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETE, FAILED, CANCELLED})
ACTIVE = frozenset({UPLOADING, QUEUED, ENCODING})

TRANSITIONS: dict[str, frozenset[str]] = {
    UPLOADING: frozenset({QUEUED, FAILED, CANCELLED}),
    QUEUED: frozenset({ENCODING, FAILED, CANCELLED}),
    ENCODING: frozenset({COMPLETE, FAILED, CANCELLED, QUEUED}),
    COMPLETE: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class Job:
    """One encoding job (spec/content.md section 3)."""

    job_id: str
    name: str
    source_id: str
    status: str
    config: dict[str, Any]
    created_at: str
    seq: int = 0
    progress: float = 0.0
    stage: str = ""
    output_paths: tuple[str, ...] = ()
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    eta_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        """The API representation."""
        return {
            "job_id": self.job_id, "name": self.name, "source_id": self.source_id,
            "status": self.status, "progress": round(self.progress, 2), "stage": self.stage,
            "config": dict(self.config), "output_paths": list(self.output_paths),
            "created_at": self.created_at, "started_at": self.started_at,
            "completed_at": self.completed_at, "error": self.error,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
        }


def new_job(*, name: str, source_id: str, config: dict[str, Any], output_paths: list[str],
            now: float, seq: int, status: str = QUEUED, job_id: str | None = None) -> Job:
    """A fresh job in *status* (``queued`` or ``uploading``)."""
    if status not in (QUEUED, UPLOADING):
        raise ValueError(f"a new job starts queued or uploading, not {status!r}")
    return Job(job_id=job_id or str(uuid.uuid4()), name=name, source_id=source_id, status=status,
               config=dict(config), created_at=iso(now), seq=seq, output_paths=tuple(output_paths),
               stage="waiting for upload" if status == UPLOADING else "queued")


def can_transition(old: str, new: str) -> bool:
    """Whether *old* -> *new* is allowed."""
    return new in TRANSITIONS.get(old, frozenset())


def transition(job: Job, new: str, *, now: float, error: str | None = None,
               stage: str | None = None) -> Job:
    """*job* moved to status *new*; :class:`Conflict` (409) when not allowed."""
    if not can_transition(job.status, new):
        raise Conflict(f"job is {job.status}", detail=f"cannot go from {job.status} to {new}",
                       status_now=job.status)
    changes: dict[str, Any] = {"status": new, "eta_seconds": None}
    if new == ENCODING:
        changes.update(started_at=iso(now), progress=0.0, stage=stage or "probe", error=None,
                       completed_at=None)
    elif new == QUEUED:
        changes.update(progress=0.0, stage=stage or "queued", started_at=None)
    elif new == COMPLETE:
        changes.update(progress=100.0, stage=stage or "done", completed_at=iso(now), error=None)
    else:  # failed / cancelled
        changes.update(completed_at=iso(now), error=error if error is not None else job.error,
                       stage=stage or new)
    return replace(job, **changes)


def with_progress(job: Job, progress: float, stage: str, eta_seconds: float | None) -> Job:
    """*job* with new progress figures (only while encoding)."""
    return replace(job, progress=max(0.0, min(100.0, progress)), stage=stage, eta_seconds=eta_seconds)
