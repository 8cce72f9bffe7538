"""Metrics exposition (parsed by prometheus_client), session totals that survive removal,
the counting request, the in-flight drain of a graceful stop, and JSON log lines."""

from __future__ import annotations

import io
import json
import signal
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from streamlab import logs
from streamlab.metrics import Histogram, Metrics, main_kind
from streamlab.shutdown import GracefulStop, InFlight


class _Registry:
    def __init__(self):
        self.sessions = []
        self.request_observers = []
        self.removal_hooks = []

    def all(self):
        return list(self.sessions)


class _Jobs:
    def list(self):
        return [{"status": "complete", "started_at": "2026-01-01T00:00:00.000Z",
                 "completed_at": "2026-01-01T00:00:30.500Z"},
                {"status": "queued", "started_at": None, "completed_at": None}]


def _samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_main_kind():
    assert main_kind(b"/api/sessions") == "api"
    assert main_kind(b"/go-live/c/master_2s.m3u8") == "master_manifest"
    assert main_kind(b"/go-live/c/manifest.mpd") == "master_manifest"
    assert main_kind(b"/go-live/c/playlist_360p.m3u8") == "manifest"
    assert main_kind(b"/go-live/c/video/360p/seg_00001.m4s") == "segment"
    assert main_kind(b"/dashboard/") == "dashboard"
    assert main_kind(b"/") == "other"


def test_histogram_is_cumulative():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    lines = h.lines("x")
    assert lines[:3] == ['x_bucket{le="0.1"} 2', 'x_bucket{le="1"} 3', 'x_bucket{le="+Inf"} 4']
    assert lines[-1] == "x_count 4"


def test_exposition_and_totals_survive_session_removal():
    clock = Clock()
    clock.advance(100)
    inflight = InFlight()
    m = Metrics(clock, inflight)
    reg = _Registry()
    m.attach_sessions(reg)
    m.attach_jobs(lambda: _Jobs())
    s = SimpleNamespace(fault_counts={"fault_count_404": 2, "fault_count_request_body_reset": 1},
                        bytes_out_total=1000)
    reg.sessions.append(s)
    for observe in reg.request_observers:
        observe(s, SimpleNamespace(kind="manifest", status=200, first_byte=10.02, arrived=10.0))
        observe(s, SimpleNamespace(kind="segment", status=404, first_byte=10.5, arrived=10.4))
    m.main_request_done("master_manifest", 200, 0.003, 500)
    inflight.begin()
    clock.advance(5)
    v = _samples(m.render())
    assert v[("streamlab_uptime_seconds", ())] == 5
    assert v[("streamlab_sessions", ())] == 1
    req = "streamlab_requests_total"
    assert v[(req, (("kind", "manifest"), ("listener", "session"), ("status", "200")))] == 1
    assert v[(req, (("kind", "segment"), ("listener", "session"), ("status", "404")))] == 1
    assert v[("streamlab_faults_total", (("type", "404"),))] == 2
    assert v[("streamlab_faults_total", (("type", "request_body_reset"),))] == 1
    assert v[("streamlab_bytes_out_total", (("listener", "session"),))] == 1000
    assert v[("streamlab_bytes_out_total", (("listener", "main"),))] == 500
    assert v[("streamlab_requests_in_flight", ())] == 1
    assert v[("streamlab_jobs", (("state", "complete"),))] == 1
    assert v[("streamlab_jobs", (("state", "encoding"),))] == 0
    assert v[("streamlab_encode_seconds_total", ())] == 30.5
    assert v[("streamlab_render_latency_seconds_count", ())] == 2  # two manifests, not the segment
    # the session goes away: totals stay
    reg.sessions.remove(s)
    for hook in reg.removal_hooks:
        hook(s)
    v2 = _samples(m.render())
    assert v2[("streamlab_sessions", ())] == 0
    assert v2[("streamlab_sessions_created_total", ())] == 1
    assert v2[("streamlab_faults_total", (("type", "404"),))] == 2
    assert v2[("streamlab_bytes_out_total", (("listener", "session"),))] == 1000


def test_graceful_stop_stops_accepting_waits_for_in_flight_then_cuts():
    from twisted.application.service import Service

    clock = Clock()
    inflight = InFlight()
    stop = GracefulStop(clock, inflight, grace=5)
    stop.startService()
    listener, ports = Service(), Service()
    listener.startService()
    ports.startService()

    def broken() -> None:
        raise RuntimeError("a listener that fails to stop does not stop the drain")

    inflight.begin()
    inflight.begin()
    done = []
    stop.drain(listener.stopService, broken, ports.stopService).addBoth(done.append)
    assert not listener.running and not ports.running  # no longer accepting, anywhere
    assert not done
    inflight.end()
    clock.advance(4.9)
    assert not done
    clock.advance(0.2)  # grace over: the rest is cut
    assert done == [None]
    # drained early: fires at once, timer cancelled
    inflight2 = InFlight()
    stop2 = GracefulStop(clock, inflight2, grace=5)
    inflight2.begin()
    done2 = []
    stop2.drain().addBoth(done2.append)
    inflight2.end()
    assert done2 == [None] and not clock.getDelayedCalls()
    done3 = []
    stop2.drain().addBoth(done3.append)
    assert done3 == [None]  # nothing in flight: immediate


def test_graceful_stop_waits_for_finished_responses_to_leave_the_buffers():
    """A response that finished but still sits in a connection's write buffer is flushed
    before the subsystems stop (the reactor's shutdown would drop it), within the grace."""
    from twisted.internet import tcp

    class R(Clock):
        writers: list = []

        def getWriters(self):  # noqa: N802 - IReactorFDSet
            return list(self.writers)

    clock = R()
    buffered = object.__new__(tcp.Server)  # a connection with bytes still to write
    clock.writers = [buffered, object()]  # (other writers, e.g. a pipe, do not count)
    stop = GracefulStop(clock, InFlight(), grace=5)
    done = []
    stop.drain().addBoth(done.append)
    clock.advance(1)
    assert not done
    clock.writers = []  # flushed
    clock.advance(0.05)
    assert done == [None]
    # a client that never reads: given up at the grace time
    clock.writers = [buffered]
    done2 = []
    stop.drain().addBoth(done2.append)
    clock.advance(4.9)
    assert not done2
    clock.advance(0.2)
    assert done2 == [None]


def test_exit_status_cleared_only_for_sigterm():
    class R(Clock):
        _exitSignal = signal.SIGTERM

        def addSystemEventTrigger(self, phase, event, fn):  # noqa: N802
            self.trigger = fn

    r = R()
    stop = GracefulStop(r, InFlight(), 1)
    stop.startService()
    r.trigger()
    assert r._exitSignal is None
    r._exitSignal = signal.SIGINT
    r.trigger()
    assert r._exitSignal == signal.SIGINT


def test_json_log_lines():
    out = io.StringIO()
    observer = logs.JsonLinesObserver(out)
    log = Logger(namespace="streamlab.test", observer=observer)
    log.info("session {sid} on port {port} removed", sid="3", port=30181, obj=object())
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("tick failed", Failure())
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["message"] == "session 3 on port 30181 removed"
    assert first["level"] == "info" and first["namespace"] == "streamlab.test"
    assert first["sid"] == "3" and first["port"] == 30181 and "obj" not in first
    assert first["time"].endswith("Z")
    assert second["level"] == LogLevel.critical.name and "ZeroDivisionError" in second["traceback"]
    assert callable(logs.json) and isinstance(logs.json(), logs.JsonLinesObserver)


def test_timers_and_network_log_entries_are_gauges():
    clock = Clock()
    m = Metrics(clock)
    reg = _Registry()
    m.attach_sessions(reg)
    reg.sessions.append(SimpleNamespace(fault_counts={}, bytes_out_total=0, netlog=[{}, {}, {}]))
    reg.sessions.append(SimpleNamespace(fault_counts={}, bytes_out_total=0, netlog=None))
    clock.callLater(5, lambda: None)
    clock.callLater(9, lambda: None)
    v = _samples(m.render())
    assert v[("streamlab_reactor_delayed_calls", ())] == 2
    assert v[("streamlab_network_log_entries", ())] == 3
    clock.advance(10)
    reg.sessions.clear()
    v = _samples(m.render())
    assert v[("streamlab_reactor_delayed_calls", ())] == 0
    assert v[("streamlab_network_log_entries", ())] == 0
