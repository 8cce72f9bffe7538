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

Progress (0-100, weighted across steps) and log lines are published on the event bus:
topic ``job.<job_id>`` gets ``{"type":"log"|"progress"|"end", ...}`` frames (the
WebSocket stream), topic ``jobs`` gets ``{"type":"job","job":{...}}`` on every change.

Cancel terminates the running ffmpeg's process group (SIGTERM, SIGKILL after
``kill_grace_seconds``) and removes partial output.  On start, jobs left ``encoding``
by a crash go back to ``queued`` (work dirs and packaging leftovers removed); on stop,
running encodes are terminated and recorded as ``queued`` so the next start redoes them.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task, threads, utils
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.errors import Conflict, Invalid, NotFound, StreamlabError
from streamlab.interfaces import IJobQueue
from streamlab.jobs import state as st
from streamlab.jobs.ladder import SourceFacts, font_or_none, output_frame_rate, plan_encode, plan_loop
from streamlab.jobs.logs import JobLogs
from streamlab.jobs.options import EncodeOptions, av1_encoder, content_names, job_names
from streamlab.jobs.process import FFmpegRun, ProcessFailed, kill_leftovers, leftover_pids, still_alive
from streamlab.jobs.progress import JobProgress, ProgressBlock
from streamlab.jobs.state import Job
from streamlab.jobs.store import JobStore

log = Logger()

PROGRESS_SAVE_INTERVAL = 2.0
LEFTOVER_WAIT_SECONDS = 10.0
PROGRESS_PUBLISH_INTERVAL = 0.25


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


class _Cancelled(Exception):
    """Internal: the run was cancelled or the daemon is stopping."""


class _Run:
    """Book-keeping of one running job."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.proc: FFmpegRun | None = None
        self.packaging: Deferred[Any] | None = None
        self.cancel_reason: str | None = None  # "cancel" | "stop"
        self.finished: Deferred[None] = Deferred()
        self.outputs_done: list[str] = []
        self.last_save = 0.0
        self.last_publish = 0.0

    def stop(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.proc is not None:
            self.proc.terminate()
        if self.packaging is not None and not self.packaging.called:
            self.packaging.cancel()

    def check(self) -> None:
        if self.cancel_reason is not None:
            raise _Cancelled(self.cancel_reason)


@implementer(IJobQueue)
class JobService(Service):
    """The job queue (``svc.components["jobs"]``)."""

    name = "jobs"

    def __init__(self, config: Any, reactor: Any, store: JobStore, *, bus: Any, sources: Any,
                 library: Any = None, logs: JobLogs | None = None, encoders: set[str] | None = None,
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
        self._package = package
        self._thread = thread_runner or (
            lambda fn, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *a))
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        self._running: dict[str, _Run] = {}
        self._loaded = False
        self._stopping = False
        self.ready: Deferred[None] = Deferred()

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        """Probe ffmpeg, load jobs, recover interrupted encodes, start the queue."""
        super().startService()
        self._stopping = False
        d = self._probe() if self._probe_encoders else defer.succeed(None)
        d.addCallback(lambda _: self.store.load_all())
        d.addCallback(self._recover)
        d.addCallback(lambda _: self._became_ready())
        d.addErrback(lambda f: log.failure("job service failed to start", f))

    def when_ready(self) -> Deferred[None]:
        """A fresh Deferred firing once the jobs are loaded (at once when they are)."""
        if self._loaded:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self.ready.addBoth(lambda r: (d.callback(None), r)[1])
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
        pids = yield self._thread(leftover_pids, self.work_root)
        if not pids:
            return
        log.warn("killing {n} leftover encoder process(es) of a previous daemon in {dir}: {pids}",
                 n=len(pids), dir=self.work_root, pids=pids)
        yield self._thread(kill_leftovers, pids)
        deadline = self.reactor.seconds() + LEFTOVER_WAIT_SECONDS
        while True:
            alive = yield self._thread(still_alive, pids)
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
                yield self._cleanup_partial(job, outputs=())
                new = st.transition(job, st.QUEUED, now=self.reactor.seconds(),
                                    stage="queued (requeued after restart)")
                self._log(job.job_id, "daemon restarted while encoding: partial output removed, job requeued")
                yield self._save(new)

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
                self._log(run.job_id, "daemon stopping: encode terminated, partial output removed; "
                                      "the job is requeued at the next start")
                self._save(st.transition(job, st.QUEUED, now=self.reactor.seconds(),
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

    def jobs_using_source(self, source_id: str) -> Deferred[list[dict[str, Any]]]:
        """Jobs that still need *source_id* (uploading, queued or encoding)."""
        return defer.succeed([j.to_json() for j in sorted(self._jobs.values(), key=lambda j: j.seq)
                              if j.source_id == source_id and j.status in st.ACTIVE])

    def log_lines(self, job_id: str) -> Deferred[list[str]]:
        """The job's log so far (read in a thread)."""
        self._get(job_id)
        return self._thread(self.logs.read, job_id)

    def log_count(self, job_id: str) -> int:
        """Lines written to the job's log by this process so far (0 when unknown)."""
        return self.logs._counts.get(job_id, 0)

    # ------------------------------------------------------------------ creating

    def create_jobs(self, source_id: str, source_name: str, options: EncodeOptions,
                    status: str = st.QUEUED) -> Deferred[list[dict[str, Any]]]:
        """One job per partial duration (names ``<output>_p<ms>`` when several); returns them."""
        d = self.when_ready()
        d.addCallback(lambda _: self._create_jobs(source_id, source_name, options, status))
        return d

    def _create_jobs(self, source_id: str, source_name: str, options: EncodeOptions,
                     status: str) -> Deferred[list[dict[str, Any]]]:
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
        d = defer.gatherResults([self._save(j) for j in jobs], consumeErrors=True)
        for job in jobs:
            self._log(job.job_id, f"job created for source {source_id} ({source_name}): {job.name} -> "
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
                yield self._save(st.transition(job, st.QUEUED, now=self.reactor.seconds()))
                self._log(job_id, "upload complete; queued")
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
            self._log(job_id, f"failed: {error}")
            yield self._save(st.transition(job, st.FAILED, now=self.reactor.seconds(), error=error))
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
            self._log(job_id, "cancel requested: terminating the encoder")
            run.stop("cancel")
            yield run.finished
        else:
            self._log(job_id, "cancelled")
            yield self._save(st.transition(self._jobs[job_id], st.CANCELLED, now=self.reactor.seconds()))
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
                used = yield self._thread(_content_using, self.content_dir, _source_labels(source))
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
            run = _Run(job.job_id)
            self._running[job.job_id] = run
            d = self._run(run)
            d.addErrback(lambda f: log.failure("job runner crashed", f))
            d.addBoth(lambda _, r=run: self._run_finished(r))

    @defer.inlineCallbacks
    def _run(self, run: _Run) -> Any:
        job_id = run.job_id
        job = self._jobs[job_id]
        work_dir = os.path.join(self.work_root, job_id)
        outputs = list(job.output_paths)
        try:
            yield self._save(st.transition(job, st.ENCODING, now=self.reactor.seconds(), stage="probe"))
            self._log(job_id, f"encoding {job.name}: probing source {job.source_id}")
            source = yield self.sources.get(job.source_id)
            run.check()
            if source.get("status", "ready") != "ready":
                raise RuntimeError(f"source is {source.get('status')}: {source.get('error')}")
            path = self.sources.path_of(source)
            facts = SourceFacts(path=path, width=int(source.get("width") or 0),
                                height=int(source.get("height") or 0), fps=float(source.get("fps") or 0),
                                duration=float(source.get("duration") or 0),
                                has_audio=bool(source.get("audio_codec")))
            if facts.duration <= 0:
                raise RuntimeError("source duration unknown")
            options = EncodeOptions.from_json(job.config)
            codecs = options.codecs(self.encoders)
            if "av1" in codecs and not av1_encoder(self.encoders):
                raise RuntimeError("no AV1 encoder in ffmpeg")
            if not self.ffmpeg_found:
                raise RuntimeError(f"ffmpeg ({self.ffmpeg}) was not found or does not run")
            if self.font is None:
                self._log(job_id, "warning: font not found, rung labels and frame counters are not burned in")
            yield self._thread(_fresh_dir, work_dir)
            steps = plan_encode(ffmpeg=self.ffmpeg, source=facts, options=options, codecs=codecs,
                                encoders=self.encoders, work_dir=work_dir, font=self.font)
            loop = plan_loop(facts, options)
            self._log(job_id, loop.describe())
            tracker = JobProgress([s.weight for s in steps], [s.duration for s in steps],
                                  started=self.reactor.seconds())
            for i, step in enumerate(steps):
                run.check()
                tracker.step_started(i)
                self._progress(run, tracker, step.stage, force=True)
                self._log(job_id, f"{step.stage}: {_quote(step.argv)}")
                proc = FFmpegRun(self.reactor, step.argv, kill_grace=self.kill_grace,
                                 on_line=lambda line: self._log(job_id, line),
                                 on_progress=lambda b, st_=step.stage: self._on_block(run, tracker, st_, b))
                run.proc = proc
                try:
                    yield proc.start()
                finally:
                    run.proc = None
                run.check()
            part = int(job.config.get("partial_duration") or options.partial_durations[0]) / 1000.0
            fps = float(output_frame_rate(facts.fps))
            from streamlab.media.packager import RungInput

            for k, codec in enumerate(codecs):
                run.check()
                name = f"{job.name}_{codec}"
                tracker.packaging(k / len(codecs))
                self._progress(run, tracker, "package", force=True)
                rungs = [RungInput(s.rung, s.output, codec) for s in steps
                         if s.kind == "video" and s.codec == codec]
                out_dir = os.path.join(self.content_dir, name)
                self._log(job_id, f"package {name}: {len(rungs)} rungs -> {out_dir}")
                d = self._package(self.reactor, ffmpeg=self.ffmpeg, out_dir=out_dir, name=name,
                                  source=os.path.basename(path), codec=codec, rungs=rungs,
                                  audio_path=steps[0].output, segment_duration=options.segment_duration,
                                  part_duration=part, gop_duration=options.gop_duration,
                                  ts=options.hls_format in ("ts", "both"),
                                  log=lambda line: self._log(job_id, line), frame_rate=fps,
                                  extra={"loop": loop.to_json()})
                run.packaging = d
                try:
                    index = yield d
                finally:
                    run.packaging = None
                run.outputs_done.append(name)
                self._log(job_id, f"packaged {name}: {_describe(index)}")
            run.check()
            tracker.packaging(1.0)
            self._progress(run, tracker, "index", force=True)
            if self.library is not None:
                yield defer.maybeDeferred(self.library.refresh)
            run.check()
            done = st.transition(self._jobs[job_id], st.COMPLETE, now=self.reactor.seconds())
            self._log(job_id, f"complete: {', '.join(outputs)}")
            yield self._save(done)
        except Exception as exc:  # noqa: BLE001 - every failure ends the job cleanly
            reason = run.cancel_reason
            if reason is None and isinstance(exc, defer.CancelledError):
                reason = "cancel"
            yield self._cleanup_partial(self._jobs[job_id], outputs=run.outputs_done)
            job_now = self._jobs[job_id]
            if reason == "stop":
                pass  # recorded as queued by stopService
            elif reason == "cancel":
                if not job_now.terminal:
                    self._log(job_id, "cancelled: encoder terminated, partial output removed")
                    yield self._save(st.transition(job_now, st.CANCELLED, now=self.reactor.seconds()))
            else:
                message = _error_text(exc)
                self._log(job_id, f"failed: {message}")
                if not isinstance(exc, (ProcessFailed, StreamlabError, RuntimeError, ValueError, OSError)):
                    log.failure("job {job_id} failed unexpectedly", job_id=job_id)
                if not job_now.terminal:
                    yield self._save(st.transition(job_now, st.FAILED, now=self.reactor.seconds(),
                                                   error=message, stage=f"failed ({job_now.stage})"))

    def _run_finished(self, run: _Run) -> Deferred[None]:
        d = self._thread(shutil.rmtree, os.path.join(self.work_root, run.job_id), True)
        d.addErrback(lambda f: log.failure("removing the work dir failed", f))

        def done(_: Any) -> None:
            self._running.pop(run.job_id, None)
            self.logs.close(run.job_id)
            run.finished.callback(None)
            self._pump()

        d.addCallback(done)
        return d

    # ------------------------------------------------------------------ helpers

    def _on_block(self, run: _Run, tracker: JobProgress, stage: str, block: ProgressBlock) -> None:
        tracker.update(block)
        self._progress(run, tracker, stage, force=block.end)

    def _progress(self, run: _Run, tracker: JobProgress, stage: str, force: bool = False) -> None:
        job = self._jobs.get(run.job_id)
        if job is None or job.status != st.ENCODING or run.cancel_reason is not None:
            return
        now = self.reactor.seconds()
        new = st.with_progress(job, tracker.percent, stage, tracker.eta(now))
        self._jobs[run.job_id] = new
        if force or now - run.last_publish >= PROGRESS_PUBLISH_INTERVAL:
            run.last_publish = now
            self._publish(new)
        if force or now - run.last_save >= PROGRESS_SAVE_INTERVAL:
            run.last_save = now
            self.store.save(new).addErrback(lambda f: log.failure("saving job progress failed", f))

    def _save(self, job: Job) -> Deferred[None]:
        self._jobs[job.job_id] = job
        self._publish(job)
        if job.terminal:
            self.bus.publish(f"job.{job.job_id}", {"type": "end", "status": job.status, "error": job.error})
        return self.store.save(job)

    def _publish(self, job: Job) -> None:
        self.bus.publish(f"job.{job.job_id}", {"type": "progress", "progress": round(job.progress, 2),
                                               "stage": job.stage, "status": job.status,
                                               "eta_seconds": job.to_json()["eta_seconds"]})
        self.bus.publish("jobs", {"type": "job", "job": job.to_json()})

    def _log(self, job_id: str, line: str) -> None:
        try:
            seq = self.logs.append(job_id, line)
        except OSError:
            log.failure("cannot write job log for {job_id}", job_id=job_id)
            return
        self.bus.publish(f"job.{job_id}", {"type": "log", "line": line, "seq": seq})

    def _cleanup_partial(self, job: Job, outputs: Iterable[str]) -> Deferred[None]:
        names = list(outputs)
        return self._thread(_remove_partial, self.work_root, self.content_dir, job.job_id,
                            list(job.output_paths), names)


# ---------------------------------------------------------------------- blocking helpers (threads)


def _fresh_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def _remove_partial(work_root: str, content_dir: str, job_id: str, names: list[str],
                    finished: list[str]) -> None:
    """Remove a job's work dir, the packager's staging dirs of its outputs and the items
    this run already swapped in (*finished*)."""
    shutil.rmtree(os.path.join(work_root, job_id), ignore_errors=True)
    for name in names:
        for stage in glob.glob(os.path.join(glob.escape(content_dir), f".{glob.escape(name)}.partial-*")):
            shutil.rmtree(stage, ignore_errors=True)
    for name in finished:
        shutil.rmtree(os.path.join(content_dir, name), ignore_errors=True)


def _source_labels(source: dict[str, Any]) -> set[str]:
    labels = {os.path.basename(str(source.get("file_path") or ""))}
    labels.discard("")
    return labels


def _content_using(content_dir: str, labels: set[str]) -> list[str]:
    """Content items whose content.json names one of *labels* as its source."""
    import json

    used = []
    try:
        names = os.listdir(content_dir)
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(content_dir, name, "content.json")
        try:
            with open(path, encoding="utf-8") as fh:
                source = json.load(fh).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if source in labels:
            used.append(name)
    return used


def _quote(argv: Iterable[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def _describe(index: Any) -> str:
    try:
        rungs = ", ".join(f"{t.id} {t.bandwidth // 1000}k" for t in index.video)
        return f"{index.segment_count} segments x {index.segment_duration:g}s; {rungs}"
    except AttributeError:
        return "ok"


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, StreamlabError):
        return f"{exc.error}: {exc.detail}" if exc.detail else exc.error
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
