"""Uploads against the real daemon with real ffprobe on a tiny generated clip: an upload
survives a daemon restart.  Chunks, retries, 4xx answers, completion and abandonment are
tested in memory: tests/test_api_uploads.py."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from streamlab.testing.daemon import Daemon

MAX_UPLOAD = 400_000
CHUNK = 8192


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True, timeout=60)
    data = path.read_bytes()
    assert len(data) > 3 * CHUNK
    return data


def init(d, data: bytes, filename="clip.mp4", **extra):
    body = {"filename": filename, "file_size": len(data), "codec_selection": "h264", **extra}
    r = d.request("POST", "/api/upload/init", body)
    assert r.status == 200, r.body
    out = r.json()
    assert out["status"] == "uploading" and out["chunk_size_hint"] > 0
    return out["job_id"], out


def send(d, job_id, offset, data):
    return d.request("POST", f"/api/upload/chunk/{job_id}?offset={offset}", data,
                     headers={"Content-Type": "application/octet-stream"})


def send_all(d, job_id, data, start=0):
    for off in range(start, len(data), CHUNK):
        r = send(d, job_id, off, data[off:off + CHUNK])
        assert r.status == 200, r.body


def test_restart_mid_upload_resumes(tmp_path, clip):
    d = Daemon(str(tmp_path), config={"jobs": {"max_upload_bytes": str(MAX_UPLOAD)}})
    with d:
        job_id, _ = init(d, clip, filename="resume.mp4", sha256=hashlib.sha256(clip).hexdigest())
        send_all(d, job_id, clip[: 3 * CHUNK])
    with d:
        state = d.get(f"/api/upload/{job_id}").json()
        assert state["received_size"] == 3 * CHUNK and state["status"] == "uploading"
        job = d.get(f"/api/jobs/{job_id}")
        deadline = time.monotonic() + 10
        while job.status != 200 and time.monotonic() < deadline:  # the job list loads after start
            time.sleep(0.05)
            job = d.get(f"/api/jobs/{job_id}")
        assert job.json()["status"] == "uploading"
        send_all(d, job_id, clip, start=state["received_size"])
        r = d.request("POST", f"/api/upload/complete/{job_id}", {})
        assert r.status == 200, r.body
        source = d.get(f"/api/sources/{r.json()['source_id']}").json()  # probed by the real ffprobe
        assert (source["resolution"], source["codec"], source["audio_codec"]) == ("160x90", "h264", "aac")
        for j in d.get("/api/jobs").json():
            d.request("POST", f"/api/jobs/{j['job_id']}/cancel")
