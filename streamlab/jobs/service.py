"""The encoding job queue: persistence, FIFO scheduling, ffmpeg runs, cancel, recovery.

:class:`JobService` keeps every job in memory (write-through to a :class:`JobStore`),
runs up to ``encode_workers`` encodes at once in creation order, and for each job:

1. ``probe``: reads the source's metadata (SourceService);
2. ``encode audio`` + ``encode <rung> <codec> (i/n)``: one ffmpeg child per step
   (:mod:`streamlab.jobs.ladder`), each in its own process group at nice 10, into a work
   directory ``<state_dir>/work/<job_id>``;
3. ``package``: :func:`streamlab.media.packager.package` per codec into
   ``<media_dir>/dynamic_content/<content name>`` (atomic swap-in, content.json last);
4. ``index``: ``ContentLibrary.refresh()`` so the origin serves the new items.

The stages themselves are :class:`streamlab.jobs.runner.JobRunner`; this module is the
queue and the owner of the job records.

Progress (0-100, weighted across steps) and log lines are published on the event bus:
topic ``job.<job_id>`` gets ``{"type":"log"|"progress"|"end", ...}`` frames (the
WebSocket stream), topic ``jobs`` gets ``{"type":"job","job":{...}}`` on every change.

Cancel terminates the running ffmpeg's process group (SIGTERM, SIGKILL after
``kill_grace_seconds``) and removes partial output.  On start, jobs left ``encoding``
by a crash go back to ``queued`` (work dirs and packaging leftovers removed); on stop,
running encodes are terminated and recorded as ``queued`` so the next start redoes them.
"""

from __future__ import annotations

import builtins
import functools
import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task, threads, utils
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.config import Config
from streamlab.errors import Conflict, Invalid, NotFound, StreamlabError
from streamlab.interfaces import IContentLibrary, IDaemonReactor, IEventBus, IJobQueue, ISourceStore
from streamlab.jobs import state as st
from streamlab.jobs.ladder import font_or_none
from streamlab.jobs.logs import JobLogs
from streamlab.jobs.options import EncodeOptions, av1_encoder, content_names, job_names
from streamlab.jobs.process import kill_leftovers, leftover_pids, still_alive
from streamlab.jobs.runner import JobRunner, Run
from streamlab.jobs.state import Job
from streamlab.jobs.store import JobStore
from streamlab.jobs.workdirs import content_using, remove_partial, source_labels

log = Logger()

LEFTOVER_WAIT_SECONDS = 10.0


def parse_encoders(output: bytes | str) -> set[str]:
    """Encoder names from ``ffmpeg -encoders`` output."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    names: set[str] = set()
    started = False
    for line in text.splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2 and len(parts[0]) == 6:
            names.add(parts[1])
    return names


@implementer(IJobQueue)
class JobService(Service):
    """The job queue (the daemon's ``jobs`` child service)."""

    name = "jobs"

    def __init__(self, config: Config, reactor: IDaemonReactor, store: JobStore, *, bus: IEventBus,
                 sources: ISourceStore, library: IContentLibrary | None = None, logs: JobLogs | None = None,
                 encoders: set[str] | None = None,
                 package: Callable[..., Deferred[Any]] | None = None, font: str | None | bool = True,
                 thread_runner: Callable[..., Deferred[Any]] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.store = store
        self.bus = bus
        self.sources = sources
        self.library = library
        self.media_dir = os.path.abspath(config.paths.media_dir)
        self.state_dir = os.path.abspath(config.paths.state_dir)
        self.content_dir = os.path.join(self.media_dir, "dynamic_content")
        self.work_root = os.path.join(self.state_dir, "work")
        self.logs = logs or JobLogs(os.path.join(self.state_dir, "job_logs"))
        self.ffmpeg = config.jobs.ffmpeg
        self.workers = int(config.jobs.encode_workers)
        self.kill_grace = float(config.jobs.kill_grace_seconds)
        self.encoders: set[str] = set(encoders or ())
        self._probe_encoders = encoders is None
        self.ffmpeg_found = encoders is not None
        self.ffmpeg_version = ""
        self.font = font_or_none() if font is True else (font or None)
        if package is None:
            from streamlab.media.packager import package as real_package

            package = real_package
        self.package = package
        self.thread = thread_runner or (
            lambda fn, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *a))
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        self._running: dict[str, Run] = {}
        self._loaded = False
        self._stopping = False
        self.ready: Deferred[None] = Deferred()

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        """Probe ffmpeg, load jobs, recover interrupted encodes, start the queue."""
        super().startService()
        self._stopping = False
        d: Deferred[Any] = self._probe() if self._probe_encoders else defer.succeed(None)
        d.addCallback(lambda _: self.store.load_all())
        d.addCallback(self._recover)
        d.addCallback(lambda _: self._became_ready())
        d.addErrback(lambda f: log.failure("job service failed to start", f))

    def when_ready(self) -> Deferred[None]:
        """A fresh Deferred firing once the jobs are loaded (at once when they are)."""
        if self._loaded:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()

        def relay(result: Any) -> Any:
            d.callback(None)
            return result

        self.ready.addBoth(relay)
        return d

    def _became_ready(self) -> None:
        self._loaded = True
        if not self.ready.called:
            self.ready.callback(None)
        self._pump()

    @defer.inlineCallbacks
    def _probe(self) -> Any:
        try:
            out = yield utils.getProcessOutput(self.ffmpeg, ["-hide_banner", "-encoders"],
                                               env=dict(os.environ), reactor=self.reactor, errortoo=True)
            self.encoders = parse_encoders(out)
            version = yield utils.getProcessOutput(self.ffmpeg, ["-version"], env=dict(os.environ),
                                                   reactor=self.reactor, errortoo=True)
            first = version.decode("utf-8", "replace").splitlines()[:1]
            self.ffmpeg_version = first[0].split(" Copyright")[0] if first else ""
            self.ffmpeg_found = bool(self.encoders)
        except Exception as exc:  # ffmpeg missing or broken: jobs fail with a clear error
            log.error("ffmpeg {ffmpeg} not usable: {exc}", ffmpeg=self.ffmpeg, exc=exc)
            self.ffmpeg_found = False
        log.info("ffmpeg encoders: {names}", names=sorted(n for n in self.encoders
                                                          if n.startswith(("libx26", "libsvt", "libaom"))))

    @defer.inlineCallbacks
    def _kill_leftover_encoders(self) -> Any:
        """Children of a previous daemon still writing into our work folder (their death
        signal did not reach them) are SIGKILLed, and waited for, before any job runs."""
        pids = yield self.thread(leftover_pids, self.work_root)
        if not pids:
            return
        log.warn("killing {n} leftover encoder process(es) of a previous daemon in {dir}: {pids}",
                 n=len(pids), dir=self.work_root, pids=pids)
        yield self.thread(kill_leftovers, pids)
        deadline = self.reactor.seconds() + LEFTOVER_WAIT_SECONDS
        while True:
            alive = yield self.thread(still_alive, pids)
            if not alive:
                return
            if self.reactor.seconds() >= deadline:
                log.error("leftover encoder process(es) {pids} did not exit", pids=alive)
                return
            yield task.deferLater(self.reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def _recover(self, jobs: list[Job]) -> Any:
        yield self._kill_leftover_encoders()
        for job in jobs:
            self._jobs[job.job_id] = job
            self._seq = max(self._seq, job.seq)
        for job in list(self._jobs.values()):
            if job.status == st.ENCODING:
                yield self.cleanup_partial(job, outputs=())
                new = st.transition(job, st.QUEUED, now=self.reactor.seconds(),
                                    stage="queued (requeued after restart)")
                self.log_line(job.job_id, "daemon restarted while encoding: partial output removed, "
                                          "job requeued")
                yield self.save(new)

    def stopService(self) -> Deferred[None] | None:
        """Terminate running encodes and record them as queued (redone at next start)."""
        super().stopService()
        self._stopping = True
        waits = []
        for run in list(self._running.values()):
            # Record first: the database stops together with us and takes only work that
            # was submitted before it closes.
            job = self._jobs.get(run.job_id)
            if job is not None and job.status == st.ENCODING:
                self.log_line(run.job_id, "daemon stopping: encode terminated, partial output removed; "
                                      "the job is requeued at the next start")
                self.save(st.transition(job, st.QUEUED, now=self.reactor.seconds(),
                                         stage="queued (interrupted by daemon stop)")).addErrback(
                    lambda f: log.failure("recording an interrupted job failed", f))
            run.stop("stop")
            waits.append(run.finished)
        d: Deferred[Any] = defer.DeferredList(waits, consumeErrors=True)
        d.addBoth(lambda _: self.logs.close_all())
        return d

    # ------------------------------------------------------------------ reading

    def get(self, job_id: str) -> dict[str, Any]:
        """One job as JSON (NotFound when unknown)."""
        return self._get(job_id).to_json()

    def job(self, job_id: str) -> Job:
        """The current record of a known job (KeyError otherwise)."""
        return self._jobs[job_id]

    def job_or_none(self, job_id: str) -> Job | None:
        """The current record of *job_id*, None once deleted."""
        return self._jobs.get(job_id)

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound("job not found", detail=job_id)
        return job

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """All jobs, newest first; only *status* ones when given (400 for unknown)."""
        if status is not None and status not in st.STATUSES:
            raise Invalid("invalid status filter", detail=f"status must be one of {', '.join(st.STATUSES)}",
                          fields={"status": "unknown status"})
        jobs = sorted(self._jobs.values(), key=lambda j: j.seq, reverse=True)
        return [j.to_json() for j in jobs if status is None or j.status == status]

    def queue_length(self) -> int:
        """Jobs waiting to encode."""
        return sum(1 for j in self._jobs.values() if j.status == st.QUEUED)

    def jobs_using_source(self, source_id: str) -> Deferred[builtins.list[dict[str, Any]]]:
        """Jobs that still need *source_id* (uploading, queued or encoding)."""
        return defer.succeed([j.to_json() for j in sorted(self._jobs.values(), key=lambda j: j.seq)
                              if j.source_id == source_id and j.status in st.ACTIVE])

    def log_lines(self, job_id: str) -> Deferred[builtins.list[str]]:
        """The job's log so far (read in a thread)."""
        self._get(job_id)
        return self.thread(self.logs.read, job_id)

    def log_count(self, job_id: str) -> int:
        """Lines written to the job's log by this process so far (0 when unknown)."""
        return self.logs._counts.get(job_id, 0)

    # ------------------------------------------------------------------ creating

    def create_jobs(self, source_id: str, source_name: str, options: EncodeOptions,
                    status: str = st.QUEUED) -> Deferred[builtins.list[dict[str, Any]]]:
        """One job per partial duration (names ``<output>_p<ms>`` when several); returns them."""
        d: Deferred[Any] = self.when_ready()
        d.addCallback(lambda _: self._create_jobs(source_id, source_name, options, status))
        return d

    def _create_jobs(self, source_id: str, source_name: str, options: EncodeOptions,
                     status: str) -> Deferred[builtins.list[dict[str, Any]]]:
        if status not in (st.QUEUED, st.UPLOADING):
            return defer.fail(ValueError(f"new jobs are queued or uploading, not {status!r}"))
        if "av1" in options.codecs(self.encoders) and not av1_encoder(self.encoders):
            return defer.fail(Invalid("invalid encode options", detail="no AV1 encoder in ffmpeg",
                                      fields={"codec_selection": "av1 needs an AV1 encoder"}))
        now = self.reactor.seconds()
        jobs: list[Job] = []
        for name, ms in job_names(options):
            self._seq += 1
            config = options.to_json()
            config.update(partial_duration=ms, source_name=source_name)
            job = st.new_job(name=name, source_id=source_id, config=config,
                             output_paths=content_names(name, options, self.encoders), now=now,
                             seq=self._seq, status=status)
            jobs.append(job)
        d: Deferred[Any] = defer.gatherResults([self.save(j) for j in jobs], consumeErrors=True)
        for job in jobs:
            self.log_line(job.job_id, f"job created for source {source_id} ({source_name}): {job.name} -> "
                                      f"{', '.join(job.output_paths)}")
        d.addCallback(lambda _: self._pump())
        d.addCallback(lambda _: [self._jobs[j.job_id].to_json() for j in jobs])
        return d

    @defer.inlineCallbacks
    def release_upload(self, job_ids: Iterable[str]) -> Any:
        """Uploaded: ``uploading`` jobs become ``queued``."""
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is not None and job.status == st.UPLOADING:
                yield self.save(st.transition(job, st.QUEUED, now=self.reactor.seconds()))
                self.log_line(job_id, "upload complete; queued")
        self._pump()

    @defer.inlineCallbacks
    def fail_jobs(self, job_ids: Iterable[str], error: str) -> Any:
        """Mark not-yet-finished jobs failed with *error*."""
        for job_id in job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.terminal:
                continue
            run = self._running.get(job_id)
            if run is not None:
                run.stop("cancel")
                yield run.finished
                job = self._jobs[job_id]
                if job.terminal:
                    continue
            self.log_line(job_id, f"failed: {error}")
            yield self.save(st.transition(job, st.FAILED, now=self.reactor.seconds(), error=error))
        self._pump()

    # ------------------------------------------------------------------ cancel / delete

    @defer.inlineCallbacks
    def cancel(self, job_id: str) -> Any:
        """queued/uploading/encoding -> cancelled (409 otherwise); returns the job once any
        running ffmpeg is gone and partial output removed."""
        job = self._get(job_id)
        if job.status not in st.ACTIVE:
            raise Conflict(f"job is {job.status}", detail="only uploading, queued or encoding jobs can be "
                                                          "cancelled", status_now=job.status)
        run = self._running.get(job_id)
        if run is not None:
            self.log_line(job_id, "cancel requested: terminating the encoder")
            run.stop("cancel")
            yield run.finished
        else:
            self.log_line(job_id, "cancelled")
            yield self.save(st.transition(self._jobs[job_id], st.CANCELLED, now=self.reactor.seconds()))
        return self._jobs[job_id].to_json()

    @defer.inlineCallbacks
    def delete(self, job_id: str) -> Any:
        """Remove the record and log, and the source when nothing else uses it (409 while
        uploading or encoding)."""
        job = self._get(job_id)
        if job.status in (st.ENCODING, st.UPLOADING) or job_id in self._running:
            raise Conflict(f"job is {job.status}", detail="cancel it first", status_now=job.status)
        del self._jobs[job_id]
        yield self.store.delete(job_id)
        self.logs.remove(job_id)
        self.bus.publish("jobs", {"type": "deleted", "job_id": job_id})
        source_deleted = False
        others = [j for j in self._jobs.values() if j.source_id == job.source_id]
        if not others and self.sources is not None:
            try:
                source = yield self.sources.get(job.source_id)
                used = yield self.thread(content_using, self.content_dir, source_labels(source))
                if not used:
                    yield self.sources.delete(job.source_id)
                    source_deleted = True
            except StreamlabError as exc:
                log.info("job {job_id} deleted; source {source_id} kept: {exc}", job_id=job_id,
                         source_id=job.source_id, exc=exc)
        return {"deleted": job_id, "source_deleted": source_deleted}

    # ------------------------------------------------------------------ queue

    def _pump(self) -> None:
        if not self._loaded or self._stopping:
            return
        queued = sorted((j for j in self._jobs.values() if j.status == st.QUEUED and j.job_id not in
                         self._running), key=lambda j: j.seq)
        while queued and len(self._running) < self.workers:
            job = queued.pop(0)
            run = Run(job.job_id)
            self._running[job.job_id] = run
            d = JobRunner(self, run).execute()
            d.addErrback(lambda f: log.failure("job runner crashed", f))
            d.addBoth(functools.partial(self._run_finished, run))

    def _run_finished(self, run: Run, _: object = None) -> Deferred[None]:
        d = self.thread(shutil.rmtree, os.path.join(self.work_root, run.job_id), True)
        d.addErrback(lambda f: log.failure("removing the work dir failed", f))

        def done(_: Any) -> None:
            self._running.pop(run.job_id, None)
            self.logs.close(run.job_id)
            run.finished.callback(None)
            self._pump()

        d.addCallback(done)
        return d

    # ------------------------------------------------------------------ helpers

    def show_progress(self, job: Job, *, publish: bool, persist: bool) -> None:
        """A running job's new progress: kept, and published and/or stored when asked."""
        self._jobs[job.job_id] = job
        if publish:
            self.publish(job)
        if persist:
            self.store.save(job).addErrback(lambda f: log.failure("saving job progress failed", f))

    def save(self, job: Job) -> Deferred[None]:
        """Record *job* (memory, bus, store); an end state also ends its stream."""
        self._jobs[job.job_id] = job
        self.publish(job)
        if job.terminal:
            self.bus.publish(f"job.{job.job_id}", {"type": "end", "status": job.status, "error": job.error})
        return self.store.save(job)

    def publish(self, job: Job) -> None:
        self.bus.publish(f"job.{job.job_id}", {"type": "progress", "progress": round(job.progress, 2),
                                               "stage": job.stage, "status": job.status,
                                               "eta_seconds": job.to_json()["eta_seconds"]})
        self.bus.publish("jobs", {"type": "job", "job": job.to_json()})

    def log_line(self, job_id: str, line: str) -> None:
        try:
            seq = self.logs.append(job_id, line)
        except OSError:
            log.failure("cannot write job log for {job_id}", job_id=job_id)
            return
        self.bus.publish(f"job.{job_id}", {"type": "log", "line": line, "seq": seq})

    def cleanup_partial(self, job: Job, outputs: Iterable[str]) -> Deferred[None]:
        names = list(outputs)
        return self.thread(remove_partial, self.work_root, self.content_dir, job.job_id,
                            list(job.output_paths), names)
