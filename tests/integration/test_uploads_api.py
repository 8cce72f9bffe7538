"""Uploads against the real daemon with real ffprobe on a tiny generated clip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid

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


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("uploads")),
               config={"jobs": {"max_upload_bytes": str(MAX_UPLOAD), "encode_workers": "1"}})
    d.start()
    yield d
    d.stop()


def multipart(fields: dict, file: tuple[str, bytes] | None = None) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                         f"{v}\r\n".encode())
    if file is not None:
        filename, data = file
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


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


def sources(d):
    return d.get("/api/sources").json()


def originals(d):
    return sorted(os.listdir(os.path.join(d.media_dir, "originals")))


def part_files(d):
    path = os.path.join(d.state_dir, "uploads")
    return sorted(n for n in os.listdir(path) if n.endswith(".part")) if os.path.isdir(path) else []


def test_chunked_upload_with_retries_and_out_of_order_chunk(up, clip):
    job_id, info = init(up, clip, filename="show.mp4", sha256=hashlib.sha256(clip).hexdigest())
    assert up.get("/api/upload/active").json()["active_uploads"] >= 1
    assert send(up, job_id, 0, clip[:CHUNK]).json()["received_size"] == CHUNK
    # the same chunk again (a client retry): acknowledged, nothing changes
    r = send(up, job_id, 0, clip[:CHUNK])
    assert r.status == 200 and r.json()["received_size"] == CHUNK
    # out of order: a gap is refused with where to resume
    r = send(up, job_id, 2 * CHUNK, clip[2 * CHUNK:3 * CHUNK])
    assert r.status == 409 and r.json()["received_size"] == CHUNK
    # a repeat with different bytes is refused
    r = send(up, job_id, 0, b"\0" * CHUNK)
    assert r.status == 409 and r.json()["received_size"] == CHUNK
    # second chunk as multipart with the offset as a form field
    body, headers = multipart({"offset": CHUNK}, ("blob", clip[CHUNK:2 * CHUNK]))
    r = up.request("POST", f"/api/upload/chunk/{job_id}", body, headers=headers)
    assert r.status == 200 and r.json()["received_size"] == 2 * CHUNK, r.body
    # third chunk with Content-Range
    r = up.request("POST", f"/api/upload/chunk/{job_id}", clip[2 * CHUNK:3 * CHUNK],
                   headers={"Content-Range": f"bytes {2 * CHUNK}-{3 * CHUNK - 1}/{len(clip)}"})
    assert r.status == 200 and r.json()["received_size"] == 3 * CHUNK
    send_all(up, job_id, clip, start=3 * CHUNK)
    state = up.get(f"/api/upload/{job_id}").json()
    assert state == {"job_id": job_id, "received_size": len(clip), "expected_size": len(clip),
                     "status": "uploading"}
    r = up.request("POST", f"/api/upload/complete/{job_id}", {})
    assert r.status == 200, r.body
    done = r.json()
    assert done["status"] == "queued" and done["source_id"] == info["source_id"] and done["job_id"] == job_id
    source = up.get(f"/api/sources/{done['source_id']}").json()
    assert source["status"] == "ready" and source["resolution"] == "160x90" and source["codec"] == "h264"
    assert source["file_size"] == len(clip) and source["original_filename"] == "show.mp4"
    with open(os.path.join(up.media_dir, source["file_path"]), "rb") as fh:
        assert fh.read() == clip
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] in ("queued", "encoding", "complete") and job["source_id"] == source["source_id"]
    assert up.get(f"/api/upload/{job_id}").json()["status"] == "complete"
    assert job_id not in [u["job_id"] for u in up.get("/api/upload/active").json()["uploads"]]
    assert f"{job_id}.part" not in part_files(up)


def test_wrong_hash_is_422_and_stays_resumable(up, clip):
    job_id, info = init(up, clip, filename="hashy.mp4")
    send_all(up, job_id, clip)
    r = up.request("POST", f"/api/upload/complete/{job_id}", {"sha256": "0" * 64})
    assert r.status == 422
    body = r.json()
    assert body["expected_sha256"] == "0" * 64 and body["actual_sha256"] == hashlib.sha256(clip).hexdigest()
    assert info["source_id"] not in [s["source_id"] for s in sources(up)]
    assert up.get(f"/api/upload/{job_id}").json()["received_size"] == len(clip)
    r = up.request("POST", f"/api/upload/complete/{job_id}", {"sha256": hashlib.sha256(clip).hexdigest()})
    assert r.status == 200, r.body
    assert info["source_id"] in [s["source_id"] for s in sources(up)]


def test_truncated_upload_is_422_size_mismatch_then_resumes(up, clip):
    job_id, _ = init(up, clip, filename="short.mp4")
    send_all(up, job_id, clip[: 2 * CHUNK])
    r = up.request("POST", f"/api/upload/complete/{job_id}", {})
    assert r.status == 422 and r.json()["error"] == "size mismatch"
    assert r.json()["received_size"] == 2 * CHUNK and r.json()["expected_size"] == len(clip)
    resume = up.get(f"/api/upload/{job_id}").json()["received_size"]
    send_all(up, job_id, clip, start=resume)
    assert up.request("POST", f"/api/upload/complete/{job_id}", {}).status == 200


def test_non_video_is_422_and_discarded(up):
    junk = b"this is not a video at all\n" * 100
    job_id, info = init(up, junk, filename="notes.mp4")
    send_all(up, job_id, junk)
    r = up.request("POST", f"/api/upload/complete/{job_id}", {})
    assert r.status == 422 and r.json()["discarded"] is True
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert f"{job_id}.part" not in part_files(up)
    assert info["source_id"] not in [s["source_id"] for s in sources(up)]
    assert "notes.mp4" not in originals(up)
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and "invalid media" in job["error"]


def test_oversized_uploads_are_413(up, clip):
    before = originals(up)
    r = up.request("POST", "/api/upload/init", {"filename": "big.mp4", "file_size": MAX_UPLOAD + 1})
    assert r.status == 413 and "error" in r.json()
    body, headers = multipart({"codec_selection": "h264"}, ("big.mp4", b"\0" * (MAX_UPLOAD + 2_000_000)))
    r = up.request("POST", "/api/upload", body, headers=headers)
    assert r.status == 413 and r.json()["error"] == "body too large"
    job_id, _ = init(up, clip, filename="chunky.mp4")
    r = send(up, job_id, 0, b"\0" * (MAX_UPLOAD + 2_000_000))
    assert r.status == 413
    assert up.get(f"/api/upload/{job_id}").json()["received_size"] == 0
    assert originals(up) == before
    assert up.get("/api/health").status == 200


def test_filename_path_traversal_is_sanitised(up, clip):
    job_id, _ = init(up, clip, filename="../../etc/passwd")
    send_all(up, job_id, clip)
    r = up.request("POST", f"/api/upload/complete/{job_id}", {})
    assert r.status == 200, r.body
    source = up.get(f"/api/sources/{r.json()['source_id']}").json()
    assert source["file_path"].startswith("originals/") and ".." not in source["file_path"]
    assert source["file_path"] in [f"originals/{n}" for n in originals(up)]
    assert not os.path.exists(os.path.join(up.workdir, "etc"))


def test_single_shot_upload_and_options_checked_before_storing(up, clip):
    before_sources = len(sources(up))
    body, headers = multipart({"codec_selection": "nope", "segment_duration": "abc"}, ("single.mp4", clip))
    r = up.request("POST", "/api/upload", body, headers=headers)
    assert r.status == 400 and set(r.json()["fields"]) >= {"codec_selection", "segment_duration"}
    assert len(sources(up)) == before_sources and "single.mp4" not in originals(up)
    body, headers = multipart({"codec_selection": "h264", "partial_durations[]": ["200", "500"]},
                              ("single.mp4", clip))
    r = up.request("POST", "/api/upload", body, headers=headers)
    assert r.status == 200, r.body
    out = r.json()
    assert out["status"] == "queued" and len(out["job_ids"]) == 2 and out["job_id"] == out["job_ids"][0]
    names = sorted(up.get(f"/api/jobs/{j}").json()["name"] for j in out["job_ids"])
    assert names == ["single_p200", "single_p500"]
    assert "single.mp4" in originals(up)
    assert [p for p in part_files(up) if p.startswith("single-")] == []
    # not a video: 422, nothing kept
    body, headers = multipart({"codec_selection": "h264"}, ("text.mp4", b"hello" * 1000))
    r = up.request("POST", "/api/upload", body, headers=headers)
    assert r.status == 422 and "text.mp4" not in originals(up)


def test_bad_requests(up, clip):
    assert up.request("POST", "/api/upload/init", {"file_size": 10}).status == 400
    assert up.request("POST", "/api/upload/init", {"filename": "a.mp4", "file_size": "x"}).status == 400
    r = up.request("POST", "/api/upload/init", {"filename": "a.mp4", "file_size": 10, "hls_format": "zip"})
    assert r.status == 400 and "hls_format" in r.json()["fields"]
    assert send(up, str(uuid.uuid4()), 0, b"x").status == 404
    assert send(up, "../../etc", 0, b"x").status == 404
    job_id, _ = init(up, clip, filename="noofs.mp4")
    r = up.request("POST", f"/api/upload/chunk/{job_id}", b"abc")
    assert r.status == 400 and "offset" in r.json()["fields"]
    # form-encoded init works too
    r = up.request("POST", "/api/upload/init", b"filename=form.mp4&file_size=100&codec_selection=h264",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and r.json()["status"] == "uploading"


def test_delete_source_is_409_while_its_job_waits(up, clip):
    job_id, _ = init(up, clip, filename="busy.mp4")
    send_all(up, job_id, clip)
    source_id = up.request("POST", f"/api/upload/complete/{job_id}", {}).json()["source_id"]
    r = up.request("DELETE", f"/api/sources/{source_id}")
    assert r.status == 409 and job_id in r.json()["job_ids"]
    assert up.request("POST", f"/api/jobs/{job_id}/cancel").status == 200
    r = up.request("DELETE", f"/api/sources/{source_id}")
    assert r.status == 200
    assert up.get(f"/api/sources/{source_id}").status == 404
    assert "busy.mp4" not in originals(up)


def test_reencode_and_batch(up, clip):
    job_id, _ = init(up, clip, filename="again.mp4")
    send_all(up, job_id, clip)
    source_id = up.request("POST", f"/api/upload/complete/{job_id}", {}).json()["source_id"]
    r = up.request("POST", f"/api/sources/{source_id}/reencode",
                   b"output_name=Again+Two&codec_selection=h264&partial_durations[]=250",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r.body
    out = r.json()
    assert out["status"] == "queued" and out["source_id"] == source_id and len(out["job_ids"]) == 1
    assert up.get(f"/api/jobs/{out['job_ids'][0]}").json()["name"] == "again_two"
    r = up.request("POST", f"/api/sources/{source_id}/reencode", {"codec_selection": "vp8"})
    assert r.status == 400
    missing = str(uuid.uuid4())
    r = up.request("POST", "/api/sources/batch-reencode-json",
                   {"source_ids": [source_id, missing], "codec_selection": "h264", "segment_duration": 2})
    assert r.status == 200
    out = r.json()
    assert [j["source_id"] for j in out["jobs"]] == [source_id]
    assert [e["source_id"] for e in out["errors"]] == [missing]
    assert up.request("POST", "/api/sources/batch-reencode-json", {"source_ids": []}).status == 400
    # clean up the queue so the encoder does not keep the box busy
    for j in up.get("/api/jobs").json():
        if j["status"] in ("queued", "encoding"):
            up.request("POST", f"/api/jobs/{j['job_id']}/cancel")


def test_scan_originals(up, clip):
    folder = os.path.join(up.media_dir, "originals")
    with open(os.path.join(folder, "dropped.mp4"), "wb") as fh:
        fh.write(clip)
    with open(os.path.join(folder, "readme.txt"), "w") as fh:
        fh.write("not media")
    r = up.request("POST", "/api/sources/scan-originals")
    assert r.status == 200
    out = r.json()
    assert out["new"] == 1 and out["invalid"] == 1 and out["removed"] == 0
    listed = {s["file_path"]: s for s in sources(up)}
    assert listed["originals/dropped.mp4"]["status"] == "ready"
    assert listed["originals/readme.txt"]["status"] == "invalid" and listed["originals/readme.txt"]["error"]
    assert sources(up)[0]["uploaded_at"] >= sources(up)[-1]["uploaded_at"]  # newest first
    os.unlink(os.path.join(folder, "readme.txt"))
    out = up.request("POST", "/api/sources/scan-originals").json()
    assert out["removed"] == 1 and out["new"] == 0
    assert "originals/readme.txt" not in {s["file_path"] for s in sources(up)}


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
        for j in d.get("/api/jobs").json():
            d.request("POST", f"/api/jobs/{j['job_id']}/cancel")


def test_abandoned_upload_is_removed_and_its_job_failed(tmp_path, clip):
    d = Daemon(str(tmp_path), config={"jobs": {"upload_ttl": "1"}})
    with d:
        job_id, info = init(d, clip, filename="gone.mp4")
        send(d, job_id, 0, clip[:CHUNK])
        deadline = time.monotonic() + 15
        while d.get(f"/api/upload/{job_id}").status != 404:
            assert time.monotonic() < deadline, "upload never abandoned"
            time.sleep(0.1)
        job = d.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "failed" and job["error"] == "upload abandoned"
        assert part_files(d) == []
        assert info["source_id"] not in [s["source_id"] for s in sources(d)]


def test_active_uploads_listing(up, clip):
    job_id, _ = init(up, clip, filename="listed.mp4")
    send(up, job_id, 0, clip[:CHUNK])
    active = up.get("/api/upload/active").json()
    assert set(active) >= {"active_uploads", "queue_length", "uploads"}
    entry = [u for u in active["uploads"] if u["job_id"] == job_id][0]
    assert entry == {"job_id": job_id, "filename": "listed.mp4", "received_size": CHUNK,
                     "expected_size": len(clip), "status": "uploading"}
    assert isinstance(active["queue_length"], int)
    json.dumps(active)


def test_cancelling_the_job_discards_the_upload(up, clip):
    job_id, _ = init(up, clip, filename="cancelme.mp4")
    send(up, job_id, 0, clip[:CHUNK])
    assert up.request("POST", f"/api/jobs/{job_id}/cancel").status == 200
    r = send(up, job_id, CHUNK, clip[CHUNK:2 * CHUNK])
    assert r.status == 409 and r.json()["error"] == "upload cancelled"
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert f"{job_id}.part" not in part_files(up)


def test_complete_is_idempotent(up, clip):
    job_id, _ = init(up, clip, filename="twice.mp4")
    send_all(up, job_id, clip)
    first = up.request("POST", f"/api/upload/complete/{job_id}", {})
    again = up.request("POST", f"/api/upload/complete/{job_id}", {})
    assert first.status == again.status == 200 and first.json() == again.json()
    state = up.get(f"/api/upload/{job_id}").json()
    assert state["status"] == "complete" and state["received_size"] == len(clip)
    assert [s["original_filename"] for s in sources(up)].count("twice.mp4") == 1
    up.request("POST", f"/api/jobs/{job_id}/cancel")


def test_delete_aborts_an_upload(up, clip):
    job_id, info = init(up, clip, filename="abort.mp4")
    send(up, job_id, 0, clip[:CHUNK])
    r = up.request("DELETE", f"/api/upload/{job_id}")
    assert r.status == 200
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert f"{job_id}.part" not in part_files(up)
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"] == "upload cancelled"
