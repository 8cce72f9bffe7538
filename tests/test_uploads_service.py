"""UploadService with a real sqlite database, a fake job service and a Clock-driven sweeper."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from streamlab import config as configmod
from streamlab.errors import Conflict, NotFound, TooLarge
from streamlab.sources.service import SourceService
from streamlab.storage.db import Database
from streamlab.uploads.service import UploadService


class FakeJobs:
    """Collaborator fake with the JobService surface uploads use."""

    def __init__(self) -> None:
        self.encoders: set[str] = set()
        self.jobs: dict[str, dict] = {}
        self.failed: list[tuple[list[str], str]] = []
        self.released: list[list[str]] = []

    def create_jobs(self, source_id, source_name, options, status="queued"):
        out = []
        for ms in options.partial_durations:
            job = {"job_id": str(uuid.uuid4()), "source_id": source_id, "status": status, "ms": ms}
            self.jobs[job["job_id"]] = job
            out.append(job)
        return defer.succeed(out)

    def fail_jobs(self, job_ids, error):
        self.failed.append((list(job_ids), error))
        for j in job_ids:
            self.jobs[j]["status"] = "failed"
        return defer.succeed(None)

    def release_upload(self, job_ids):
        self.released.append(list(job_ids))
        return defer.succeed(None)

    def get(self, job_id):
        if job_id not in self.jobs:
            raise NotFound("job not found")
        return self.jobs[job_id]

    def queue_length(self):
        return sum(1 for j in self.jobs.values() if j["status"] == "queued")


def sync_thread(fn, *args):
    return defer.maybeDeferred(fn, *args)


def build(tmp_path, db, clock, jobs, ttl="10", max_bytes=str(1 << 30)):
    cfg = configmod.load(None, {"state-dir": str(tmp_path / "state"), "media-dir": str(tmp_path / "media"),
                                "upload-ttl": ttl, "max-upload-bytes": max_bytes})
    sources = SourceService(cfg, db, clock, jobs=lambda: jobs)
    uploads = UploadService(cfg, db, sources, clock, jobs=lambda: jobs, sweep_interval=1.0,
                            thread_runner=sync_thread)
    return uploads


@pytest.fixture
def db(tmp_path):
    database = Database(str(tmp_path / "state" / "streamlab.db"), reactor=reactor)
    database.startService()
    yield database
    database.stopService()


@pytest_twisted.inlineCallbacks
def test_abandoned_upload_is_swept_after_ttl(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs)
    uploads.startService()
    yield uploads.ready()
    info = yield defer.ensureDeferred(uploads.init({"filename": "a.mp4", "file_size": 100,
                                                    "partial_durations": [200, 500]}))
    job_id = info["job_id"]
    assert len(info["job_ids"]) == 2 and all(jobs.jobs[j]["status"] == "uploading" for j in info["job_ids"])
    part = os.path.join(uploads.uploads_dir, f"{job_id}.part")
    clock.advance(6)
    yield defer.ensureDeferred(uploads.chunk(job_id, 0, io.BytesIO(b"x" * 10), 10))  # activity at t=6
    clock.advance(9)  # t=15: idle for 9 s < ttl
    yield uploads._sweep()
    assert uploads.progress(job_id)["received_size"] == 10 and jobs.failed == []
    clock.advance(1)  # t=16: idle for the whole ttl
    yield uploads._sweep()
    with pytest.raises(NotFound):
        uploads.progress(job_id)
    assert jobs.failed == [(info["job_ids"], "upload abandoned")]
    assert not os.path.exists(part)
    rows = yield db.run_query("SELECT COUNT(*) AS n FROM uploads")
    assert rows[0]["n"] == 0
    uploads.stopService()


@pytest_twisted.inlineCallbacks
def test_sweeper_runs_on_the_reactor_clock(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs, ttl="2")
    uploads.startService()
    yield uploads.ready()
    info = yield defer.ensureDeferred(uploads.init({"filename": "a.mp4", "file_size": 100}))
    clock.advance(1)
    assert jobs.failed == []
    clock.advance(1)
    # the sweep started by the LoopingCall talks to sqlite in its thread: wait for it
    deadline = time.monotonic() + 10
    while not jobs.failed and time.monotonic() < deadline:
        yield deferLater(0.01)
    assert jobs.failed == [(info["job_ids"], "upload abandoned")]
    uploads.stopService()
    assert clock.getDelayedCalls() == []


def deferLater(seconds):  # noqa: N802 - mirrors twisted.internet.task.deferLater
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_restart_keeps_acknowledged_bytes_and_hash(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs)
    uploads.startService()
    yield uploads.ready()
    data = os.urandom(3000)
    info = yield defer.ensureDeferred(uploads.init({"filename": "r.mp4", "file_size": len(data),
                                                    "sha256": hashlib.sha256(data).hexdigest()}))
    job_id = info["job_id"]
    yield defer.ensureDeferred(uploads.chunk(job_id, 0, io.BytesIO(data[:1000]), 1000))
    yield defer.ensureDeferred(uploads.chunk(job_id, 1000, io.BytesIO(data[1000:2000]), 1000))
    uploads.stopService()
    # bytes written after the last acknowledgement (a crash mid-chunk) are dropped on restart
    with open(os.path.join(uploads.uploads_dir, f"{job_id}.part"), "ab") as fh:
        fh.write(b"garbage")
    again = build(tmp_path, db, clock, jobs)
    again.startService()
    yield again.ready()
    assert again.progress(job_id)["received_size"] == 2000
    with pytest.raises(Conflict):
        yield defer.ensureDeferred(again.chunk(job_id, 2500, io.BytesIO(data[2500:]), 500))
    yield defer.ensureDeferred(again.chunk(job_id, 2000, io.BytesIO(data[2000:]), 1000))
    upload = again._uploads[job_id]
    assert upload.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    again.stopService()


@pytest_twisted.inlineCallbacks
def test_cancelled_jobs_make_chunks_409_and_discard(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs)
    uploads.startService()
    yield uploads.ready()
    info = yield defer.ensureDeferred(uploads.init({"filename": "c.mp4", "file_size": 100}))
    jobs.jobs[info["job_id"]]["status"] = "cancelled"
    with pytest.raises(Conflict) as exc:
        yield defer.ensureDeferred(uploads.chunk(info["job_id"], 0, io.BytesIO(b"x"), 1))
    assert exc.value.error == "upload cancelled"
    assert uploads.active()["active_uploads"] == 0
    uploads.stopService()


@pytest_twisted.inlineCallbacks
def test_pipelined_chunks_wait_for_each_other(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs)
    uploads.startService()
    yield uploads.ready()
    data = os.urandom(300)
    info = yield defer.ensureDeferred(uploads.init({"filename": "p.mp4", "file_size": len(data)}))
    job_id = info["job_id"]
    # three requests in flight at once, in order: each waits for the previous one's write
    ds = [defer.ensureDeferred(uploads.chunk(job_id, off, io.BytesIO(data[off:off + 100]), 100))
          for off in (0, 100, 200)]
    results = yield defer.gatherResults(ds)
    assert [r["received_size"] for r in results] == [100, 200, 300]
    assert uploads._uploads[job_id].hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    uploads.stopService()


@pytest_twisted.inlineCallbacks
def test_init_refuses_what_cannot_fit_on_disk(tmp_path, db):
    clock, jobs = Clock(), FakeJobs()
    uploads = build(tmp_path, db, clock, jobs, max_bytes=str(1 << 50))
    uploads.startService()
    yield uploads.ready()
    with pytest.raises(TooLarge) as info:
        yield defer.ensureDeferred(uploads.init({"filename": "huge.mov", "file_size": 1 << 49}))
    assert info.value.error == "not enough disk space" and info.value.body()["free_bytes"] > 0
    assert jobs.jobs == {} and uploads.active()["active_uploads"] == 0
    uploads.stopService()
