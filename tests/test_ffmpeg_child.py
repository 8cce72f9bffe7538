"""The one ffmpeg child-process runner (streamlab.ffmpeg): argv wrapping, typed exits,
terminate (SIGTERM, then SIGKILL after the grace), timeout, and real ffmpeg children
that fail, are killed from outside, and are terminated."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import pytest_twisted
from twisted.internet import defer, task

from streamlab.ffmpeg import FFmpegChild, FFmpegError, FFmpegExitError, FFmpegKilled, FFmpegTimeout, wrap_argv
from streamlab.testing.fakeprocess import FakeProcessReactor


def outcome(d: defer.Deferred) -> list:
    got: list = []
    d.addBoth(got.append)
    return got


# --------------------------------------------------------------------------- fake process reactor


def test_the_child_is_wrapped_dies_with_the_daemon_and_runs_at_nice_10() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg", "-i", "in.mp4", "out.mp4"])
    assert reactor.processes == []  # nothing happens before start()
    child.start()
    proc = reactor.processes[0]
    assert proc.args == child.argv == wrap_argv(["ffmpeg", "-i", "in.mp4", "out.mp4"])
    if shutil.which("setpriv"):
        assert proc.args[1:3] == ["--pdeathsig", "KILL"]
    nice = proc.args.index(shutil.which("nice")) if shutil.which("nice") else None
    assert nice is not None and proc.args[nice + 1:nice + 3] == ["-n", "10"]
    assert proc.args[-4:] == ["ffmpeg", "-i", "in.mp4", "out.mp4"]
    assert proc.stdin_closed and child.pid == proc.pid


def test_exit_zero_fires_none_and_stderr_lines_reach_the_callback() -> None:
    reactor = FakeProcessReactor()
    lines: list[str] = []
    out: list[bytes] = []
    child = FFmpegChild(reactor, ["ffmpeg"], on_line=lines.append, on_stdout=out.append).start()
    exited = outcome(child.when_exited())
    proc = reactor.processes[0]
    proc.err(b"frame=  1\rframe=  2\rsome")
    proc.err(b" line\n")
    proc.out(b"progress=end\n")
    proc.exit(0)
    assert exited == [None] and outcome(child.when_exited()) == [None]  # later callers too
    assert lines == ["frame=  1", "frame=  2", "some line"] and out == [b"progress=end\n"]


def test_non_zero_exit_is_an_exit_error_with_the_stderr_tail() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"]).start()
    exited = outcome(child.when_exited())
    proc = reactor.processes[0]
    for n in range(40):
        proc.err(f"line {n}\n".encode())
    proc.err(b"in.mp4: No such file or directory\n")
    proc.exit(1)
    err = exited[0].value
    assert type(err) is FFmpegExitError and (err.exit_code, err.signal) == (1, None)
    assert str(err) == "ffmpeg failed (exit code 1): in.mp4: No such file or directory"
    assert len(err.stderr_tail) == 25 and err.stderr_tail[-1].endswith("No such file or directory")


def test_killed_from_outside_is_killed_not_terminated() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"]).start()
    exited = outcome(child.when_exited())
    reactor.processes[0].exit(sig=signal.SIGKILL)  # e.g. the OOM killer
    err = exited[0].value
    assert type(err) is FFmpegKilled and not err.terminated and err.signal == signal.SIGKILL
    assert str(err) == "ffmpeg failed (killed by signal 9 SIGKILL)"
    assert reactor.group_signals == []


def test_terminate_sends_sigterm_then_sigkill_after_the_grace() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"], kill_grace=5.0).start()
    exited = outcome(child.when_exited())
    gone = outcome(child.terminate())
    again = outcome(child.terminate())  # idempotent: one SIGTERM, one timer
    assert reactor.group_signals == [(child.pid, signal.SIGTERM)]
    reactor.advance(4.9)
    assert reactor.group_signals == [(child.pid, signal.SIGTERM)] and gone == []
    reactor.advance(0.2)
    assert reactor.group_signals == [(child.pid, signal.SIGTERM), (child.pid, signal.SIGKILL)]
    reactor.processes[0].exit(sig=signal.SIGKILL)
    assert gone == [None] and again == [None]
    err = exited[0].value
    assert type(err) is FFmpegKilled and err.terminated
    assert outcome(child.terminate()) == [None]  # already gone: at once, no signal
    assert len(reactor.group_signals) == 2


def test_ffmpeg_trapping_sigterm_and_exiting_255_is_a_kill_without_sigkill() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"], kill_grace=5.0).start()
    exited = outcome(child.when_exited())
    child.terminate()
    proc = reactor.processes[0]
    proc.err(b"Exiting normally, received signal 15.\n")
    proc.exit(255)
    reactor.advance(10)
    assert [s for _, s in reactor.group_signals] == [signal.SIGTERM]  # the SIGKILL timer was cancelled
    err = exited[0].value
    assert type(err) is FFmpegKilled and err.terminated and (err.signal, err.exit_code) == (15, 255)
    assert str(err).startswith("ffmpeg failed (killed by signal 15 SIGTERM)")


def test_timeout_terminates_and_fails_with_timeout() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"], timeout=60.0, kill_grace=5.0).start()
    exited = outcome(child.when_exited())
    reactor.advance(59)
    assert reactor.group_signals == []
    reactor.advance(1)
    assert reactor.group_signals == [(child.pid, signal.SIGTERM)]
    reactor.processes[0].exit(sig=signal.SIGTERM)
    err = exited[0].value
    assert isinstance(err, FFmpegTimeout) and isinstance(err, FFmpegKilled) and err.timeout == 60.0
    assert str(err) == "ffmpeg failed (timed out after 60 s)"


def test_a_quick_exit_cancels_the_timeout() -> None:
    reactor = FakeProcessReactor()
    child = FFmpegChild(reactor, ["ffmpeg"], timeout=60.0).start()
    reactor.processes[0].exit(0)
    assert reactor.getDelayedCalls() == []
    assert outcome(child.when_exited()) == [None]


# --------------------------------------------------------------------------- real ffmpeg children


LONG = ["ffmpeg", "-hide_banner", "-nostdin", "-re", "-f", "lavfi",
        "-i", "testsrc2=size=64x64:rate=10:duration=120", "-f", "null", "-"]


@defer.inlineCallbacks
def _group_leader(reactor, pid: int):
    """Wait until *pid* leads its own process group (setsid has run and exec'd ffmpeg)."""
    deadline = reactor.seconds() + 20
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")[0]
            if os.getpgid(pid) == pid and cmd.endswith(b"ffmpeg"):
                return
        except (OSError, ProcessLookupError):
            pass
        assert reactor.seconds() < deadline, "ffmpeg did not start"
        yield task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.inlineCallbacks
def test_real_ffmpeg_killed_from_outside_gives_the_killed_error() -> None:
    from twisted.internet import reactor

    child = FFmpegChild(reactor, LONG).start()
    exited = child.when_exited()
    yield _group_leader(reactor, child.pid)
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == 10  # nice 10, really
    os.killpg(child.pid, signal.SIGKILL)
    with pytest.raises(FFmpegKilled) as info:
        yield exited
    assert not info.value.terminated and info.value.signal == signal.SIGKILL
    assert str(info.value).startswith("ffmpeg failed (killed by signal 9 SIGKILL)")
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)


@pytest_twisted.inlineCallbacks
def test_real_ffmpeg_terminated_is_gone_with_its_group() -> None:
    from twisted.internet import reactor

    child = FFmpegChild(reactor, LONG, kill_grace=5.0).start()
    exited = child.when_exited()
    yield _group_leader(reactor, child.pid)
    yield child.terminate()  # fires once the process is gone
    with pytest.raises(FFmpegKilled) as info:
        yield exited
    assert info.value.terminated
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)


@pytest_twisted.inlineCallbacks
def test_real_ffmpeg_failing_gives_the_exit_error_with_its_stderr(tmp_path) -> None:
    from twisted.internet import reactor

    missing = str(tmp_path / "missing.mp4")
    lines: list[str] = []
    child = FFmpegChild(reactor, ["ffmpeg", "-hide_banner", "-nostdin", "-i", missing, "-f", "null", "-"],
                        on_line=lines.append).start()
    with pytest.raises(FFmpegExitError) as info:
        yield child.when_exited()
    err = info.value
    assert isinstance(err, FFmpegError) and err.exit_code not in (0, None) and err.signal is None
    assert str(err).startswith(f"ffmpeg failed (exit code {err.exit_code}): ")
    assert any("missing.mp4" in line for line in err.stderr_tail) and err.stderr_tail[-1] == lines[-1]
