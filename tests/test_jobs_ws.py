"""The job stream protocol's ordering rules, driven without sockets: history then live
without duplicates, end closes, unknown job -> 4404, bounded queue while paused."""

import json

from twisted.internet import defer
from twisted.internet.testing import StringTransport

from streamlab.errors import NotFound
from streamlab.events import EventBus
from streamlab.push.jobs_ws import MAX_QUEUED, JobStreamFactory


class Jobs:
    def __init__(self, job):
        self.job = job
        self.lines = defer.Deferred()

    def get(self, job_id):
        if self.job is None or job_id != self.job["job_id"]:
            raise NotFound("job not found")
        return dict(self.job)

    def log_lines(self, job_id):
        return self.lines


def connect(jobs, bus, job_id="j1"):
    factory = JobStreamFactory(jobs, bus, job_id)
    proto = factory.buildProtocol(None)
    sent, closed = [], []
    proto.sendMessage = lambda payload, *a, **kw: sent.append(json.loads(payload))
    proto.sendClose = lambda code=None, reason=None: closed.append(code)
    proto.transport = StringTransport()
    proto.onOpen()
    return proto, sent, closed


def job(status="encoding"):
    return {"job_id": "j1", "status": status, "progress": 10.0, "stage": "encode 360p h264 (1/1)",
            "error": None}


def test_history_then_live_without_duplicates_and_end_closes():
    bus = EventBus()
    jobs = Jobs(job())
    proto, sent, closed = connect(jobs, bus)
    # lines 3 and 4 are written while the file is being read: they arrive on the bus too
    bus.publish("job.j1", {"type": "log", "line": "c", "seq": 3})
    bus.publish("job.j1", {"type": "log", "line": "d", "seq": 4})
    bus.publish("job.j1", {"type": "progress", "progress": 20.0, "stage": "s", "status": "encoding",
                           "eta_seconds": 3})
    assert sent == []
    jobs.lines.callback(["a", "b", "c"])  # the file had 3 complete lines
    assert [m.get("line") for m in sent if m["type"] == "log"] == ["a", "b", "c", "d"]
    assert {"type": "progress", "progress": 20.0, "stage": "s", "status": "encoding"} in sent
    bus.publish("job.j1", {"type": "log", "line": "e", "seq": 5})
    bus.publish("job.j1", {"type": "end", "status": "complete", "error": None})
    assert sent[-2] == {"type": "log", "line": "e"}
    assert sent[-1] == {"type": "end", "status": "complete", "error": None}
    assert closed == [1000] and bus.subscribers("job.j1") == 0


def test_finished_job_gets_log_progress_end():
    bus = EventBus()
    jobs = Jobs(job("failed") | {"error": "boom"})
    proto, sent, closed = connect(jobs, bus)
    jobs.lines.callback(["x"])
    assert [m["type"] for m in sent] == ["log", "progress", "end"]
    assert sent[-1] == {"type": "end", "status": "failed", "error": "boom"} and closed == [1000]


def test_unknown_job_closes_4404():
    bus = EventBus()
    proto, sent, closed = connect(Jobs(None), bus, "nope")
    assert sent == [] and closed == [4404] and bus.subscribers("job.nope") == 0


def test_slow_client_queue_is_bounded_and_progress_coalesces():
    bus = EventBus()
    jobs = Jobs(job())
    proto, sent, closed = connect(jobs, bus)
    jobs.lines.callback([])
    before = len(sent)
    proto.transport.producer.pauseProducing()
    for i in range(MAX_QUEUED + 50):
        bus.publish("job.j1", {"type": "log", "line": f"l{i}", "seq": i + 1})
        bus.publish("job.j1", {"type": "progress", "progress": 1.0, "stage": "s", "status": "encoding"})
    assert len(sent) == before
    assert len(proto._queue) == MAX_QUEUED
    for p in (30.0, 40.0, 50.0):  # consecutive progress frames coalesce into the newest
        bus.publish("job.j1", {"type": "progress", "progress": p, "stage": "s", "status": "encoding"})
    assert proto._queue[-1]["progress"] == 50.0 and proto._queue[-2]["type"] != "progress"
    proto.transport.producer.resumeProducing()
    new = sent[before:]
    assert "frames dropped" in new[0]["line"]
    assert new[-1]["type"] in ("log", "progress") and len(new) == MAX_QUEUED + 1
