"""Running one ffmpeg child: its own process group, low priority, cancellable.

:class:`FFmpegRun` spawns ``setsid -w nice -n 10 ffmpeg ...`` with
``reactor.spawnProcess`` (no PTY).  ``setsid`` makes ffmpeg the leader of a new
process group whose id is the child's pid, so :meth:`FFmpegRun.terminate` can signal
the whole group: SIGTERM, then SIGKILL after ``kill_grace`` seconds.  stdout carries
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


def wrap_argv(argv: Sequence[str], *, niceness: int = 10) -> list[str]:
    """``argv`` prefixed with ``setsid -w`` (new process group) and ``nice -n``."""
    prefix: list[str] = []
    setsid = shutil.which("setsid")
    if setsid:
        prefix += [setsid, "-w"]
    nice = shutil.which("nice")
    if nice and niceness:
        prefix += [nice, "-n", str(niceness)]
    return prefix + list(argv)


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
