"""A fake process reactor for unit tests of process-driving code.

:class:`FakeProcessReactor` is a :class:`~twisted.internet.task.Clock` that also
implements ``spawnProcess``: every spawn is recorded as a :class:`FakeProcess` whose
argv the test can inspect and whose stdout/stderr/exit the test feeds to the real
ProcessProtocol.  Group signals sent through :meth:`FakeProcessReactor.killpg` are
recorded: :class:`streamlab.ffmpeg.FFmpegChild` sends group signals there instead of
``os.killpg`` when the reactor has it (the kill seam of both the encoder and the packager).
"""

from __future__ import annotations

import itertools
import signal as signalmod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IAddress, IProcessProtocol, IProcessTransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IAddress)
class _ChildAddress:
    """A child process has no network address (like Twisted's own process transport)."""


_PROCESS_ADDRESS = _ChildAddress()


@implementer(IProcessTransport)
class FakeProcess:
    """One spawned (fake) child: the transport handed to the ProcessProtocol."""

    def __init__(self, reactor: FakeProcessReactor, proto: IProcessProtocol, executable: str,
                 args: Sequence[str], env: Mapping[str, str] | None, path: str | None, pid: int) -> None:
        self.reactor = reactor
        self.proto = proto
        self.executable = executable
        self.args = list(args)
        self.env = dict(env or {})
        self.path = path
        self.pid = pid
        self.stdin_closed = False
        self.signals: list[int] = []
        self.ended = False

    # --- the transport side (what the protocol may call)
    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, sig: str | int) -> None:
        self.signals.append(int(getattr(signalmod, f"SIG{sig}")) if isinstance(sig, str) else sig)

    def loseConnection(self) -> None:
        self.closeStdin()

    def write(self, data: bytes) -> None:
        raise RuntimeError("fake process has no stdin consumer")

    def writeSequence(self, data: Iterable[bytes]) -> None:
        raise RuntimeError("fake process has no stdin consumer")

    def writeToChild(self, childFD: int, data: bytes) -> None:  # noqa: N803 - twisted API
        raise RuntimeError("fake process has no stdin consumer")

    def closeChildFD(self, descriptor: int) -> None:
        if descriptor == 0:
            self.closeStdin()

    def closeStdout(self) -> None:
        pass

    def closeStderr(self) -> None:
        pass

    def getHost(self) -> IAddress:
        return _PROCESS_ADDRESS

    def getPeer(self) -> IAddress:
        return _PROCESS_ADDRESS

    # --- the test side
    def out(self, data: bytes) -> None:
        """Deliver *data* on the child's stdout."""
        self.proto.childDataReceived(1, data)

    def err(self, data: bytes) -> None:
        """Deliver *data* on the child's stderr."""
        self.proto.childDataReceived(2, data)

    def exit(self, code: int = 0, sig: int | None = None) -> None:
        """End the child with exit *code* (or killed by *sig*)."""
        if self.ended:
            return
        self.ended = True
        reason: Failure
        if code == 0 and sig is None:
            reason = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(None if sig else code, sig))
        for fd in (1, 2):
            self.proto.childConnectionLost(fd)
        self.proto.processExited(reason)
        self.proto.processEnded(reason)


class SyncThreadPool:
    """A "thread pool" that runs each call at once, on the calling thread: blocking
    helpers (``deferToThreadPool``) finish before the call returns, so a test steps
    through thread work and process events in a fixed order."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None],  # noqa: N802, N803
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        try:
            result = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class FakeProcessReactor(Clock):
    """Clock + recorded ``spawnProcess`` + recorded group signals + a synchronous thread
    pool (``getThreadPool``/``callFromThread``)."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.group_signals: list[tuple[int, int]] = []
        self._pids = itertools.count(4000)
        self._pool = SyncThreadPool()

    def spawnProcess(self, processProtocol: IProcessProtocol, executable: str, args: Sequence[str] = (),  # noqa: N803
                     env: Mapping[str, str] | None = None, path: str | None = None,
                     uid: Any = None, gid: Any = None, usePTY: bool = False,  # noqa: N803
                     childFDs: Any = None) -> FakeProcess:  # noqa: N803
        proc = FakeProcess(self, processProtocol, executable, args, env, path, next(self._pids))
        self.processes.append(proc)
        processProtocol.makeConnection(proc)
        return proc

    def getThreadPool(self) -> SyncThreadPool:  # noqa: N802 - twisted API
        """The synchronous pool (see :class:`SyncThreadPool`)."""
        return self._pool

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        """Run *f* now: the "thread" was this one."""
        f(*args, **kw)

    def killpg(self, pid: int, sig: int) -> None:
        """Record a signal to the group led by *pid*."""
        self.group_signals.append((pid, sig))
        for proc in self.processes:
            if proc.pid == pid:
                proc.signals.append(sig)

    @property
    def running(self) -> list[FakeProcess]:
        """Processes that have not exited yet."""
        return [p for p in self.processes if not p.ended]
