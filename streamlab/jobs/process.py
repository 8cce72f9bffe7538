"""The encoder's ffmpeg children: one per encode step, progress read from stdout, and the
start-up safety net against children of a previous daemon.

A step runs as a :class:`streamlab.ffmpeg.FFmpegChild` (the one child-process runner the
packager uses too: its own process group at nice 10, dying with the daemon, SIGTERM then
SIGKILL on terminate, typed exit errors); :func:`encode_child` only adds the parsing of
``-progress pipe:1`` blocks on stdout (:mod:`streamlab.jobs.progress`).

:func:`leftover_pids` / :func:`kill_leftovers` are the start-up safety net for children
of a previous daemon that the death signal could not reach (no setpriv, a kernel without
it): every process whose command line names a path under the state directory's work
folder is killed before a job is run again, so no two encoders ever write the same files.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence

from streamlab.ffmpeg import FFmpegChild, ProcessReactor
from streamlab.jobs.progress import ProgressBlock, ProgressParser


def encode_child(reactor: ProcessReactor, argv: Sequence[str], *, on_line: Callable[[str], None],
                 on_progress: Callable[[ProgressBlock], None], kill_grace: float = 5.0,
                 niceness: int = 10, env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> FFmpegChild:
    """An (unstarted) child for one encode step: stderr lines to *on_line*, every
    ``-progress pipe:1`` block on stdout to *on_progress*."""
    parser = ProgressParser()

    def stdout(data: bytes) -> None:
        for block in parser.feed(data):
            on_progress(block)

    return FFmpegChild(reactor, argv, on_line=on_line, on_stdout=stdout, kill_grace=kill_grace,
                       niceness=niceness, env=env, cwd=cwd)


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
