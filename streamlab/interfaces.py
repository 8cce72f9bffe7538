"""The interfaces the services talk through (zope.interface, checked by mypy-zope).

A service that needs another one names the interface here in its constructor, never the
concrete class, so a test can hand it a small fake and the composition root
(``streamlab/tap.py``) is the only place that knows which class implements what:

* :class:`IEventBus` — topic publish/subscribe (``streamlab.events.EventBus``).
* :class:`IContentLibrary` — the encoded items the origin serves
  (``streamlab.media.library.ContentLibrary``).
* :class:`ISourceStore` — the source library: records + files in ``originals/``
  (``streamlab.sources.service.SourceService``).
* :class:`IJobQueue` — the encoding job queue (``streamlab.jobs.service.JobService``).
* :class:`IDaemonReactor` — the facets of the one reactor that services use (time,
  threads, child processes); tests pass ``task.Clock`` / ``MemoryReactorClock``
  wherever a single facet is enough, which is why most constructors ask for the narrow
  ``IReactorTime`` instead.

The session request path (listener <-> registry) has its own contract in
``streamlab/proxy/exchange.py``; it is re-exported below so this module stays the one
list of seams.

Interface methods are declared without ``self`` (zope's convention); mypy-zope checks
every ``@implementer`` class against them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorProcess,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
)
from zope.interface import Interface

if TYPE_CHECKING:
    from streamlab.jobs.options import EncodeOptions
    from streamlab.media.decode_times import DecodeTimes
    from streamlab.media.index import ContentIndex
    from streamlab.sources.probe import ProbeResult

__all__ = [
    "IContentLibrary",
    "IDaemonReactor",
    "IEventBus",
    "IJobQueue",
    "ISessionExchange",
    "ISourceStore",
    "Json",
]

Json = dict[str, Any]
"""One JSON object as the API answers it (a job, a source)."""
# Aliases, because inside the interfaces below ``list`` names a method:
JsonList = list[Json]
LogLines = list[str]


class IDaemonReactor(IReactorCore, IReactorTime, IReactorThreads, IReactorProcess, IReactorTCP,
                     IReactorFDSet):
    """What a service may ask of the daemon's reactor: ``seconds``/``callLater``, the
    thread pool (``deferToThreadPool(reactor, reactor.getThreadPool(), ...)``),
    ``spawnProcess``, TCP listeners, readers (the ICMP pinger's raw socket) and system
    event triggers.  The reactor ``twistd`` runs provides
    all of them; it is handed down from ``tap.makeService``, never imported."""


class IEventBus(Interface):
    """In-process publish/subscribe feeding SSE and WebSockets.  Topics are strings
    (``"sessions"``, ``"jobs"``, ``"job:<id>"``); publishing is synchronous."""

    def subscribe(topic: str, handler: Callable[[Any], None]) -> Callable[[], None]:
        """Call *handler(data)* for every publish on *topic*; returns the unsubscribe."""

    def publish(topic: str, data: Any = None) -> None:
        """Deliver *data* to every subscriber of *topic* now (a failing subscriber is
        logged and kept)."""

    def subscribers(topic: str) -> int:
        """How many handlers listen on *topic*."""


class IContentLibrary(Interface):
    """The encoded items under ``<media_dir>/dynamic_content/``, held in memory."""

    def get(name: str) -> ContentIndex | None:
        """The usable item *name*, or None."""

    def items() -> list[ContentIndex]:
        """Every usable item, sorted by name."""

    def decode_times(name: str) -> DecodeTimes | str | None:
        """The item's tfdt offsets, the reason they are unusable, or None when unknown."""

    def unusable() -> dict[str, str]:
        """``{name: reason}`` of the items that cannot be served."""

    def item_dir(name: str) -> str:
        """The directory of item *name* (NotFound for a bad name)."""

    def refresh() -> Deferred[None]:
        """Rescan every item now (fires when the new view is in place)."""


class ISourceStore(Interface):
    """The source library: uploaded originals, probed, with one sqlite record each.

    Every method validates its ids (NotFound for unknown or malformed ones)."""

    def get(source_id: str) -> Deferred[Json]:
        """One source."""

    def list() -> Deferred[JsonList]:
        """All sources, newest first."""

    def count() -> Deferred[int]:
        """Number of sources."""

    def path_of(source: Json) -> str:
        """Absolute path of a source's file (always inside the media directory)."""

    def probe(path: str) -> Deferred[ProbeResult]:
        """ffprobe *path* (Unprocessable when it is not a video)."""

    def add_file(path: str, original_filename: str, source_id: str | None = None,
                 probed: ProbeResult | None = None) -> Deferred[Json]:
        """Probe (unless *probed*), move into originals/ and record; the new source."""

    def delete(source_id: str) -> Deferred[Json]:
        """Delete a source's file and record (Conflict while a job needs it)."""

    def scan_originals() -> Deferred[Json]:
        """Index new files in originals/ and forget vanished ones; the counts."""


class IJobQueue(Interface):
    """The encoding job queue.  Reads are synchronous once :meth:`when_ready` fired."""

    encoders: set[str]
    ffmpeg_found: bool
    ffmpeg_version: str
    ready: Deferred[None]

    def when_ready() -> Deferred[None]:
        """A fresh Deferred firing once the jobs are loaded."""

    def get(job_id: str) -> Json:
        """One job (NotFound when unknown)."""

    def list(status: str | None = None) -> JsonList:
        """All jobs, newest first; only *status* ones when given."""

    def queue_length() -> int:
        """Jobs waiting to encode."""

    def jobs_using_source(source_id: str) -> Deferred[JsonList]:
        """Jobs that still need *source_id* (uploading, queued or encoding)."""

    def log_lines(job_id: str) -> Deferred[LogLines]:
        """The job's log so far."""

    def log_count(job_id: str) -> int:
        """Lines written to the job's log by this process so far."""

    def create_jobs(source_id: str, source_name: str, options: EncodeOptions,
                    status: str = "queued") -> Deferred[JsonList]:
        """One job per partial duration; returns them."""

    def release_upload(job_ids: Iterable[str]) -> Deferred[Any]:
        """The upload finished: its ``uploading`` jobs become ``queued``."""

    def fail_jobs(job_ids: Iterable[str], error: str) -> Deferred[Any]:
        """Mark not-yet-finished jobs failed with *error*."""

    def cancel(job_id: str) -> Deferred[Json]:
        """queued/uploading/encoding -> cancelled (Conflict otherwise)."""

    def delete(job_id: str) -> Deferred[Any]:
        """Remove the job (Conflict while uploading or encoding)."""


# --- session hooks ---------------------------------------------------------------------
# The session request path (listener <-> session: begin(info, now) -> Plan, end(record))
# has its contract next to its values in streamlab/proxy/exchange.py; it is listed here
# so this file stays the one list of the seams services talk through.
from streamlab.proxy.exchange import ISessionExchange  # noqa: E402 - after the interfaces it may need
