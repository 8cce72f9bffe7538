"""Encoding jobs end to end on the real daemon with real ffmpeg on tiny synthetic clips:
complete -> listed + served, cancel kills the process group and leaves nothing, daemon
restart mid-encode requeues and completes, the WebSocket and SSE streams on the wire.
Validation, 404/409 and the job state machine are tested in memory: tests/test_api_jobs.py."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest

from streamlab.testing.daemon import Daemon

TERMINAL = ("complete", "failed", "cancelled")


def make_clip(path: str, size: str, seconds: int, audio: bool) -> None:
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size={size}:rate=30"]
    if audio:
        argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", "aac"]
    argv += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path]
    subprocess.run(argv, check=True, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    tiny = str(d / "tiny.mp4")
    big = str(d / "bigger.mp4")
    make_clip(tiny, "320x180", 12, audio=True)
    make_clip(big, "960x540", 12, audio=False)
    return {"tiny": tiny, "bigger": big}


def add_source(daemon: Daemon, clip: str) -> dict:
    originals = os.path.join(daemon.media_dir, "originals")
    os.makedirs(originals, exist_ok=True)
    shutil.copy(clip, originals)
    assert daemon.request("POST", "/api/sources/scan-originals").status == 200
    name = os.path.basename(clip)
    return next(s for s in daemon.get("/api/sources").json() if s["file_path"] == f"originals/{name}")


def reencode(daemon: Daemon, source_id: str, **options) -> list[str]:
    r = daemon.request("POST", f"/api/sources/{source_id}/reencode", options)
    assert r.status == 200, r.text
    return r.json()["job_ids"]


def wait_job(daemon: Daemon, job_id: str, until, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = daemon.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job did not reach the expected state: {job}\n{daemon.log()[-3000:]}")


def ffmpeg_pids(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("jobs")), {"jobs": {"kill_grace_seconds": "3"}})
    d.start()
    yield d
    d.stop()


# ---------------------------------------------------------------------- a minimal WebSocket client


class WS:
    """Just enough RFC 6455 for the test: handshake, read text/close frames."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, "connection closed during handshake"
            head += chunk
        self.status = int(head.split(b" ")[1])
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(length)

    def messages(self) -> tuple[list[dict], int | None]:
        """Every text message until the server closes; and the close code."""
        out = []
        while True:
            opcode, payload = self.frame()
            if opcode == 1:
                out.append(json.loads(payload))
            elif opcode == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                return out, code

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- tests


def test_job_runs_to_complete_and_is_served(daemon, clips):
    source = add_source(daemon, clips["tiny"])
    (job_id,) = reencode(daemon, source["source_id"], codec_selection="h264", output_name="Tiny Clip",
                         max_resolution="360p", padding="pink")
    first = daemon.get(f"/api/jobs/{job_id}").json()
    assert first["name"] == "tiny_clip" and first["output_paths"] == ["tiny_clip_h264"]
    assert first["config"]["codec_selection"] == "h264" and first["source_id"] == source["source_id"]
    seen_stages = set()

    def done(job):
        seen_stages.add(job["stage"])
        return job["status"] in TERMINAL

    job = wait_job(daemon, job_id, done)
    assert job["status"] == "complete", job
    assert job["progress"] == 100.0 and job["started_at"] and job["completed_at"] and job["error"] is None
    assert any(s.startswith("encode 360p h264") for s in seen_stages) or "done" in seen_stages
    listed = [j["job_id"] for j in daemon.get("/api/jobs?status=complete").json()]
    assert job_id in listed
    items = {i["name"]: i for i in daemon.get("/api/content").json()}
    item = items["tiny_clip_h264"]
    assert item["codec"] == "h264" and [v["id"] for v in item["variants"]] == ["360p"]
    assert item["variants"][0]["resolution"] == "640x360"
    assert 600_000 * 0.8 < item["variants"][0]["bandwidth"] < 600_000 * 1.24 * 1.3
    item_dir = os.path.join(daemon.media_dir, "dynamic_content", "tiny_clip_h264")
    with open(os.path.join(item_dir, "content.json"), encoding="utf-8") as fh:
        index = json.load(fh)
    assert index["segment_count"] == 2 and index["duration"] == 12.0
    audio = next(t for t in index["tracks"] if t["type"] == "audio")
    assert audio["sample_rate"] == 48000 and audio["channels"] == 2 and audio["codecs"] == "mp4a.40.2"
    # the origin serves it as a looping live LL-HLS stream
    r = daemon.get("/go-live/tiny_clip_h264/playlist_360p.m3u8")
    assert r.status == 200, r.text
    assert "#EXT-X-PART:" in r.text and "video/360p/n" in r.text
    master = daemon.get("/go-live/tiny_clip_h264/master.m3u8")
    assert master.status == 200 and "avc1." in master.text and "mp4a.40.2" in master.text
    # the keyframes sit exactly on the GOP grid (closed GOPs of 1 s)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "frame=key_frame,pts_time",
                            "-of", "csv=p=0", "-i", f"concat:{item_dir}/video/360p/init.mp4|"
                            f"{item_dir}/video/360p/seg_00001.m4s"], capture_output=True, text=True)
    keys = [float(line.split(",")[1]) for line in probe.stdout.split() if line.startswith("1,")]
    assert keys[:6] == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.02)
    # the log persists
    assert not os.path.exists(os.path.join(daemon.state_dir, "work", job_id))


def test_cancel_mid_encode_kills_the_group_and_leaves_nothing(daemon, clips):
    source = add_source(daemon, clips["bigger"])
    (job_id,) = reencode(daemon, source["source_id"], codec_selection="both", output_name="cancelme",
                         max_resolution="540p")
    wait_job(daemon, job_id, lambda j: j["stage"].startswith("encode") and "p " in j["stage"]
             and ffmpeg_pids(job_id))
    r = daemon.request("POST", f"/api/jobs/{job_id}/cancel")
    assert r.status == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert ffmpeg_pids(job_id) == []
    assert not os.path.exists(os.path.join(daemon.state_dir, "work", job_id))
    content = os.listdir(os.path.join(daemon.media_dir, "dynamic_content"))
    assert not [n for n in content if "cancelme" in n]
    assert daemon.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
    # (409 on a second cancel, delete and the source going with it: tests/test_api_jobs.py)


def test_websocket_stream_delivers_log_progress_and_end(daemon, clips):
    source = add_source(daemon, clips["tiny"])
    (job_id,) = reencode(daemon, source["source_id"], codec_selection="h264", output_name="wsclip",
                         max_resolution="360p")
    ws = WS(daemon.port, f"/api/jobs/{job_id}/stream")
    assert ws.status == 101
    messages, code = ws.messages()
    ws.close()
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert kinds.count("end") == 1 and kinds[-1] == "end"
    assert messages[-1]["status"] == "complete" and messages[-1]["error"] is None
    logs = [m["line"] for m in messages if m["type"] == "log"]
    assert any("libx264" in line for line in logs)
    assert len(logs) == len(set(enumerate(logs)))
    progress = [m for m in messages if m["type"] == "progress"]
    assert progress and set(progress[0]) == {"type", "progress", "stage", "status"}
    assert any(0 < p["progress"] < 100 for p in progress) or progress[-1]["progress"] == 100
    # a late client gets the whole log again, then the end
    late = WS(daemon.port, f"/api/jobs/{job_id}/stream")
    again, code = late.messages()
    late.close()
    assert [m["line"] for m in again if m["type"] == "log"] == logs
    assert again[-1] == {"type": "end", "status": "complete", "error": None}


class SSE:
    """Reads ``event: jobs`` frames off ``GET /api/jobs/stream`` (chunk framing is ignored:
    every event is one write, hence one chunk)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode("latin-1").lower()

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def event(self) -> dict:
        while True:
            m = re.search(rb"event: jobs\ndata: (.*?)\n\n", self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return json.loads(m.group(1))
            self._recv()

    def until(self, pred, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            body = self.event()
            if pred(body):
                return body
        raise AssertionError("no matching jobs event before the deadline")

    def close(self) -> None:
        self.sock.close()


def test_job_list_stream_pushes_created_cancelled_deleted(daemon, clips):
    sse = SSE(daemon.port, "/api/jobs/stream")
    assert sse.head.startswith("http/1.1 200") and "content-type: text/event-stream" in sse.head
    first = sse.event()
    assert first["jobs"] == daemon.get("/api/jobs").json()
    source = add_source(daemon, clips["bigger"])
    (job_id,) = reencode(daemon, source["source_id"], codec_selection="h264", output_name="sselist",
                         max_resolution="540p")

    def status_of(body):
        return next((j["status"] for j in body["jobs"] if j["job_id"] == job_id), None)

    seen = sse.until(lambda b: status_of(b) is not None)
    assert seen["revision"] > first["revision"]
    assert daemon.request("POST", f"/api/jobs/{job_id}/cancel").status == 200
    sse.until(lambda b: status_of(b) == "cancelled")
    assert daemon.request("DELETE", f"/api/jobs/{job_id}").status == 200
    sse.until(lambda b: status_of(b) is None)
    sse.close()


def test_daemon_restart_mid_encode_requeues_and_completes(tmp_path, clips):
    d = Daemon(str(tmp_path), {"jobs": {"kill_grace_seconds": "3"}})
    d.start()
    try:
        source = add_source(d, clips["bigger"])
        (job_id,) = reencode(d, source["source_id"], codec_selection="h264", output_name="restartme",
                             max_resolution="540p")
        wait_job(d, job_id, lambda j: j["stage"].startswith("encode") and "p h264" in j["stage"]
                 and ffmpeg_pids(job_id))
        d.stop()  # SIGTERM (twistd exits with the signal's status)
        assert ffmpeg_pids(job_id) == []
        assert not os.path.exists(os.path.join(d.state_dir, "work", job_id))
        d.start()
        job = wait_job(d, job_id, lambda j: j["status"] in TERMINAL)
        assert job["status"] == "complete", job
        names = [i["name"] for i in d.get("/api/content").json()]
        assert "restartme_h264" in names
        ws = WS(d.port, f"/api/jobs/{job_id}/stream")
        messages, _ = ws.messages()
        ws.close()
        lines = [m["line"] for m in messages if m["type"] == "log"]
        assert any("requeued" in line or "interrupted" in line for line in lines)
    finally:
        d.stop()
