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

* the reactor, :class:`ApiReactor`: a ``MemoryReactorClock`` (time moves only when the
  test says so, :meth:`ApiHarness.advance`) that is also the fake process reactor
  (:mod:`streamlab.testing.fakeprocess`) and whose thread pool runs work synchronously;
* the child processes: :class:`FakeMedia` answers them like ffmpeg/ffprobe would —
  ``ffmpeg -encoders`` lists :attr:`FakeMedia.encoders` (so tests never depend on the
  host's ffmpeg build), ``ffprobe`` describes files made by :func:`fake_video` and rejects
  anything else, the demo synthesis writes a :func:`fake_video`; encodes keep running
  until the test ends them, and exit when their process group is signalled;
* the database runs the real schema on a real sqlite connection, without adbapi's thread
  (:class:`SyncDatabase`).

Every call settles synchronously: :meth:`ApiHarness.request` returns the answer, or fails
with what the request still waits for.  Logged failures (``log.failure``, i.e. what would
be a traceback in the daemon log) fail the test when the harness closes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

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
from streamlab.errors import Unavailable
from streamlab.events import EventBus
from streamlab.jobs.service import JobService
from streamlab.jobs.setup import SetupService
from streamlab.jobs.store import SqliteJobStore
from streamlab.media.library import ContentLibrary
from streamlab.push.jobs_sse import JobsFeed
from streamlab.sources.service import SourceService
from streamlab.storage.db import Database, _open_connection, migrate
from streamlab.testing.fakeprocess import FakeProcess, FakeProcessReactor
from streamlab.uploads.request import api_body_rules, install_body_rules
from streamlab.uploads.service import UploadService
from streamlab.web.root import MainRoot

T = TypeVar("T")

HOST = "127.0.0.1:30000"
"""The ``Host`` the harness's requests carry (URLs in answers are built from it)."""

MAX_SETTLE_ROUNDS = 10_000
DEFAULT_ENCODERS = frozenset({"libx264", "libx265", "aac"})
"""What the fake ``ffmpeg -encoders`` lists unless told otherwise: no AV1 encoder."""
FAKE_VERSION = "ffmpeg version 7.1-streamlab-fake"

# --------------------------------------------------------------------------- fake media files

FAKE_VIDEO_MAGIC = b"streamlab-fake-video\n"


@dataclass(frozen=True)
class ClipFacts:
    """What the fake ffprobe reports for a :func:`fake_video` file."""

    width: int = 160
    height: int = 90
    duration: float = 2.0
    fps: float = 25.0
    codec: str = "h264"
    audio: str | None = "aac"


def fake_video(facts: ClipFacts | None = None, size: int = 40_000) -> bytes:
    """The bytes of a file the fake ffprobe takes for a video with *facts*.

    A header names the facts; the rest is a deterministic pattern without zero bytes (so a
    chunk of zeros is never "the same bytes again").  Anything else is not a video.
    """
    facts = facts or ClipFacts()
    head = FAKE_VIDEO_MAGIC + json.dumps(facts.__dict__, sort_keys=True).encode() + b"\n"
    pattern = bytes(1 + (i * 37 + 11) % 251 for i in range(4096))
    body = (pattern * (size // len(pattern) + 1))[: max(0, size - len(head))]
    return head + body


def _facts_of(path: str) -> ClipFacts | None:
    """The facts in a :func:`fake_video` file's header (None: not one; missing: None)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if not head.startswith(FAKE_VIDEO_MAGIC):
        return None
    line = head[len(FAKE_VIDEO_MAGIC):].split(b"\n", 1)[0]
    try:
        return ClipFacts(**json.loads(line))
    except (ValueError, TypeError):
        return None


def ffprobe_json(facts: ClipFacts) -> bytes:
    """ffprobe's ``-print_format json -show_format -show_streams`` output for *facts*."""
    streams: list[dict[str, Any]] = [{
        "index": 0, "codec_type": "video", "codec_name": facts.codec, "width": facts.width,
        "height": facts.height, "avg_frame_rate": f"{round(facts.fps * 1000)}/1000",
        "r_frame_rate": f"{round(facts.fps * 1000)}/1000", "duration": f"{facts.duration:.6f}",
        "disposition": {"attached_pic": 0, "still_image": 0}}]
    if facts.audio:
        streams.append({"index": 1, "codec_type": "audio", "codec_name": facts.audio,
                        "sample_rate": "48000", "channels": 2})
    return json.dumps({"streams": streams, "format": {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": f"{facts.duration:.6f}"}}).encode()


def encoders_listing(names: Sequence[str]) -> bytes:
    """``ffmpeg -hide_banner -encoders`` output listing *names*."""
    lines = ["Encoders:", " V..... = Video", " A..... = Audio", " ------"]
    for name in sorted(names):
        kind = "A" if name in ("aac", "libfdk_aac", "libopus") else "V"
        lines.append(f" {kind}....D {name:<20} {name} (fake)")
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- the fake children


class FakeMedia:
    """Answers the children the services spawn, as ffmpeg/ffprobe would.

    ``encoders`` is what ``ffmpeg -encoders`` lists (set it before the harness starts:
    the job service probes once).  Encodes (any other ffmpeg run) keep running: they are
    in :attr:`encodes` for the test to inspect or end, and exit when their process group
    gets SIGTERM/SIGKILL, as ffmpeg does.  ``hold_synthesis`` keeps the demo synthesis
    running until the test ends it (:meth:`finish_synthesis`).
    """

    def __init__(self, ffmpeg: str, ffprobe: str, encoders: Sequence[str] = tuple(DEFAULT_ENCODERS)) -> None:
        self.ffmpeg = ffmpeg
        self.ffprobe = ffprobe
        self.encoders = set(encoders)
        self.hold_synthesis = False
        self.encodes: list[FakeProcess] = []
        self.syntheses: list[FakeProcess] = []
        self.probes: list[FakeProcess] = []

    def kind(self, proc: FakeProcess) -> str:
        """``encoders`` | ``version`` | ``ffprobe`` | ``synthesis`` | ``encode`` | ``other``."""
        argv = [proc.executable, *proc.args]
        if self.ffprobe in argv:
            return "ffprobe"
        if self.ffmpeg not in argv:
            return "other"
        tail = argv[argv.index(self.ffmpeg) + 1:]
        if "-encoders" in tail:
            return "encoders"
        if "-version" in tail:
            return "version"
        if "lavfi" in tail and any(a.startswith("testsrc") for a in tail):
            return "synthesis"
        return "encode"

    def answer(self, proc: FakeProcess) -> None:
        """Play the child *proc* (called once, just after it was spawned)."""
        kind = self.kind(proc)
        if kind == "encoders":
            proc.out(encoders_listing(sorted(self.encoders)))
            proc.exit(0)
        elif kind == "version":
            proc.out(f"{FAKE_VERSION} Copyright (c) 2000-2026 the FFmpeg developers\n".encode())
            proc.exit(0)
        elif kind == "ffprobe":
            self.probes.append(proc)
            path = proc.args[-1]
            facts = _facts_of(path)
            if facts is None:
                proc.err(f"{path}: Invalid data found when processing input\n".encode())
                proc.exit(1)
            else:
                proc.out(ffprobe_json(facts))
                proc.exit(0)
        elif kind == "synthesis":
            self.syntheses.append(proc)
            if not self.hold_synthesis:
                self.finish_synthesis(proc)
        elif kind == "encode":
            self.encodes.append(proc)
        else:
            proc.err(f"fake process reactor: nothing plays {proc.args!r}\n".encode())
            proc.exit(127)

    def finish_synthesis(self, proc: FakeProcess) -> None:
        """Write the demo clip the synthesis *proc* was asked for and exit 0."""
        argv = proc.args
        duration = float(argv[argv.index("-t") + 1]) if "-t" in argv else 10.0
        with open(argv[-1], "wb") as fh:
            fh.write(fake_video(ClipFacts(width=1280, height=720, duration=duration, fps=30.0)))
        proc.exit(0)

    def on_signal(self, proc: FakeProcess, sig: int) -> None:
        """A running child ends when its group gets SIGTERM or SIGKILL."""
        if not proc.ended and sig in (signal.SIGTERM, signal.SIGKILL):
            proc.exit(sig=sig)


# --------------------------------------------------------------------------- the reactor


class SyncThreadPool:
    """A thread pool that runs every call at once, on the calling thread.

    The result still reaches the reactor through ``callFromThread``, which
    :class:`ApiReactor` delivers on the next turn — as from a real pool, a Deferred from
    ``deferToThreadPool`` never fires before that call has returned."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None],  # noqa: N802, N803
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run *func* now; hand its result (or Failure) to *onResult*."""
        try:
            result = func(*args, **kw)
        except BaseException:  # noqa: BLE001 - a thread pool reports every failure
            onResult(False, Failure())
            return
        onResult(True, result)

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        """Run *func* now."""
        func(*args, **kw)


class ApiReactor(MemoryReactorClock):
    """``MemoryReactorClock`` + the fake process reactor's children + a synchronous
    thread pool.

    ``spawnProcess`` and ``killpg`` go to :attr:`children`, a
    :class:`~streamlab.testing.fakeprocess.FakeProcessReactor` used for its process
    bookkeeping (time is this reactor's).  Spawned children are played by :attr:`media`
    on the next turn (``callLater(0)``: a real child never answers inside
    ``spawnProcess``); group signals reach them the same way."""

    def __init__(self, media: FakeMedia) -> None:
        super().__init__()
        self.media = media
        self.children = FakeProcessReactor()
        self._pool = SyncThreadPool()

    def getThreadPool(self) -> SyncThreadPool:  # noqa: N802 - twisted API
        """The synchronous pool ``deferToThreadPool`` uses."""
        return self._pool

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        """A "thread" hands back a result: deliver it on the next turn."""
        self.callLater(0, f, *args, **kw)

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        """Run *f* now (the synchronous pool)."""
        f(*args, **kw)

    def spawnProcess(self, processProtocol: Any, executable: str, args: Sequence[str] = (),  # noqa: N802, N803
                     env: Mapping[str, str] | None = None, path: str | None = None,
                     uid: Any = None, gid: Any = None, usePTY: bool = False,  # noqa: N803
                     childFDs: Any = None) -> FakeProcess:  # noqa: N803
        """Record the child (a FakeProcess) and let :attr:`media` play it next turn."""
        proc = self.children.spawnProcess(processProtocol, executable, args, env, path, uid, gid,
                                          usePTY, childFDs)
        self.callLater(0, self.media.answer, proc)
        return proc

    def killpg(self, pid: int, sig: int) -> None:
        """Record the group signal; the child reacts on the next turn."""
        self.children.killpg(pid, sig)
        for proc in self.children.processes:
            if proc.pid == pid:
                self.callLater(0, self.media.on_signal, proc, sig)

    @property
    def processes(self) -> list[FakeProcess]:
        """Every child spawned so far."""
        return self.children.processes

    def running_children(self) -> list[FakeProcess]:
        """Children that have not exited."""
        return self.children.running


# --------------------------------------------------------------------------- the database


class _SyncConnection:
    """The three adbapi calls :class:`Database` makes, run at once on one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def interaction(self, fn: Callable[..., T], *args: Any) -> T:
        cursor = self.conn.cursor()
        try:
            result = fn(cursor, *args)
            cursor.close()
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return result


class SyncDatabase(Database):
    """The real schema on a real sqlite connection (``:memory:`` by default), without
    adbapi's thread: a statement runs when it is called, and its result is delivered
    through the reactor's ``callFromThread`` (next turn), as adbapi delivers it."""

    def __init__(self, path: str, reactor: ApiReactor) -> None:
        super().__init__(path, reactor=reactor)
        self._turns = reactor
        self._sync: _SyncConnection | None = None

    def startService(self) -> None:  # noqa: N802 - twisted API
        """Open and migrate now."""
        Service.startService(self)
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False)
        _open_connection(conn)
        self.schema_version = migrate(conn, self.schema_dir)
        self._sync = _SyncConnection(conn)
        self._settle(None)

    def stopService(self) -> None:  # noqa: N802 - twisted API
        """Close the connection."""
        Service.stopService(self)
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.conn.close()

    def _run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        out: Deferred[T] = Deferred()

        def call(_: Any) -> None:
            try:
                if self._sync is None:
                    raise Unavailable("database unavailable", detail="database is not running")
                result = self._sync.interaction(fn, *args)
            except BaseException:  # noqa: BLE001 - handed to the caller, as adbapi does
                self._turns.callFromThread(out.errback, Failure())
                return
            self._turns.callFromThread(out.callback, result)

        self.ready.addCallbacks(call, out.errback)
        return out
    def run_query(self, sql: str, params: Sequence[Any] = ()) -> Deferred[list[sqlite3.Row]]:
        """Run one SELECT; the rows."""
        return self._run(lambda cur: cur.execute(sql, tuple(params)).fetchall())

    def run_operation(self, sql: str, params: Sequence[Any] = ()) -> Deferred[None]:
        """Run one statement, committed."""
        def op(cur: sqlite3.Cursor) -> None:
            cur.execute(sql, tuple(params))

        return self._run(op)

    def run_interaction(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(cursor, *args)`` as one transaction."""
        def in_transaction(cur: sqlite3.Cursor, *a: Any) -> T:
            if not cur.connection.in_transaction:
                cur.execute("BEGIN")
            return fn(cur, *a)

        return self._run(in_transaction, *args)


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
        config, reactor = self.config, self.reactor
        self.services = MultiService()
        self.bus = EventBus()
        self.api = ApiRoot()
        self.root = MainRoot()
        self.root.mount("api", self.api)
        self.db = self._add(SyncDatabase(db_path or ":memory:", reactor=reactor))
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

