"""One job's run for the :class:`~streamlab.jobs.service.JobService`: probe the source,
run the encode steps (one ffmpeg child each), package per codec, refresh the library;
then record how it ended (complete, cancelled, failed, or left for the next start).

:class:`Run` is the book-keeping the queue keeps per running job (what to stop on a
cancel); :class:`JobRunner` carries out the stages.  The service stays the owner of the
job records: the runner reads and writes them only through its ``job``/``save``/
``log_line``/``show_progress`` methods.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from streamlab.errors import StreamlabError
from streamlab.ffmpeg import FFmpegChild, FFmpegError, ProcessReactor
from streamlab.jobs import state as st
from streamlab.jobs.ladder import EncodeStep, SourceFacts, output_frame_rate, plan_encode, plan_loop
from streamlab.jobs.options import EncodeOptions, av1_encoder
from streamlab.jobs.process import encode_child
from streamlab.jobs.progress import JobProgress, ProgressBlock
from streamlab.jobs.workdirs import fresh_dir

if TYPE_CHECKING:
    from streamlab.jobs.service import JobService

log = Logger()

PROGRESS_SAVE_INTERVAL = 2.0
PROGRESS_PUBLISH_INTERVAL = 0.25


class Cancelled(Exception):
    """The run was cancelled or the daemon is stopping."""


class Run:
    """Book-keeping of one running job."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.proc: FFmpegChild | None = None
        self.packaging: Deferred[Any] | None = None
        self.cancel_reason: str | None = None  # "cancel" | "stop"
        self.finished: Deferred[None] = Deferred()
        self.outputs_done: list[str] = []
        self.last_save = 0.0
        self.last_publish = 0.0

    def stop(self, reason: str) -> None:
        """Cancel (*reason* "cancel") or interrupt ("stop"): terminate what runs now."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.proc is not None:
            self.proc.terminate()
        if self.packaging is not None and not self.packaging.called:
            self.packaging.cancel()

    def check(self) -> None:
        """Raise :class:`Cancelled` once the run was told to stop."""
        if self.cancel_reason is not None:
            raise Cancelled(self.cancel_reason)


class JobRunner:
    """Runs the stages of one job (see the module docstring)."""

    def __init__(self, service: JobService, run: Run) -> None:
        self.svc = service
        self.run = run
        self.job_id = run.job_id
        self.tracker = JobProgress([], [], started=service.reactor.seconds())

    @defer.inlineCallbacks
    def execute(self) -> Any:
        """Run the job to its end; never fails (every outcome is recorded on the job)."""
        svc, run, job_id = self.svc, self.run, self.job_id
        job = svc.job(job_id)
        try:
            yield svc.save(st.transition(job, st.ENCODING, now=svc.reactor.seconds(), stage="probe"))
            svc.log_line(job_id, f"encoding {job.name}: probing source {job.source_id}")
            source = yield svc.sources.get(job.source_id)
            run.check()
            facts, options, codecs = self._check(source, job)
            work_dir = os.path.join(svc.work_root, job_id)
            yield svc.thread(fresh_dir, work_dir)
            steps = plan_encode(ffmpeg=svc.ffmpeg, source=facts, options=options, codecs=codecs,
                                encoders=svc.encoders, work_dir=work_dir, font=svc.font)
            loop = plan_loop(facts, options)
            svc.log_line(job_id, loop.describe())
            self.tracker = JobProgress([s.weight for s in steps], [s.duration for s in steps],
                                       started=svc.reactor.seconds())
            yield self._encode(steps)
            yield self._package(job, facts, options, codecs, steps, {"loop": loop.to_json()})
            run.check()
            self.tracker.packaging(1.0)
            self._progress("index", force=True)
            if svc.library is not None:
                yield defer.maybeDeferred(svc.library.refresh)
            run.check()
            svc.log_line(job_id, f"complete: {', '.join(job.output_paths)}")
            yield svc.save(st.transition(svc.job(job_id), st.COMPLETE, now=svc.reactor.seconds()))
        except Exception as exc:  # noqa: BLE001 - every failure ends the job cleanly
            yield self._ended_early(exc)

    def _check(self, source: dict[str, Any],
               job: st.Job) -> tuple[SourceFacts, EncodeOptions, tuple[str, ...]]:
        """The source's facts, the options and codecs, or RuntimeError saying why not."""
        svc = self.svc
        if source.get("status", "ready") != "ready":
            raise RuntimeError(f"source is {source.get('status')}: {source.get('error')}")
        facts = SourceFacts(path=svc.sources.path_of(source), width=int(source.get("width") or 0),
                            height=int(source.get("height") or 0), fps=float(source.get("fps") or 0),
                            duration=float(source.get("duration") or 0),
                            has_audio=bool(source.get("audio_codec")))
        if facts.duration <= 0:
            raise RuntimeError("source duration unknown")
        options = EncodeOptions.from_json(job.config)
        codecs = options.codecs(svc.encoders)
        if "av1" in codecs and not av1_encoder(svc.encoders):
            raise RuntimeError("no AV1 encoder in ffmpeg")
        if not svc.ffmpeg_found:
            raise RuntimeError(f"ffmpeg ({svc.ffmpeg}) was not found or does not run")
        if svc.font is None:
            svc.log_line(job.job_id, "warning: font not found, rung labels and frame counters are not "
                                     "burned in")
        return facts, options, codecs

    @defer.inlineCallbacks
    def _encode(self, steps: list[EncodeStep]) -> Any:
        svc, run, job_id = self.svc, self.run, self.job_id
        for i, step in enumerate(steps):
            run.check()
            self.tracker.step_started(i)
            self._progress(step.stage, force=True)
            svc.log_line(job_id, f"{step.stage}: {_quote(step.argv)}")

            def on_block(block: ProgressBlock, stage: str = step.stage) -> None:
                self.tracker.update(block)
                self._progress(stage, force=block.end)

            # the daemon reactor provides IReactorProcess; mypy cannot match a zope
            # interface against the ProcessReactor protocol structurally
            proc = encode_child(cast(ProcessReactor, svc.reactor), step.argv, kill_grace=svc.kill_grace,
                                on_line=lambda line: svc.log_line(job_id, line), on_progress=on_block)
            run.proc = proc
            try:
                yield proc.start().when_exited()
            finally:
                run.proc = None
            run.check()

    @defer.inlineCallbacks
    def _package(self, job: st.Job, facts: SourceFacts, options: EncodeOptions, codecs: tuple[str, ...],
                 steps: list[EncodeStep], extra: dict[str, Any]) -> Any:
        from streamlab.media.packager import RungInput

        svc, run, job_id = self.svc, self.run, self.job_id
        part = int(job.config.get("partial_duration") or options.partial_durations[0]) / 1000.0
        fps = float(output_frame_rate(facts.fps))
        for k, codec in enumerate(codecs):
            run.check()
            name = f"{job.name}_{codec}"
            self.tracker.packaging(k / len(codecs))
            self._progress("package", force=True)
            rungs = [RungInput(s.rung, s.output, codec) for s in steps
                     if s.kind == "video" and s.codec == codec]
            out_dir = os.path.join(svc.content_dir, name)
            svc.log_line(job_id, f"package {name}: {len(rungs)} rungs -> {out_dir}")
            d = svc.package(svc.reactor, ffmpeg=svc.ffmpeg, out_dir=out_dir, name=name,
                            source=os.path.basename(facts.path), codec=codec, rungs=rungs,
                            audio_path=steps[0].output, segment_duration=options.segment_duration,
                            part_duration=part, gop_duration=options.gop_duration,
                            ts=options.hls_format in ("ts", "both"),
                            log=lambda line: svc.log_line(job_id, line), frame_rate=fps,
                            kill_grace=svc.kill_grace, extra=extra)
            run.packaging = d
            try:
                index = yield d
            finally:
                run.packaging = None
            run.outputs_done.append(name)
            svc.log_line(job_id, f"packaged {name}: {_describe(index)}")

    @defer.inlineCallbacks
    def _ended_early(self, exc: Exception) -> Any:
        """Remove the partial output and record a cancel or a failure (a daemon stop was
        recorded as queued by the service already)."""
        svc, run, job_id = self.svc, self.run, self.job_id
        reason = run.cancel_reason
        if reason is None and isinstance(exc, defer.CancelledError):
            reason = "cancel"
        yield svc.cleanup_partial(svc.job(job_id), outputs=run.outputs_done)
        job_now = svc.job(job_id)
        if reason == "stop":
            return
        if reason == "cancel":
            if not job_now.terminal:
                svc.log_line(job_id, "cancelled: encoder terminated, partial output removed")
                yield svc.save(st.transition(job_now, st.CANCELLED, now=svc.reactor.seconds()))
            return
        message = error_text(exc)
        svc.log_line(job_id, f"failed: {message}")
        if not isinstance(exc, (FFmpegError, StreamlabError, RuntimeError, ValueError, OSError)):
            log.failure("job {job_id} failed unexpectedly", job_id=job_id)
        if not job_now.terminal:
            yield svc.save(st.transition(job_now, st.FAILED, now=svc.reactor.seconds(),
                                         error=message, stage=f"failed ({job_now.stage})"))

    def _progress(self, stage: str, force: bool = False) -> None:
        """Show the tracker's percent and ETA on the job: published at most every
        0.25 s, stored at most every 2 s (always when *force*)."""
        run = self.run
        job = self.svc.job_or_none(run.job_id)
        if job is None or job.status != st.ENCODING or run.cancel_reason is not None:
            return
        now = self.svc.reactor.seconds()
        publish = force or now - run.last_publish >= PROGRESS_PUBLISH_INTERVAL
        persist = force or now - run.last_save >= PROGRESS_SAVE_INTERVAL
        if publish:
            run.last_publish = now
        if persist:
            run.last_save = now
        self.svc.show_progress(st.with_progress(job, self.tracker.percent, stage, self.tracker.eta(now)),
                               publish=publish, persist=persist)


def _quote(argv: Iterable[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _describe(index: Any) -> str:
    try:
        rungs = ", ".join(f"{t.id} {t.bandwidth // 1000}k" for t in index.video)
        return f"{index.segment_count} segments x {index.segment_duration:g}s; {rungs}"
    except AttributeError:
        return "ok"


def error_text(exc: BaseException) -> str:
    """One line for a job's ``error``: a StreamlabError's error and detail, else the
    exception's first line."""
    if isinstance(exc, StreamlabError):
        return f"{exc.error}: {exc.detail}" if exc.detail else exc.error
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
