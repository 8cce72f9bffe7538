"""One ffmpeg child process: started low priority in its own process group, never
outliving the daemon, stoppable, and ending with one of three typed errors.

Both users go through here: the encoder (:mod:`streamlab.jobs.process`, one child per
rung) and the packager (:mod:`streamlab.media.packager`, one ``-c copy`` child per item),
so a killed or failing ffmpeg reads the same in a job's error, its log and the API.

* :func:`wrap_argv` turns an argv into what ``reactor.spawnProcess`` runs:
  ``setpriv --pdeathsig KILL setsid -w nice -n 10 ffmpeg ...``.  ``setpriv`` (util-linux)
  sets Linux's PR_SET_PDEATHSIG, so the kernel SIGKILLs the child the moment the daemon
  dies (even by SIGKILL); ``setsid`` makes ffmpeg the leader of a new process group whose
  id is the child's pid (the child is not a group leader when it runs ``setsid``, so
  setsid does not fork and the death signal stays on ffmpeg itself); ``nice`` keeps the
  reactor's CPU share.  Each part is used only where installed.
* :class:`FFmpegChild` has the shape of txtorcon's Tor process: :meth:`~FFmpegChild.start`
  spawns it; :meth:`~FFmpegChild.when_exited` gives a Deferred that fires None on exit 0
  or fails with :class:`FFmpegExitError` (non-zero status), :class:`FFmpegKilled` (a
  signal) or :class:`FFmpegTimeout` (ran past *timeout*, then stopped);
  :meth:`~FFmpegChild.terminate` sends SIGTERM to the whole group, SIGKILL after
  *kill_grace* seconds, and gives a Deferred that fires once the process is gone.
  Every error carries the last stderr lines (``stderr_tail``).
* The kill seam: group signals go to the reactor's own ``killpg`` when it has one (the
  fake process reactor, :mod:`streamlab.testing.fakeprocess`, records them there), else
  to :func:`signal_group` (``os.killpg``).

stderr is split into lines (``\\r`` counts as a line end: ffmpeg's status line) for the
*on_line* callback; stdout bytes go to *on_stdout* (the encoder's ``-progress pipe:1``).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: stderr lines kept for the error of a failed run
TAIL_LINES = 25
#: a stderr "line" longer than this is cut and delivered in pieces
MAX_LINE = 4096

Killer = Callable[[int, int], None]


class ProcessReactor(Protocol):
    """What a child needs of its reactor: spawning and timers (a real reactor, or the
    fake process reactor of the tests)."""

    def spawnProcess(self, processProtocol: Any, executable: str, args: Sequence[str] = ...,  # noqa: N803
                     env: Mapping[str, str] | None = ..., path: str | None = ...,
                     uid: Any = ..., gid: Any = ..., usePTY: bool = ...,  # noqa: N803
                     childFDs: Any = ...) -> Any: ...  # noqa: N803

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,  # noqa: N802
                  **kw: Any) -> IDelayedCall: ...


def signal_group(pid: int, sig: int) -> None:
    """Send *sig* to the process group led by *pid* (or just *pid* if there is none yet:
    ``setsid`` may not have run in the child)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def wrap_argv(argv: Sequence[str], *, niceness: int = 10, die_with_parent: bool = True) -> list[str]:
    """``argv`` prefixed with ``setpriv --pdeathsig KILL`` (dies with the daemon),
    ``setsid -w`` (new process group) and ``nice -n``; each part only where installed."""
    prefix: list[str] = []
    setpriv = shutil.which("setpriv") if die_with_parent else None
    if setpriv:
        prefix += [setpriv, "--pdeathsig", "KILL"]
    setsid = shutil.which("setsid")
    if setsid:
        prefix += [setsid, "-w"]
    nice = shutil.which("nice")
    if nice and niceness:
        prefix += [nice, "-n", str(niceness)]
    return prefix + list(argv)


# --------------------------------------------------------------------------- typed exits


class FFmpegError(Exception):
    """ffmpeg did not exit 0.  ``exit_code`` / ``signal`` say how it ended (one is None),
    ``stderr_tail`` holds its last stderr lines; the message is one line."""

    def __init__(self, how: str, *, exit_code: int | None, sig: int | None, tail: Sequence[str]) -> None:
        self.exit_code = exit_code
        self.signal = sig
        self.stderr_tail = list(tail)
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        super().__init__(f"ffmpeg failed ({how}){': ' + last if last else ''}")


class FFmpegExitError(FFmpegError):
    """ffmpeg exited with a non-zero status (bad input, bad options, disk full ...)."""

    def __init__(self, exit_code: int, tail: Sequence[str]) -> None:
        super().__init__(f"exit code {exit_code}", exit_code=exit_code, sig=None, tail=tail)


class FFmpegKilled(FFmpegError):
    """ffmpeg was ended by a signal: ``terminated`` is True when we sent it
    (:meth:`FFmpegChild.terminate`), False when something else killed it.  ffmpeg traps
    SIGTERM and exits with status 255: after :meth:`FFmpegChild.terminate` that is a
    kill too (``signal`` SIGTERM, ``exit_code`` 255)."""

    def __init__(self, sig: int, tail: Sequence[str], *, terminated: bool, how: str | None = None,
                 exit_code: int | None = None) -> None:
        self.terminated = terminated
        super().__init__(how or f"killed by signal {sig} {_signame(sig)}".rstrip(), exit_code=exit_code,
                         sig=sig, tail=tail)


class FFmpegTimeout(FFmpegKilled):
    """ffmpeg ran longer than its *timeout* and was stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, timeout: float, sig: int | None, tail: Sequence[str]) -> None:
        self.timeout = timeout
        super().__init__(sig or signal.SIGKILL, tail, terminated=True, how=f"timed out after {timeout:g} s")


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return ""


# --------------------------------------------------------------------------- the child


class _ChildProtocol(protocol.ProcessProtocol):
    """stdout bytes to *on_stdout*, stderr lines to *on_line* (and the tail); the end
    reason to *on_end*."""

    def __init__(self, on_line: Callable[[str], None] | None, on_stdout: Callable[[bytes], None] | None,
                 on_end: Callable[[Failure], None]) -> None:
        self._on_line = on_line
        self._on_stdout = on_stdout
        self._on_end = on_end
        self._err = b""
        self.tail: list[str] = []

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if self._on_stdout is not None:
            self._on_stdout(data)

    def errReceived(self, data: bytes) -> None:
        self._err += data.replace(b"\r", b"\n")
        while b"\n" in self._err:
            raw, self._err = self._err.split(b"\n", 1)
            self._line(raw)
        if len(self._err) > MAX_LINE:
            self._line(self._err)
            self._err = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        self.tail = (self.tail + [line])[-TAIL_LINES:]
        if self._on_line is not None:
            try:
                self._on_line(line)
            except Exception:  # noqa: BLE001 - a broken log sink must not break the run
                log.failure("ffmpeg stderr callback failed")

    def processEnded(self, reason: Failure) -> None:
        if self._err:
            self._line(self._err)
            self._err = b""
        self._on_end(reason)


class FFmpegChild:
    """One ffmpeg run (see the module docstring).  Nothing happens until :meth:`start`."""

    def __init__(self, reactor: ProcessReactor, argv: Sequence[str], *,
                 on_line: Callable[[str], None] | None = None,
                 on_stdout: Callable[[bytes], None] | None = None,
                 kill_grace: float = 5.0, timeout: float | None = None, niceness: int = 10,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 killpg: Killer | None = None) -> None:
        self._reactor = reactor
        self.argv = wrap_argv(argv, niceness=niceness)
        self._env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self._grace = kill_grace
        self._timeout = timeout
        self._killpg: Killer = killpg or getattr(reactor, "killpg", None) or signal_group
        self._proto = _ChildProtocol(on_line, on_stdout, self._ended)
        self._timers: list[IDelayedCall] = []
        self._exit_waiters: list[defer.Deferred[None]] = []
        self._gone_waiters: list[defer.Deferred[None]] = []
        self._outcome: Failure | None = None
        self.pid: int | None = None
        self.done = False
        self.terminating = False
        self.timed_out = False

    @property
    def stderr_tail(self) -> list[str]:
        """The last stderr lines so far."""
        return list(self._proto.tail)

    def start(self) -> FFmpegChild:
        """Spawn the process (once); returns self."""
        if self.pid is not None or self.done:
            raise RuntimeError("an FFmpegChild runs once")
        transport = self._reactor.spawnProcess(self._proto, self.argv[0], self.argv, env=self._env,
                                               path=self._cwd, usePTY=False)
        self.pid = transport.pid
        if self._timeout is not None:
            self._timers.append(self._reactor.callLater(self._timeout, self._time_out))
        return self

    def when_exited(self) -> defer.Deferred[None]:
        """A new Deferred: None on exit 0, else an :class:`FFmpegError` subclass."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.done:
            self._fire(d, self._outcome)
        else:
            self._exit_waiters.append(d)
        return d

    def terminate(self) -> defer.Deferred[None]:
        """SIGTERM the process group now, SIGKILL it after the grace period; the new
        Deferred fires None once the process is gone (whatever its exit)."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.done or self.pid is None:
            d.callback(None)
            return d
        self._gone_waiters.append(d)
        if not self.terminating:
            self.terminating = True
            self._killpg(self.pid, signal.SIGTERM)
            self._timers.append(self._reactor.callLater(self._grace, self._kill))
        return d

    def _time_out(self) -> None:
        self.timed_out = True
        self.terminate()

    def _kill(self) -> None:
        if not self.done and self.pid is not None:
            self._killpg(self.pid, signal.SIGKILL)

    def _ended(self, reason: Failure) -> None:
        self.done = True
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        self._outcome = self._classify(reason)
        waiters, self._exit_waiters = self._exit_waiters, []
        for d in waiters:
            self._fire(d, self._outcome)
        gone, self._gone_waiters = self._gone_waiters, []
        for d in gone:
            d.callback(None)

    def _classify(self, reason: Failure) -> Failure | None:
        if reason.check(error.ProcessDone):
            return None
        value = reason.value
        code: int | None = getattr(value, "exitCode", None)
        sig: int | None = getattr(value, "signal", None)
        tail = self._proto.tail
        exc: FFmpegError
        if self.timed_out and self._timeout is not None:
            exc = FFmpegTimeout(self._timeout, sig, tail)
        elif sig:
            exc = FFmpegKilled(sig, tail, terminated=self.terminating)
        elif self.terminating:  # ffmpeg trapped our SIGTERM and exited non-zero
            exc = FFmpegKilled(signal.SIGTERM, tail, terminated=True, exit_code=code)
        else:
            exc = FFmpegExitError(code if code is not None else -1, tail)
        return Failure(exc)

    @staticmethod
    def _fire(d: defer.Deferred[None], outcome: Failure | None) -> None:
        if outcome is None:
            d.callback(None)
        else:
            d.errback(outcome)
