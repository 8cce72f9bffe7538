"""First-run setup on the real daemon with the real ffmpeg: seeding the demo item
(synthesised, probed, encoded, served), and a stop during the synthesis.  The status,
initialize and the seed state machine (exists, first start once, 503 on stop) are tested
in memory: tests/test_api_setup.py."""

from __future__ import annotations

import os
import time

import pytest

from streamlab.testing.daemon import Daemon

SEED = {"seed_duration": "6", "seed_codecs": "h264", "kill_grace_seconds": "3"}


def wait_for(fn, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {value!r}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("setup")), {"jobs": dict(SEED, seed_on_first_start="no")})
    d.start()
    yield d
    d.stop()


def test_seed_queues_an_encode_that_completes_then_exists(daemon):
    s = daemon.get("/api/setup").json()  # the host's ffmpeg, probed at start
    assert s["ffmpeg"]["found"] is True and "libx264" in s["ffmpeg"]["encoders"]
    assert s["ffmpeg"]["version"].startswith("ffmpeg version")
    r = daemon.request("POST", "/api/setup/seed")
    assert r.status == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["job_id"] and body["source_id"]
    source = daemon.get(f"/api/sources/{body['source_id']}").json()
    assert source["resolution"] == "1280x720" and source["fps"] == 30
    assert abs(source["duration"] - 6.0) < 0.1 and source["audio_codec"] == "aac"
    # while it is encoding a second seed does not start another one
    assert daemon.request("POST", "/api/setup/seed").json()["status"] == "exists"
    job = wait_for(lambda: (lambda j: j if j["status"] in ("complete", "failed", "cancelled") else None)(
        daemon.get(f"/api/jobs/{body['job_id']}").json()), what="seed job")
    assert job["status"] == "complete", job
    names = {i["name"]: i for i in daemon.get("/api/content").json()}
    assert "streamlab_demo_h264" in names
    assert [v["id"] for v in names["streamlab_demo_h264"]["variants"]] == ["720p", "540p", "360p"] or \
        sorted(v["id"] for v in names["streamlab_demo_h264"]["variants"]) == ["360p", "540p", "720p"]
    r = daemon.request("POST", "/api/setup/seed")
    assert r.status == 200 and r.json()["status"] == "exists"
    s = daemon.get("/api/setup").json()
    assert s["content_count"] == 1 and s["sources_count"] == 1


def test_stop_during_seed_synthesis_leaves_no_process_or_file(tmp_path):
    import subprocess

    d = Daemon(str(tmp_path), {"jobs": dict(SEED, seed_on_first_start="yes", seed_duration="600")})
    d.start()
    uploads = os.path.join(d.state_dir, "uploads")
    try:
        def synth_pids():
            out = subprocess.run(["pgrep", "-f", f"{uploads}/seed-"], capture_output=True, text=True)
            return out.stdout.split()

        wait_for(synth_pids, timeout=30, what="the synthesis ffmpeg")
    finally:
        d.stop()
    assert synth_pids() == []
    assert [n for n in os.listdir(uploads) if n.startswith("seed-")] == []


def test_stop_during_an_api_seed_answers_503_without_a_traceback(tmp_path):
    """``POST /api/setup/seed`` waits for the synthesis; a SIGTERM meanwhile answers the
    request 503 "daemon stopping" (or cuts it) and logs no traceback (the module's log
    check fails on one)."""
    import subprocess
    import threading

    from streamlab.testing.daemon import request

    d = Daemon(str(tmp_path), {"jobs": dict(SEED, seed_on_first_start="no", seed_duration="600")})
    d.start()
    uploads = os.path.join(d.state_dir, "uploads")
    answer: dict = {}

    def seed() -> None:
        try:
            r = request(d.port, "POST", "/api/setup/seed", timeout=60)
            answer["status"] = r.status
        except OSError as exc:  # the stop may cut the connection first
            answer["error"] = exc

    t = threading.Thread(target=seed)
    try:
        t.start()
        wait_for(lambda: subprocess.run(["pgrep", "-f", f"{uploads}/seed-"], capture_output=True,
                                        text=True).stdout.split(), timeout=30, what="the synthesis ffmpeg")
    finally:
        d.stop()
    t.join(30)
    assert answer.get("status") in (503, None), answer
