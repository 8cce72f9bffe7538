"""First-run setup: status, idempotent initialize, and seeding the demo item.

``seed_on_first_start`` (config) makes the daemon seed by itself at start when the
media directory has no content and there are no sources, so ``make run`` ends with a
playable stream.  The synthesis is an ffmpeg child process; the encode is an ordinary
job of the JobService.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamlab.config import Config
from streamlab.deferreds import when_fired
from streamlab.errors import Unavailable
from streamlab.ffmpeg import FFmpegChild
from streamlab.fsutil import atomic_write
from streamlab.interfaces import IDaemonReactor, IJobQueue, ISourceStore
from streamlab.jobs import state as st
from streamlab.jobs.ladder import font_or_none
from streamlab.jobs.options import parse_encode_options
from streamlab.jobs.seed import DEMO_FILENAME, DEMO_NAME, synthesize
from streamlab.storage.db import Database

log = Logger()

MARKER = "setup.json"
INTERESTING_ENCODERS = ("libx264", "libx265", "libsvtav1", "libaom-av1", "librav1e", "aac", "libfdk_aac")


def _layout(media_dir: str, state_dir: str) -> list[str]:
    return [os.path.join(media_dir, "originals"), os.path.join(media_dir, "dynamic_content"),
            os.path.join(state_dir, "uploads"), os.path.join(state_dir, "job_logs"),
            os.path.join(state_dir, "work")]


def _scan(media_dir: str, state_dir: str) -> dict[str, Any]:
    """Blocking look at the disk (thread)."""
    content_dir = os.path.join(media_dir, "dynamic_content")
    try:
        names = os.listdir(content_dir)
        items = sorted(n for n in names
                       if not n.startswith(".")
                       and os.path.isfile(os.path.join(content_dir, n, "content.json")))
    except FileNotFoundError:
        items = []
    writable = all(os.path.isdir(p) and os.access(p, os.W_OK) for p in (media_dir, state_dir))
    return {"items": items, "writable": writable,
            "initialized": os.path.isfile(os.path.join(state_dir, MARKER))}


def _initialize(media_dir: str, state_dir: str, now_iso: str) -> None:
    for path in _layout(media_dir, state_dir):
        os.makedirs(path, exist_ok=True)
    marker = os.path.join(state_dir, MARKER)
    if not os.path.isfile(marker):
        atomic_write(marker, json.dumps({"initialized_at": now_iso}).encode())


class SetupService(Service):
    """The daemon's ``setup`` child service: first-run status, initialize and seed."""

    name = "setup"

    def __init__(self, config: Config, reactor: IDaemonReactor, *, jobs: IJobQueue, sources: ISourceStore,
                 db: Database | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.jobs = jobs
        self.sources = sources
        self.db = db
        self.media_dir = os.path.abspath(config.paths.media_dir)
        self.state_dir = os.path.abspath(config.paths.state_dir)
        self._seeding: defer.Deferred[Any] | None = None
        self._synth: FFmpegChild | None = None
        self.first_start: defer.Deferred[Any] = defer.Deferred()

    def _thread(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    # ------------------------------------------------------------------ start

    def startService(self) -> None:
        """With ``seed_on_first_start``: seed when there is no content and no source."""
        super().startService()
        if not self.config.jobs.seed_on_first_start:
            self.first_start.callback(None)
            return
        d = self._first_start()
        d.addErrback(self._first_start_failed)
        d.chainDeferred(self.first_start)

    def _first_start_failed(self, failure: Failure) -> None:
        """A seed that the daemon's own stop interrupted is not an error (the stop
        terminated its ffmpeg); any other failure is logged with its traceback."""
        if not self.running:
            log.info("demo seed interrupted by the daemon stopping: {why}",
                     why=failure.getErrorMessage())
            return
        log.failure("seeding the demo item on first start failed", failure)

    def stopService(self) -> defer.Deferred[Any] | None:
        """Stop a demo synthesis that is still running (its temp file is removed)."""
        super().stopService()
        seeding = self._seeding
        if self._synth is not None:
            self._synth.terminate()
        if seeding is None:
            return None
        return when_fired(seeding, None)

    @defer.inlineCallbacks
    def _first_start(self) -> Any:
        yield self.jobs.when_ready()
        disk = yield self._thread(_scan, self.media_dir, self.state_dir)
        count = yield self.sources.count()
        if disk["items"] or count:
            return None
        log.info("empty media dir and no sources: seeding the demo item")
        result = yield self.seed()
        log.info("demo seed: {result}", result=result)
        return result

    # ------------------------------------------------------------------ API

    @defer.inlineCallbacks
    def status(self) -> Any:
        """The wizard status (spec/content.md section 4)."""
        yield self.jobs.when_ready()  # ffmpeg probed, jobs loaded
        disk = yield self._thread(_scan, self.media_dir, self.state_dir)
        try:
            sources_count = yield self.sources.count()
        except Exception:  # noqa: BLE001 - the status must answer even with a broken db
            sources_count = 0
        jobs = self.jobs
        issues: list[str] = []
        recommendations: list[str] = []
        if not disk["writable"]:
            issues.append(f"media_dir {self.media_dir} or state_dir {self.state_dir} is not writable")
        if not jobs.ffmpeg_found:
            issues.append(f"ffmpeg ({self.config.jobs.ffmpeg}) not found or not working")
        elif "libx264" not in jobs.encoders:
            issues.append("ffmpeg has no libx264 encoder")
        if jobs.ffmpeg_found and "libx265" not in jobs.encoders:
            recommendations.append("install an ffmpeg with libx265 for HEVC encodes")
        if font_or_none() is None:
            recommendations.append("install fonts-dejavu-core so rung labels and frame counters are "
                                   "burned in")
        if not disk["initialized"]:
            recommendations.append("POST /api/setup/initialize to create the storage layout")
        if not disk["items"]:
            recommendations.append("POST /api/setup/seed to create a demo stream, or upload a video")
        ready = disk["initialized"] and not issues
        return {
            "status": "ready" if ready else "incomplete",
            "media_dir": self.media_dir, "state_dir": self.state_dir, "writable": disk["writable"],
            "initialized": disk["initialized"],
            "ffmpeg": {"found": bool(jobs.ffmpeg_found), "version": jobs.ffmpeg_version,
                       "encoders": [e for e in INTERESTING_ENCODERS if e in jobs.encoders]},
            "sources_count": int(sources_count), "content_count": len(disk["items"]),
            "queue_length": jobs.queue_length(),
            "issues": issues, "recommendations": recommendations,
            "demo": self._demo_state(disk["items"]),
        }

    def _demo_state(self, items: Any) -> dict[str, Any]:
        """Where the demo stands, for a first-run card: ``absent``, ``synthesising`` (the
        clip is being generated), ``encoding`` (its job, with progress), or ``ready``."""
        ready = sorted(i for i in items if i.startswith(DEMO_NAME + "_"))
        if ready:
            return {"state": "ready", "content": ready[0]}
        for job in self.jobs.list():
            if job["name"] == DEMO_NAME and job["status"] in st.ACTIVE:
                return {"state": "encoding", "job_id": job["job_id"], "progress": job["progress"],
                        "eta_seconds": job.get("eta_seconds")}
        return {"state": "synthesising"} if self._seeding is not None else {"state": "absent"}

    @defer.inlineCallbacks
    def initialize(self) -> Any:
        """Directory layout, database schema, marker (idempotent); the new status."""
        yield self._thread(_initialize, self.media_dir, self.state_dir, st.iso(self.reactor.seconds()))
        if self.db is not None:
            yield self.db.ready
        body = yield self.status()
        return body

    def seed(self) -> defer.Deferred[Any]:
        """Synthesise + index + queue the demo encode (concurrent calls share one run)."""
        if self._seeding is not None:
            return when_fired(self._seeding, {"status": "exists"})
        d = self._seeding = self._seed()

        def done(result: Any) -> Any:
            if self._seeding is d:
                self._seeding = None
            return result

        # A run that finished at once (no thread hop) has already fired: the caller
        # still gets its own Deferred, never the attribute done() just cleared.
        d.addBoth(done)
        return d

    @defer.inlineCallbacks
    def _seed(self) -> Any:
        cfg = self.config.jobs
        yield self.jobs.when_ready()
        disk = yield self._thread(_scan, self.media_dir, self.state_dir)
        if any(item.startswith(DEMO_NAME + "_") for item in disk["items"]):
            return {"status": "exists"}
        for job in self.jobs.list():
            if job["name"] == DEMO_NAME and job["status"] in st.ACTIVE:
                return {"status": "exists", "job_id": job["job_id"], "source_id": job["source_id"]}
        options = parse_encode_options({"codec_selection": cfg.seed_codecs, "output_name": DEMO_NAME},
                                       source_name=DEMO_FILENAME, source_height=720,
                                       encoders=set(self.jobs.encoders))
        yield self._thread(_initialize, self.media_dir, self.state_dir, st.iso(self.reactor.seconds()))
        tmp = os.path.join(self.state_dir, "uploads", f"seed-{uuid.uuid4().hex}.mp4")
        log.info("synthesising the {duration}s demo clip", duration=cfg.seed_duration)
        try:
            run, done = synthesize(self.reactor, ffmpeg=cfg.ffmpeg, output=tmp, duration=cfg.seed_duration,
                                   font=font_or_none(), kill_grace=cfg.kill_grace_seconds)
            self._synth = run
            try:
                yield done
            except Exception:
                if not self.running:  # our own stop terminated the synthesis: not a failure
                    raise Unavailable("daemon stopping", detail="the demo synthesis was stopped") from None
                raise
            finally:
                self._synth = None
            if not self.running:
                raise Unavailable("daemon stopping", detail="the demo synthesis was stopped")
            source = yield self.sources.add_file(tmp, DEMO_FILENAME)
        finally:
            yield self._thread(_unlink_quiet, tmp)
        jobs = yield self.jobs.create_jobs(source["source_id"], DEMO_FILENAME, options)
        return {"status": "queued", "job_id": jobs[0]["job_id"], "job_ids": [j["job_id"] for j in jobs],
                "source_id": source["source_id"]}


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
