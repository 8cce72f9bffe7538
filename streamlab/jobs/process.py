"""Running one ffmpeg child: its own process group, low priority, cancellable, and never
outliving the daemon.

:func:`wrap_argv` is the one place that turns an argv into what ``reactor.spawnProcess``
runs for any long-lived media child (ffmpeg encodes here; the packager can use it too):
``setpriv --pdeathsig KILL setsid -w nice -n 10 ffmpeg ...``.  ``setpriv`` (util-linux)
sets Linux's PR_SET_PDEATHSIG, so the kernel SIGKILLs the child the moment the daemon dies
(even by SIGKILL); ``setsid`` makes ffmpeg the leader of a new process group whose id is
the child's pid, so :meth:`FFmpegRun.terminate` can signal the whole group: SIGTERM, then
SIGKILL after ``kill_grace`` seconds.  (The child is not a group leader when it runs
``setsid``, so setsid does not fork and the death signal stays on ffmpeg itself.)

:func:`leftover_pids` / :func:`kill_leftovers` are the start-up safety net for children
of a previous daemon that the death signal could not reach (no setpriv, a kernel without
it): every process whose command line names a path under the state directory's work
folder is killed before a job is run again, so no two encoders ever write the same files.  stdout carries
``-progress pipe:1`` blocks (parsed by :mod:`streamlab.jobs.progress`); stderr lines go
to a callback (the job log).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from streamlab.jobs.progress import ProgressBlock, ProgressParser

MAX_LINE = 4096


def signal_group(pid: int, sig: int) -> None:
    """Send *sig* to the process group led by *pid* (or just *pid* if there is none)."""
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


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` when util-linux's setpriv supports it, else []."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return []
    return [setpriv, "--pdeathsig", "KILL"]


def wrap_argv(argv: Sequence[str], *, niceness: int = 10, die_with_parent: bool = True) -> list[str]:
    """``argv`` prefixed with ``setpriv --pdeathsig KILL`` (dies with the daemon),
    ``setsid -w`` (new process group) and ``nice -n``; each part only where installed."""
    prefix: list[str] = _pdeathsig_prefix() if die_with_parent else []
    setsid = shutil.which("setsid")
    if setsid:
        prefix += [setsid, "-w"]
    nice = shutil.which("nice")
    if nice and niceness:
        prefix += [nice, "-n", str(niceness)]
    return prefix + list(argv)


def _cmdline(pid: int, proc: str) -> list[str]:
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]


def _alive(pid: int, proc: str) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[:1] != [b"Z"]


def leftover_pids(folder: str, proc: str = "/proc") -> list[int]:
    """Processes (not this one) whose command line names *folder* or a path below it,
    e.g. ffmpeg children of a previous daemon writing into ``<state_dir>/work``.
    Blocking (reads /proc): call it in a thread."""
    folder = os.path.abspath(folder).rstrip("/")
    me = os.getpid()
    found = []
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    for name in names:
        if not name.isdecimal() or int(name) == me:
            continue
        pid = int(name)
        args = _cmdline(pid, proc)
        if any(a == folder or a.startswith(folder + "/") or ("=" + folder + "/") in a for a in args[1:]) \
                and _alive(pid, proc):
            found.append(pid)
    return sorted(found)


def kill_leftovers(pids: Sequence[int]) -> None:
    """SIGKILL each of *pids* and, where it leads one, its process group."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def still_alive(pids: Sequence[int], proc: str = "/proc") -> list[int]:
    """Those of *pids* that still run (zombies count as gone)."""
    return [pid for pid in pids if _alive(pid, proc)]


class ProcessFailed(Exception):
    """ffmpeg exited non-zero or was killed; ``exit_code``/``signal`` say how."""

    def __init__(self, exit_code: int | None, sig: int | None, tail: Sequence[str]) -> None:
        self.exit_code = exit_code
        self.signal = sig
        self.tail = list(tail)
        how = f"signal {sig}" if sig else f"exit code {exit_code}"
        last = self.tail[-1] if self.tail else ""
        super().__init__(f"ffmpeg failed ({how}){': ' + last if last else ''}")


class FFmpegProcessProtocol(protocol.ProcessProtocol):
    """Feeds stdout to a progress parser and stderr lines to a callback."""

    def __init__(self, on_line: Callable[[str], None], on_progress: Callable[[ProgressBlock], None]) -> None:
        self._on_line = on_line
        self._on_progress = on_progress
        self._parser = ProgressParser()
        self._err = b""
        self.tail: list[str] = []
        self.ended: defer.Deferred[Failure] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        for block in self._parser.feed(data):
            self._on_progress(block)

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
        self.tail = (self.tail + [line])[-20:]
        self._on_line(line)

    def processEnded(self, reason: Failure) -> None:
        if self._err:
            self._line(self._err)
            self._err = b""
        self.ended.callback(reason)


class FFmpegRun:
    """One ffmpeg run.  ``start()`` -> Deferred firing None on exit 0 or failing with
    :class:`ProcessFailed`; ``terminate()`` stops the whole process group."""

    def __init__(self, reactor: Any, argv: Sequence[str], *, on_line: Callable[[str], None],
                 on_progress: Callable[[ProgressBlock], None], kill_grace: float = 5.0,
                 niceness: int = 10, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 killer: Callable[[int, int], None] | None = None) -> None:
        self._reactor = reactor
        self.argv = wrap_argv(argv, niceness=niceness)
        self._env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self._grace = kill_grace
        self._killer = killer or getattr(reactor, "killpg", None) or signal_group
        self._proto = FFmpegProcessProtocol(on_line, on_progress)
        self._kill_call: IDelayedCall | None = None
        self.pid: int | None = None
        self.done = False
        self.terminating = False

    def start(self) -> defer.Deferred[None]:
        """Spawn the process; the Deferred fires when it has exited."""
        transport = self._reactor.spawnProcess(self._proto, self.argv[0], self.argv, env=self._env,
                                               path=self._cwd, usePTY=False)
        self.pid = transport.pid
        d = self._proto.ended
        d.addBoth(self._ended)
        return d

    def _ended(self, reason: Failure) -> None:
        self.done = True
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        if reason.check(error.ProcessDone):
            return None
        value = reason.value
        raise ProcessFailed(getattr(value, "exitCode", None), getattr(value, "signal", None),
                            self._proto.tail)

    def terminate(self) -> None:
        """SIGTERM the process group now and SIGKILL it after the grace period."""
        if self.done or self.pid is None or self.terminating:
            return
        self.terminating = True
        self._killer(self.pid, signal.SIGTERM)
        self._kill_call = self._reactor.callLater(self._grace, self._kill)

    def _kill(self) -> None:
        self._kill_call = None
        if not self.done and self.pid is not None:
            self._killer(self.pid, signal.SIGKILL)
