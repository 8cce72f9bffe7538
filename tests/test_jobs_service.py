"""JobService with a fake process reactor: argv, progress, cancel (SIGTERM then SIGKILL),
FIFO queue, failures, stop and restart recovery."""

import os
import signal

import pytest
from twisted.internet import defer

from streamlab import config as configmod
from streamlab.errors import Conflict, NotFound
from streamlab.events import EventBus
from streamlab.jobs import state as st
from streamlab.jobs.options import parse_encode_options
from streamlab.jobs.service import JobService, parse_encoders
from streamlab.jobs.store import MemoryJobStore
from streamlab.testing.fakeprocess import FakeProcessReactor

ENC = {"libx264", "libx265", "aac"}
SRC_ID = "0b7d6f1e-8d0a-4a8c-9a57-5d2f2f7f0c11"


class FakeSources:
    def __init__(self, media_dir):
        self.media_dir = media_dir
        self.deleted = []
        self.source = {"source_id": SRC_ID, "name": "clip", "file_path": "originals/clip.mp4", "width": 320,
                       "height": 180, "fps": 30.0, "duration": 12.0, "audio_codec": None, "status": "ready"}

    def get(self, source_id):
        if source_id != SRC_ID or SRC_ID in self.deleted:
            return defer.fail(NotFound("source not found"))
        return defer.succeed(dict(self.source))

    def path_of(self, source):
        return os.path.join(self.media_dir, source["file_path"])

    def delete(self, source_id):
        self.deleted.append(source_id)
        return defer.succeed({})


class FakePackager:
    def __init__(self):
        self.calls = []
        self.pending = []

    def __call__(self, reactor, **kw):
        self.calls.append(kw)
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def finish(self):
        d = self.pending.pop(0)
        d.callback(None)


class Library:
    refreshed = 0

    def refresh(self):
        self.refreshed += 1


@pytest.fixture
def env(tmp_path):
    cfg = configmod.load(None, {"media-dir": str(tmp_path / "media"), "state-dir": str(tmp_path / "state"),
                                "kill-grace-seconds": "5"})
    reactor = FakeProcessReactor()
    reactor.advance(1_700_000_000)
    store = MemoryJobStore()
    bus = EventBus()
    frames = []
    bus.subscribe("jobs", lambda e: None)

    class Env:
        pass

    e = Env()
    e.cfg, e.reactor, e.store, e.bus, e.frames = cfg, reactor, store, bus, frames
    e.sources = FakeSources(cfg.paths.media_dir)
    e.packager = FakePackager()
    e.library = Library()

    def make(encoders=ENC, package=e.packager, **kw):
        svc = JobService(cfg, reactor, store, bus=bus, sources=e.sources, library=e.library,
                         encoders=encoders,
                         package=package, font="/fonts/mono.ttf",
                         thread_runner=lambda fn, *a: defer.maybeDeferred(fn, *a), **kw)
        svc.startService()
        return svc

    e.make = make
    return e


def opts(**raw):
    raw.setdefault("codec_selection", "h264")
    return parse_encode_options(raw, source_name="clip.mp4", source_height=180, encoders=ENC)


def create(svc, **raw):
    d = svc.create_jobs(SRC_ID, "clip.mp4", opts(**raw))
    result = []
    d.addCallback(result.append)
    assert result, "create_jobs should fire synchronously with a memory store"
    return result[0]


def raise_failure(d):
    failures = []
    d.addErrback(failures.append)
    if failures:
        failures[0].raiseException()


def run_step(reactor, out_time=12.0):
    proc = reactor.running[-1]
    proc.err(b"frame=  1 fps=0.0\rsome ffmpeg line\n")
    proc.out(f"frame=180\nout_time_us={int(out_time * 500000)}\nspeed=2x\nprogress=continue\n".encode())
    proc.out(f"frame=360\nout_time_us={int(out_time * 1e6)}\nprogress=end\n".encode())
    proc.exit(0)
    return proc


def test_encoders_parser():
    out = b"Encoders:\n V..... = Video\n ------\n V....D libx264  libx264 H.264\n A..... aac   AAC\n"
    assert parse_encoders(out) == {"libx264", "aac"}


def test_job_runs_to_complete(env):
    svc = env.make()
    frames = []
    jobs = create(svc, output_name="show")
    job_id = jobs[0]["job_id"]
    env.bus.subscribe(f"job.{job_id}", frames.append)
    assert jobs[0]["name"] == "show" and jobs[0]["output_paths"] == ["show_h264"]
    # started at once: audio first, dying with the daemon, in its own process group at nice 10
    audio = env.reactor.running[0]
    assert audio.executable.endswith("setpriv")
    assert audio.args[:3] == [audio.executable, "--pdeathsig", "KILL"]
    assert audio.args[3].endswith("setsid") and audio.args[4] == "-w"
    assert audio.args[5].endswith("nice") and audio.args[6:8] == ["-n", "10"]
    assert "anullsrc=r=48000:cl=stereo" in audio.args  # source has no audio
    assert svc.get(job_id)["status"] == "encoding" and svc.get(job_id)["stage"] == "encode audio"
    run_step(env.reactor)
    video = env.reactor.running[0]
    assert "libx264" in video.args and svc.get(job_id)["stage"] == "encode 360p h264 (1/1)"
    p_before = svc.get(job_id)["progress"]
    video.out(b"out_time_us=6000000\nprogress=continue\n")
    mid = svc.get(job_id)
    assert p_before < mid["progress"] < 95
    env.reactor.advance(2)
    video.out(b"out_time_us=9000000\nprogress=continue\n")
    assert svc.get(job_id)["eta_seconds"] is not None
    run_step(env.reactor)
    # packaging with the packager contract
    assert svc.get(job_id)["stage"] == "package"
    call = env.packager.calls[0]
    assert call["name"] == "show_h264" and call["codec"] == "h264" and call["part_duration"] == 0.2
    assert call["out_dir"] == os.path.join(env.cfg.paths.media_dir, "dynamic_content", "show_h264")
    assert [r.id for r in call["rungs"]] == ["360p"] and call["audio_path"].endswith("audio.mp4")
    env.packager.finish()
    job = svc.get(job_id)
    assert job["status"] == "complete" and job["progress"] == 100.0 and job["completed_at"]
    assert env.library.refreshed == 1
    kinds = [f["type"] for f in frames]
    assert "log" in kinds and "progress" in kinds and kinds[-1] == "end"
    assert frames[-1] == {"type": "end", "status": "complete", "error": None}
    lines = svc.logs.read(job_id)
    assert any("some ffmpeg line" in x for x in lines) and any("complete" in x for x in lines)
    assert not os.path.exists(os.path.join(env.cfg.paths.state_dir, "work", job_id))


def test_cancel_sends_sigterm_then_sigkill_after_grace(env):
    svc = env.make()
    job_id = create(svc)[0]["job_id"]
    run_step(env.reactor)  # audio done
    proc = env.reactor.running[0]
    os.makedirs(os.path.join(env.cfg.paths.state_dir, "work", job_id), exist_ok=True)
    result = []
    svc.cancel(job_id).addCallback(result.append)
    assert env.reactor.group_signals == [(proc.pid, signal.SIGTERM)]
    assert not result
    env.reactor.advance(4.9)
    assert env.reactor.group_signals == [(proc.pid, signal.SIGTERM)]
    env.reactor.advance(0.2)
    assert env.reactor.group_signals[-1] == (proc.pid, signal.SIGKILL)
    proc.exit(sig=signal.SIGKILL)
    assert result and result[0]["status"] == "cancelled"
    assert not os.path.exists(os.path.join(env.cfg.paths.state_dir, "work", job_id))
    assert env.packager.calls == []
    with pytest.raises(Conflict):
        raise_failure(svc.cancel(job_id))
    assert env.reactor.running == []


def test_cancel_that_exits_on_sigterm_sends_no_sigkill(env):
    svc = env.make()
    job_id = create(svc)[0]["job_id"]
    proc = env.reactor.running[0]
    svc.cancel(job_id)
    proc.exit(sig=signal.SIGTERM)
    env.reactor.advance(10)
    assert [s for _, s in env.reactor.group_signals] == [signal.SIGTERM]
    assert svc.get(job_id)["status"] == "cancelled"


def test_fifo_one_worker_and_cancel_queued(env):
    svc = env.make()
    a = create(svc)[0]["job_id"]
    b = create(svc)[0]["job_id"]
    c = create(svc)[0]["job_id"]
    assert len(env.reactor.processes) == 1 and svc.queue_length() == 2
    assert [j["job_id"] for j in svc.list()] == [c, b, a]
    assert [j["job_id"] for j in svc.list("queued")] == [c, b]
    svc.cancel(b)
    assert svc.get(b)["status"] == "cancelled" and svc.queue_length() == 1
    run_step(env.reactor)
    run_step(env.reactor)
    env.packager.finish()
    assert svc.get(a)["status"] == "complete"
    assert svc.get(c)["status"] == "encoding"  # b was skipped


def test_ffmpeg_failure_fails_the_job_and_queue_moves_on(env):
    svc = env.make()
    a = create(svc)[0]["job_id"]
    b = create(svc)[0]["job_id"]
    proc = env.reactor.running[0]
    proc.err(b"Error opening input: No such file or directory\n")
    proc.exit(1)
    job = svc.get(a)
    assert job["status"] == "failed" and "exit code 1" in job["error"] and "No such file" in job["error"]
    assert svc.get(b)["status"] == "encoding"


def _finish_writing(reactor):
    """A fake encode step that wrote its output file (the argv ends with it) and exited 0."""
    proc = reactor.running[0]
    os.makedirs(os.path.dirname(proc.args[-1]), exist_ok=True)
    with open(proc.args[-1], "wb") as fh:
        fh.write(b"encoded")
    proc.exit(0)


@pytest.mark.parametrize("how,error", [
    ("exit", "ffmpeg failed (exit code 1): out of cheese"),
    ("signal", "ffmpeg failed (killed by signal 9 SIGKILL): out of cheese"),
])
def test_encoder_and_packager_ffmpeg_failures_read_the_same(env, how, error):
    """The same ffmpeg failure, once in an encode step and once in the (real) packager,
    gives the job the same error text."""
    from streamlab.media.packager import package

    svc = env.make(package=package)
    errors = []
    for step in ("encode", "package"):
        job_id = create(svc, output_name=f"{how}_{step}")[0]["job_id"]
        if step == "package":
            _finish_writing(env.reactor)  # audio
            _finish_writing(env.reactor)  # 360p
            assert "dash" in env.reactor.running[0].args and svc.get(job_id)["stage"] == "package"
        proc = env.reactor.running[0]
        proc.err(b"out of cheese\n")
        proc.exit(1) if how == "exit" else proc.exit(sig=signal.SIGKILL)
        job = svc.get(job_id)
        assert job["status"] == "failed"
        errors.append(job["error"])
    assert errors == [error, error]
    assert not [d for d in os.listdir(os.path.join(env.cfg.paths.media_dir, "dynamic_content"))]


def test_missing_source_fails(env):
    svc = env.make()
    env.sources.deleted.append(SRC_ID)
    job_id = create(svc)[0]["job_id"]
    assert svc.get(job_id)["status"] == "failed" and "source not found" in svc.get(job_id)["error"]


def test_several_partial_durations_make_several_jobs(env):
    svc = env.make()
    jobs = create(svc, output_name="myshow", partial_durations="200,500", codec_selection="both")
    assert [j["name"] for j in jobs] == ["myshow_p200", "myshow_p500"]
    assert jobs[1]["output_paths"] == ["myshow_p500_h264", "myshow_p500_hevc"]


def test_uploading_jobs_wait_for_release(env):
    svc = env.make()
    d = svc.create_jobs(SRC_ID, "clip.mp4", opts(), status="uploading")
    job_id = d.result[0]["job_id"]
    assert env.reactor.processes == [] and svc.queue_length() == 0
    assert [j["job_id"] for j in svc.jobs_using_source(SRC_ID).result] == [job_id]
    svc.release_upload([job_id])
    assert svc.get(job_id)["status"] == "encoding"


def test_fail_jobs(env):
    svc = env.make()
    job_id = svc.create_jobs(SRC_ID, "clip.mp4", opts(), status="uploading").result[0]["job_id"]
    svc.fail_jobs([job_id], "upload abandoned")
    assert svc.get(job_id)["status"] == "failed" and svc.get(job_id)["error"] == "upload abandoned"


def test_delete_rules(env):
    svc = env.make()
    job_id = create(svc)[0]["job_id"]
    with pytest.raises(Conflict):
        raise_failure(svc.delete(job_id))
    svc.cancel(job_id)
    env.reactor.running[0].exit(sig=signal.SIGTERM)
    result = svc.delete(job_id).result
    assert result == {"deleted": job_id, "source_deleted": True}
    assert env.sources.deleted == [SRC_ID]
    with pytest.raises(NotFound):
        svc.get(job_id)
    assert job_id not in env.store.rows and not os.path.exists(svc.logs.path(job_id))


def test_stop_records_running_as_queued_and_restart_requeues(env):
    svc = env.make()
    job_id = create(svc)[0]["job_id"]
    proc = env.reactor.running[0]
    stopped = svc.stopService()
    assert (proc.pid, signal.SIGTERM) in env.reactor.group_signals
    proc.exit(sig=signal.SIGTERM)
    assert stopped.called
    assert env.store.rows[job_id][4] == "queued"
    # a crash leaves "encoding" in the store: the next start requeues it and removes leftovers
    job = next(iter(env.store.load_all().result))
    env.store.save(st.Job(**{**job.__dict__, "status": "encoding"}))
    work = os.path.join(env.cfg.paths.state_dir, "work", job_id)
    staging = os.path.join(env.cfg.paths.media_dir, "dynamic_content", ".clip_h264.partial-abcd")
    os.makedirs(work)
    os.makedirs(staging)
    svc2 = env.make()
    assert not os.path.exists(staging)
    assert svc2.get(job_id)["status"] == "encoding"  # requeued and picked up again
    assert len(env.reactor.running) == 1
    assert any("requeued" in line for line in svc2.logs.read(job_id))
