"""Encoders never outlive the daemon, and a restart never runs a second encoder beside
an old one (issue #17 item 3), with real ffmpeg and a real daemon:

* SIGKILL the daemon mid-encode: the kernel kills ffmpeg too (PR_SET_PDEATHSIG through
  ``setpriv``); the restart requeues the job and exactly one encoder runs it.  ffmpeg
  runs with SIGPIPE ignored, as under systemd (``IgnoreSIGPIPE=yes`` is its default and
  children inherit it): otherwise the orphan would usually die of its next write to the
  dead daemon's pipe, hiding the problem;
* a leftover process of a previous daemon that still writes into the state directory's
  work folder (one the death signal could not reach) is killed at start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from streamlab.jobs.process import leftover_pids, still_alive
from streamlab.testing.daemon import Daemon
from tests.integration.test_jobs_api import TERMINAL, add_source, make_clip, reencode, wait_job

SLOW_FFMPEG = """#!/bin/sh
# the real ffmpeg with SIGPIPE ignored (as systemd starts services), reading its input at
# the native frame rate (-re) so an encode lasts as long as the clip
trap '' PIPE
case " $* " in
  *" -i "*) exec ffmpeg -re "$@" ;;
  *) exec ffmpeg "$@" ;;
esac
"""


def _encoders(job_id: str) -> list[int]:
    """ffmpeg processes working for *job_id* (its work folder is in their argv)."""
    out = subprocess.run(["pgrep", "-f", f"ffmpeg.*{job_id}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return [p for p in pids if still_alive([p])]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("enc-clips") / "long.mp4")
    make_clip(path, "960x540", 10, audio=False)
    return path


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="util-linux setpriv not installed")
def test_sigkilled_daemon_takes_its_encoder_along_and_the_restart_runs_exactly_one(tmp_path, clip):
    ffmpeg = tmp_path / "bin" / "ffmpeg"
    ffmpeg.parent.mkdir()
    ffmpeg.write_text(SLOW_FFMPEG)
    ffmpeg.chmod(0o755)
    (tmp_path / "d").mkdir()
    d = Daemon(str(tmp_path / "d"), {"jobs": {"kill_grace_seconds": "3", "ffmpeg": str(ffmpeg)}})
    d.start()
    try:
        source = add_source(d, clip)
        (job_id,) = reencode(d, source["source_id"], codec_selection="h264", output_name="killme",
                             max_resolution="540p")
        wait_job(d, job_id, lambda j: j["stage"].startswith("encode") and "p h264" in j["stage"]
                 and _encoders(job_id))
        old = _encoders(job_id)
        assert len(old) == 1
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        try:
            _wait(lambda: not still_alive(old), 3, f"ffmpeg {old} outlived the SIGKILLed daemon")
        except AssertionError:
            for pid in still_alive(old):
                os.killpg(pid, signal.SIGKILL)
            raise
        d.start()
        seen: set[int] = set()

        def running_alone() -> bool:
            pids = _encoders(job_id)
            assert len(pids) <= 1, f"two encoders for {job_id}: {pids}"
            seen.update(pids)
            job = d.get(f"/api/jobs/{job_id}").json()
            return job["status"] in TERMINAL

        _wait(running_alone, 120, "the requeued job did not finish")
        assert d.get(f"/api/jobs/{job_id}").json()["status"] == "complete"
        assert seen and not seen & set(old)
        assert "Traceback" not in d.log()
    finally:
        d.stop()


def test_leftover_writer_in_the_work_folder_is_killed_at_start(tmp_path):
    d = Daemon(str(tmp_path))
    work = os.path.join(d.state_dir, "work", "job-from-before")
    os.makedirs(work)
    # an "encoder" of a previous daemon: its own session, ppid 1 once its parent is gone,
    # naming an output file in the work folder as ffmpeg does
    orphan = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()",
                               os.path.join(work, "video_540p.mp4")], start_new_session=True)
    try:
        work_root = os.path.join(d.state_dir, "work")
        _wait(lambda: leftover_pids(work_root) == [orphan.pid], 10, "the stand-in encoder is not seen")
        d.start()
        _wait(lambda: orphan.poll() is not None, 15, "the leftover process survived the start")
        assert orphan.returncode == -signal.SIGKILL
        assert "leftover encoder" in d.log()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        d.stop()
