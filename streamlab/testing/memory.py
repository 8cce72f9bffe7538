"""The in-memory harness's reactor and database: a ``MemoryReactorClock`` with fake
children and a synchronous thread pool, and the real sqlite schema without adbapi's
thread (see :mod:`streamlab.testing.api`)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from streamlab.errors import Unavailable
from streamlab.interfaces import IDaemonReactor
from streamlab.storage.db import Database, _open_connection, migrate
from streamlab.testing.fakemedia import FakeMedia
from streamlab.testing.fakeprocess import FakeProcess, FakeProcessReactor

T = TypeVar("T")


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
        super().__init__(path, reactor=cast(IDaemonReactor, reactor))
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
