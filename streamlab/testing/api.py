"""In-memory API harness: the real content-pipeline services behind the real API, no daemon.

:class:`ApiHarness` builds what :func:`streamlab.tap.build` builds for the content
pipeline — the sqlite :class:`~streamlab.storage.db.Database`, ``ContentLibrary``,
``SourceService``, ``UploadService``, ``JobService`` (+ ``JobsFeed``) and
``SetupService``, with the same constructors — and mounts the same Klein apps
(``/api/content``, ``/api/sources``, ``/api/upload``, ``/api/jobs``, ``/api/setup``,
``/api/health``) under the real ``/api`` root.  Requests go through
:class:`treq.testing.StubTreq`, i.e. real HTTP/1.1 parsing by ``twisted.web`` over an
in-memory transport, with the daemon's body rules (the JSON 413s) installed on the Site.
The jobs WebSocket is reached through ``autobahn.twisted.testing``'s memory agent, with
the server side being the same Site, so the upgrade travels the real resource tree.

What is fake, and only that:

* the reactor, :class:`~streamlab.testing.memory.ApiReactor`: a ``MemoryReactorClock``
  (time moves only when the test says so, :meth:`ApiHarness.advance`) whose children go
  to the fake process reactor (:mod:`streamlab.testing.fakeprocess`) and whose thread
  pool runs work at once, handing results back on the next turn;
* the child processes: :class:`~streamlab.testing.fakemedia.FakeMedia` answers them like
  ffmpeg/ffprobe would —
  ``ffmpeg -encoders`` lists :attr:`FakeMedia.encoders` (so tests never depend on the
  host's ffmpeg build), ``ffprobe`` describes files made by :func:`fake_video` and rejects
  anything else, the demo synthesis writes a :func:`fake_video`; encodes keep running
  until the test ends them, and exit when their process group is signalled;
* the database runs the real schema on a real sqlite connection, without adbapi's thread
  (:class:`~streamlab.testing.memory.SyncDatabase`).

Every call settles synchronously: :meth:`ApiHarness.request` returns the answer, or fails
with what the request still waits for.  Logged failures (``log.failure``, i.e. what would
be a traceback in the daemon log) fail the test when the harness closes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

from autobahn.twisted.testing import create_memory_agent
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface import implementer

from streamlab import config as configmod
from streamlab.api.content import ContentApi
from streamlab.api.jobs import JobsApi
from streamlab.api.root import ApiRoot
from streamlab.api.server import ServerApi
from streamlab.api.setup import SetupApi
from streamlab.api.sources import SourcesApi
from streamlab.api.uploads import UploadsApi
from streamlab.events import EventBus
from streamlab.interfaces import IDaemonReactor
from streamlab.jobs.service import JobService
from streamlab.jobs.setup import SetupService
from streamlab.jobs.store import SqliteJobStore
from streamlab.media.library import ContentLibrary
from streamlab.push.jobs_sse import JobsFeed
from streamlab.sources.service import SourceService
from streamlab.testing.fakemedia import DEFAULT_ENCODERS, FakeMedia
from streamlab.testing.fakeprocess import FakeProcess
from streamlab.testing.memory import ApiReactor, SyncDatabase
from streamlab.uploads.request import api_body_rules, install_body_rules
from streamlab.uploads.service import UploadService
from streamlab.web.root import MainRoot

T = TypeVar("T")

HOST = "127.0.0.1:30000"
"""The ``Host`` the harness's requests carry (URLs in answers are built from it)."""

MAX_SETTLE_ROUNDS = 10_000


# --------------------------------------------------------------------------- answers and clients


@dataclass
class Answer:
    """One HTTP answer as the client saw it."""

    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header *name* (None when absent)."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class WsClient(WebSocketClientProtocol):
    """Collects text frames (as JSON) and the close code."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []
        self.close_code: int | None = None
        self.closed = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        self.messages.append(payload if isBinary else json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        self.closed = True
        self.close_code = code


class _Pumper:
    """The IPumper autobahn's memory agent feeds: pumps flushed by the harness's settle."""

    def __init__(self) -> None:
        self.pumps: set[iosim.IOPump] = set()

    def add(self, pump: iosim.IOPump) -> None:
        self.pumps.add(pump)

    def flush(self) -> None:
        for pump in list(self.pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self.pumps.discard(pump)


@implementer(ILogObserver)
class _LogCapture:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


# --------------------------------------------------------------------------- the harness


def _fake_binary(path: str) -> str:
    """An executable that says it must never run (the fake process reactor plays it)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("#!/bin/sh\necho 'streamlab.testing.api: this fake binary must never run' >&2\nexit 97\n")
    os.chmod(path, 0o755)
    return path


class ApiHarness:
    """The content-pipeline services and their API, in memory (see the module docstring).

    ``with ApiHarness(tmp_path) as api: api.get("/api/jobs")``.  *config* holds config
    flags (``{"max-upload-bytes": "400000"}``); *encoders* is the fake ffmpeg's encoder
    list; *db_path* None keeps sqlite in memory.
    """

    def __init__(self, workdir: str | os.PathLike[str], config: Mapping[str, str] | None = None, *,
                 encoders: Sequence[str] = tuple(DEFAULT_ENCODERS), db_path: str | None = None) -> None:
        self.workdir = os.fspath(workdir)
        bindir = os.path.join(self.workdir, "bin")
        os.makedirs(bindir, exist_ok=True)
        self.media_dir = os.path.join(self.workdir, "media")
        self.state_dir = os.path.join(self.workdir, "state")
        for path in (self.media_dir, self.state_dir):
            os.makedirs(path, exist_ok=True)
        flags = {"media-dir": self.media_dir, "state-dir": self.state_dir,
                 "ffmpeg": _fake_binary(os.path.join(bindir, "ffmpeg")),
                 "ffprobe": _fake_binary(os.path.join(bindir, "ffprobe")), **(config or {})}
        self.config = configmod.load(None, flags)
        self.media = FakeMedia(self.config.jobs.ffmpeg, self.config.jobs.ffprobe, encoders)
        self.reactor = ApiReactor(self.media)
        self._log = _LogCapture()
        self._expected_failures = 0
        self._build(db_path)
        self.treq = _stub_treq(self.root)
        self.site: Site = self.treq._agent._serverFactory  # treq's in-memory Site (no public accessor)
        # the daemon's body limits (413s) apply to this Site as to the main listener's
        install_body_rules(self.site, api_body_rules(self.config.jobs.max_upload_bytes,
                                                     spool_dir=os.path.join(self.state_dir, "uploads")))
        self._ws_pumper = _Pumper()
        self._started = False

    def _build(self, db_path: str | None) -> None:
        """What streamlab.tap.build wires for the content pipeline, in the same order."""
        config = self.config
        # The memory reactor stands in for every facet the services use (IDaemonReactor).
        reactor = cast(IDaemonReactor, self.reactor)
        self.services = MultiService()
        self.bus = EventBus()
        self.api = ApiRoot()
        self.root = MainRoot()
        self.root.mount("api", self.api)
        self.db = self._add(SyncDatabase(db_path or ":memory:", reactor=self.reactor))
        self.library = self._add(ContentLibrary(config.paths.media_dir, reactor))
        content_api = ContentApi(self.library, reactor, config.server.advertised_host)
        self.api.mount("content", content_api.app.resource())
        self.jobs: JobService | None = None
        jobs = lambda: self.jobs  # noqa: E731 - the job service is added below, as in tap.py
        self.sources = self._add(SourceService(config, self.db, reactor, jobs=jobs))
        self.api.mount("sources", SourcesApi(self.sources, jobs).app.resource())
        self.uploads = self._add(UploadService(config, self.db, self.sources, reactor, jobs=jobs))
        self.api.mount("upload", UploadsApi(self.uploads, reactor).app.resource())
        self.jobs = job_service = self._add(JobService(config, reactor, SqliteJobStore(self.db), bus=self.bus,
                                                       sources=self.sources, library=self.library))
        self.jobs_feed = self._add(JobsFeed(reactor, self.bus, job_service))
        self.api.mount("jobs", JobsApi(job_service, self.bus, self.jobs_feed).app.resource())
        self.setup = self._add(SetupService(config, reactor, jobs=job_service, sources=self.sources,
                                            db=self.db))
        self.api.mount("setup", SetupApi(self.setup).app.resource())
        server_api = ServerApi(reactor)
        self.api.mount("health", server_api.app.resource())
        self.api.mount("version", server_api.app.resource())

    def _add(self, service: T) -> T:
        assert isinstance(service, Service)
        service.setServiceParent(self.services)
        return service

    @property
    def job_service(self) -> JobService:
        """The JobService (always built)."""
        assert self.jobs is not None
        return self.jobs

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ApiHarness:
        """Start every service (ffmpeg probed, jobs and uploads loaded) and settle."""
        globalLogPublisher.addObserver(self._log)
        self.services.startService()
        self._started = True
        self.settle()
        return self

    def stop(self) -> None:
        """Stop every service (running encodes are terminated) and settle."""
        if not self._started:
            return
        self._started = False
        try:
            d = defer.maybeDeferred(self.services.stopService)
            self.settle()
            self.result_of(d, "stopping the services")
        finally:
            globalLogPublisher.removeObserver(self._log)

    def __enter__(self) -> ApiHarness:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if kind is None:
            self.assert_log_clean()

    # ------------------------------------------------------------------ log

    @property
    def log_events(self) -> list[LogEvent]:
        """Every log event emitted while the harness ran."""
        return list(self._log.events)

    def log_text(self) -> str:
        """The log as text, one event a line (like the daemon log)."""
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in self._log.events)

    def expect_logged_failures(self, count: int) -> None:
        """*count* logged failures (tracebacks) are part of the test; more fail it."""
        self._expected_failures += count

    def failures(self) -> list[LogEvent]:
        """Events that would print a traceback in the daemon log."""
        return [e for e in self._log.events if "log_failure" in e]

    def assert_log_clean(self) -> None:
        """Fail on unexpected logged failures (the daemon tests' clean-log rule)."""
        found = self.failures()
        if len(found) > self._expected_failures:
            from twisted.logger import formatEvent

            text = "\n".join(f"{formatEvent(e)}\n{e['log_failure'].getTraceback()}" for e in found)
            raise AssertionError(f"the services logged {len(found)} failure(s):\n{text}")

    # ------------------------------------------------------------------ time and settling

    def settle(self) -> None:
        """Run everything that is due now: zero-delay calls, children's answers and the
        bytes between the in-memory clients and the Site.  Time does not move."""
        for _ in range(MAX_SETTLE_ROUNDS):
            self.treq.flush()
            self._ws_pumper.flush()
            now = self.reactor.seconds()
            if not any(c.getTime() <= now for c in self.reactor.getDelayedCalls()):
                return
            self.reactor.advance(0)
        raise AssertionError("the harness does not settle: something reschedules itself forever")

    def advance(self, seconds: float, step: float | None = None) -> None:
        """Move the clock by *seconds* (in *step*s when given) and settle after each move."""
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining) if step else remaining
            self.reactor.advance(delta)
            remaining -= delta
            self.settle()

    def result_of(self, d: Deferred[T], what: str = "the call") -> T:
        """The result of *d*, which must have fired by now (settled)."""
        self.settle()
        results: list[Any] = []
        d.addBoth(results.append)
        if not results:
            running = [(p.pid, self.media.kind(p)) for p in self.reactor.running_children()]
            timers = [(round(c.getTime() - self.reactor.seconds(), 3), repr(c))
                      for c in self.reactor.getDelayedCalls()]
            raise AssertionError(f"{what} is still pending; running children: {running}; timers: {timers}")
        value = results[0]
        if isinstance(value, Failure):
            value.raiseException()
        return value

    # ------------------------------------------------------------------ HTTP

    def begin(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
              headers: Mapping[str, str] | None = None, host: str = HOST) -> Deferred[Answer]:
        """Send a request; a Deferred with its :class:`Answer` (settle to get it)."""
        hdrs = {k: [v] for k, v in (headers or {}).items()}
        kwargs: dict[str, Any] = {"headers": hdrs}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", ["application/json"])
        elif data is not None:
            kwargs["data"] = data
        d = self.treq.request(method, f"http://{host}{path}", **kwargs)

        def read(response: Any) -> Deferred[Answer]:
            body = self.treq.content(response)
            return body.addCallback(lambda raw: Answer(response.code, response.headers, raw))

        d.addCallback(read)
        self.settle()
        return d

    def request(self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None,
                host: str = HOST) -> Answer:
        """One request, answered: *body* bytes are sent as they are, anything else
        (not None) as JSON."""
        if isinstance(body, bytes):
            d = self.begin(method, path, data=body, headers=headers, host=host)
        else:
            d = self.begin(method, path, json_body=body, headers=headers, host=host)
        return self.result_of(d, f"{method} {path}")

    def get(self, path: str, **kw: Any) -> Answer:
        """``GET path``."""
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        """``POST path``."""
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        """``DELETE path``."""
        return self.request("DELETE", path, **kw)

    # ------------------------------------------------------------------ WebSocket

    def websocket(self, path: str) -> WsClient:
        """Open a WebSocket to *path* on the same Site (autobahn's memory agent); the
        client once the handshake is done (its frames arrive as the harness settles)."""
        addr = IPv4Address("TCP", "127.0.0.1", 31337)
        # (a plain MemoryReactorClock for the client: autobahn's MemoryReactorClockResolver
        # cannot be built on Twisted 25, whose MemoryReactor sets its own nameResolver)
        agent = create_memory_agent(MemoryReactorClock(), self._ws_pumper,
                                    lambda: self.site.buildProtocol(addr))
        d = agent.open(f"ws://{HOST}{path}", {}, protocol_class=WsClient)
        client = self.result_of(d, f"the WebSocket handshake for {path}")
        assert isinstance(client, WsClient)
        return client

    # ------------------------------------------------------------------ content helpers

    def add_original(self, filename: str, data: bytes) -> dict[str, Any]:
        """Drop a file into originals/, scan, and return its source record."""
        originals = os.path.join(self.media_dir, "originals")
        os.makedirs(originals, exist_ok=True)
        with open(os.path.join(originals, filename), "wb") as fh:
            fh.write(data)
        r = self.post("/api/sources/scan-originals")
        assert r.status == 200, r.text
        return next(s for s in self.get("/api/sources").json() if s["file_path"] == f"originals/{filename}")

    def running_encodes(self) -> list[FakeProcess]:
        """Encoder children still running."""
        return [p for p in self.media.encodes if not p.ended]


def _stub_treq(root: Any) -> Any:
    from treq.testing import StubTreq

    stub = StubTreq(root)
    assert isinstance(stub._agent._serverFactory, Site)
    return stub

