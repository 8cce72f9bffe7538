"""``GET /api/jobs/stream``: the job list as SSE, through the real Klein app and a Site on a
StringTransport, time driven by a Clock (initial event, update on bus change, throttle,
keepalive, route not taken as a job id)."""

from __future__ import annotations

import json
import re

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site

from streamlab.api.jobs import JobsApi
from streamlab.api.root import ApiRoot
from streamlab.errors import NotFound
from streamlab.events import EventBus
from streamlab.push.jobs_sse import JobsFeed

EVENT = re.compile(rb"event: (\w+)\ndata: (.*)\n\n")


class FakeJobs:
    """The collaborator: what JobsApi/JobsFeed read of the JobService."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.list_calls = 0

    def when_ready(self):
        return defer.succeed(None)

    def list(self, status=None):
        self.list_calls += 1
        return [j for j in self.jobs.values() if status is None or j["status"] == status]

    def get(self, job_id):
        if job_id not in self.jobs:
            raise NotFound("job not found", detail=job_id)
        return self.jobs[job_id]


class Env:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.bus = EventBus()
        self.jobs = FakeJobs()
        self.feed = JobsFeed(self.clock, self.bus, self.jobs)
        root = ApiRoot()
        root.mount("jobs", JobsApi(self.jobs, self.bus, self.feed).app.resource())
        self.site = Site(root, reactor=self.clock)
        self.site.timeOut = None

    def open(self, path: str = "/jobs/stream"):
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return channel, transport

    def set_job(self, job_id: str, status: str) -> None:
        job = self.jobs.jobs[job_id] = {"job_id": job_id, "status": status}
        self.bus.publish("jobs", {"type": "job", "job": job})


def events(transport: StringTransport) -> list[tuple[str, dict]]:
    return [(e.decode(), json.loads(d)) for e, d in EVENT.findall(transport.value())]


def test_initial_event_then_update_on_change_and_delete():
    env = Env()
    env.jobs.jobs["a"] = {"job_id": "a", "status": "queued"}
    _channel, transport = env.open()
    head = transport.value().split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"content-type: text/event-stream" in head
    first = events(transport)
    assert first == [("jobs", {"jobs": [{"job_id": "a", "status": "queued"}], "revision": 1})]

    env.set_job("a", "encoding")
    env.clock.advance(0.3)
    got = events(transport)
    assert len(got) == 2 and got[1][1]["jobs"] == [{"job_id": "a", "status": "encoding"}]
    assert got[1][1]["revision"] > got[0][1]["revision"]

    del env.jobs.jobs["a"]
    env.bus.publish("jobs", {"type": "deleted", "job_id": "a"})
    env.clock.advance(0.3)
    assert events(transport)[-1][1]["jobs"] == []


def test_bursts_are_throttled_to_one_event_per_250ms():
    env = Env()
    _channel, transport = env.open()
    env.clock.advance(1)  # the last emission is long past: the next change goes out at once
    for i in range(50):
        env.set_job("a", f"s{i}")
    env.clock.advance(0)
    assert len(events(transport)) == 2
    for i in range(50):  # within the next 250 ms: held, then one event with the latest list
        env.set_job("a", f"t{i}")
        env.clock.advance(0.004)
    assert len(events(transport)) == 2
    env.clock.advance(0.1)
    got = events(transport)
    assert len(got) == 3 and got[-1][1]["jobs"] == [{"job_id": "a", "status": "t49"}]


def test_keepalive_and_no_work_without_clients():
    env = Env()
    for i in range(5):
        env.set_job(str(i), "queued")
    assert env.jobs.list_calls == 0  # nobody listening: no snapshot built
    channel, transport = env.open()
    env.clock.advance(14)
    assert b": keepalive" not in transport.value()
    env.clock.advance(1.1)
    assert transport.value().count(b": keepalive") == 1
    env.clock.advance(15)
    assert transport.value().count(b": keepalive") == 2
    # client goes away: forgotten, further changes cost nothing
    channel.connectionLost(Failure(ConnectionDone()))
    assert env.feed.stream.clients == []
    calls = env.jobs.list_calls
    env.set_job("0", "done")
    env.clock.advance(1)
    assert env.jobs.list_calls == calls


def test_stream_is_not_a_job_id_and_stop_finishes_clients():
    env = Env()
    env.jobs.jobs["stream"] = {"job_id": "stream", "status": "queued"}
    _c, other = env.open("/jobs/nope")
    assert other.value().startswith(b"HTTP/1.1 404")
    _c, transport = env.open()
    assert events(transport)[0][0] == "jobs"
    env.feed.startService()
    env.feed.stopService()
    assert env.feed.stream.clients == []
    assert transport.value().endswith(b"0\r\n\r\n")  # chunked body finished
    assert env.clock.getDelayedCalls() == []
