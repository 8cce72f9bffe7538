"""/api/upload... and the source library on the in-memory harness (streamlab.testing.api):
chunk retries and gaps, 400/404/409/413/422, idempotent completion, abandonment on the
clock.  The fake ffprobe takes :func:`fake_video` files for videos and rejects anything
else (real ffprobe: tests/test_sources_probe.py; a restart mid-upload on the real
daemon: tests/integration/test_uploads_api.py)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from streamlab.testing.api import ApiHarness
from streamlab.testing.fakemedia import ClipFacts, fake_video

MAX_UPLOAD = 400_000
CHUNK = 8192
CLIP = fake_video(ClipFacts(width=160, height=90, duration=2.0, fps=25.0), size=5 * CHUNK + 123)


@pytest.fixture
def up(tmp_path):
    with ApiHarness(tmp_path, {"max-upload-bytes": str(MAX_UPLOAD), "encode-workers": "1"}) as harness:
        yield harness


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


def init(api: ApiHarness, data: bytes, filename="clip.mp4", **extra):
    body = {"filename": filename, "file_size": len(data), "codec_selection": "h264", **extra}
    r = api.post("/api/upload/init", body)
    assert r.status == 200, r.text
    out = r.json()
    assert out["status"] == "uploading" and out["chunk_size_hint"] > 0
    return out["job_id"], out


def send(api: ApiHarness, job_id, offset, data):
    return api.post(f"/api/upload/chunk/{job_id}?offset={offset}", data,
                    headers={"Content-Type": "application/octet-stream"})


def send_all(api: ApiHarness, job_id, data, start=0):
    for off in range(start, len(data), CHUNK):
        r = send(api, job_id, off, data[off:off + CHUNK])
        assert r.status == 200, r.text


def complete(api: ApiHarness, job_id, **body):
    return api.post(f"/api/upload/complete/{job_id}", body)


def sources(api: ApiHarness):
    return api.get("/api/sources").json()


def originals(api: ApiHarness):
    return sorted(os.listdir(os.path.join(api.media_dir, "originals")))


def part_files(api: ApiHarness):
    path = os.path.join(api.state_dir, "uploads")
    return sorted(n for n in os.listdir(path) if n.endswith(".part")) if os.path.isdir(path) else []


def test_chunked_upload_with_retries_and_out_of_order_chunk(up):
    job_id, info = init(up, CLIP, filename="show.mp4", sha256=hashlib.sha256(CLIP).hexdigest())
    assert up.get("/api/upload/active").json()["active_uploads"] == 1
    assert up.get(f"/api/jobs/{job_id}").json()["status"] == "uploading"
    assert send(up, job_id, 0, CLIP[:CHUNK]).json()["received_size"] == CHUNK
    # the same chunk again (a client retry): acknowledged, nothing changes
    r = send(up, job_id, 0, CLIP[:CHUNK])
    assert r.status == 200 and r.json()["received_size"] == CHUNK
    # out of order: a gap is refused with where to resume
    r = send(up, job_id, 2 * CHUNK, CLIP[2 * CHUNK:3 * CHUNK])
    assert r.status == 409 and r.json()["received_size"] == CHUNK
    # a repeat with different bytes is refused
    r = send(up, job_id, 0, b"\0" * CHUNK)
    assert r.status == 409 and r.json()["received_size"] == CHUNK
    # second chunk as multipart with the offset as a form field
    body, headers = multipart({"offset": CHUNK}, ("blob", CLIP[CHUNK:2 * CHUNK]))
    r = up.post(f"/api/upload/chunk/{job_id}", body, headers=headers)
    assert r.status == 200 and r.json()["received_size"] == 2 * CHUNK, r.text
    # third chunk with Content-Range
    r = up.post(f"/api/upload/chunk/{job_id}", CLIP[2 * CHUNK:3 * CHUNK],
                headers={"Content-Range": f"bytes {2 * CHUNK}-{3 * CHUNK - 1}/{len(CLIP)}"})
    assert r.status == 200 and r.json()["received_size"] == 3 * CHUNK
    send_all(up, job_id, CLIP, start=3 * CHUNK)
    state = up.get(f"/api/upload/{job_id}").json()
    assert state == {"job_id": job_id, "received_size": len(CLIP), "expected_size": len(CLIP),
                     "status": "uploading"}
    r = complete(up, job_id)
    assert r.status == 200, r.text
    done = r.json()
    assert done["status"] == "queued" and done["source_id"] == info["source_id"] and done["job_id"] == job_id
    assert done["sha256"] == hashlib.sha256(CLIP).hexdigest() and done["file_size"] == len(CLIP)
    source = up.get(f"/api/sources/{done['source_id']}").json()
    assert source["status"] == "ready" and source["resolution"] == "160x90" and source["codec"] == "h264"
    assert source["file_size"] == len(CLIP) and source["original_filename"] == "show.mp4"
    with open(os.path.join(up.media_dir, source["file_path"]), "rb") as fh:
        assert fh.read() == CLIP
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "encoding" and job["source_id"] == source["source_id"]
    assert up.get(f"/api/upload/{job_id}").json()["status"] == "complete"
    assert job_id not in [u["job_id"] for u in up.get("/api/upload/active").json()["uploads"]]
    assert part_files(up) == []


def test_wrong_hash_is_422_and_stays_resumable(up):
    job_id, info = init(up, CLIP, filename="hashy.mp4")
    send_all(up, job_id, CLIP)
    r = complete(up, job_id, sha256="0" * 64)
    assert r.status == 422
    body = r.json()
    assert body["expected_sha256"] == "0" * 64 and body["actual_sha256"] == hashlib.sha256(CLIP).hexdigest()
    assert info["source_id"] not in [s["source_id"] for s in sources(up)]
    assert up.get(f"/api/upload/{job_id}").json()["received_size"] == len(CLIP)
    r = complete(up, job_id, sha256=hashlib.sha256(CLIP).hexdigest())
    assert r.status == 200, r.text
    assert info["source_id"] in [s["source_id"] for s in sources(up)]


def test_truncated_upload_is_422_size_mismatch_then_resumes(up):
    job_id, _ = init(up, CLIP, filename="short.mp4")
    send_all(up, job_id, CLIP[: 2 * CHUNK])
    r = complete(up, job_id)
    assert r.status == 422 and r.json()["error"] == "size mismatch"
    assert r.json()["received_size"] == 2 * CHUNK and r.json()["expected_size"] == len(CLIP)
    resume = up.get(f"/api/upload/{job_id}").json()["received_size"]
    send_all(up, job_id, CLIP, start=resume)
    assert complete(up, job_id).status == 200


def test_non_video_is_422_and_discarded(up):
    junk = b"this is not a video at all\n" * 100
    job_id, info = init(up, junk, filename="notes.mp4")
    send_all(up, job_id, junk)
    r = complete(up, job_id)
    assert r.status == 422 and r.json()["discarded"] is True
    assert "Invalid data" in r.json()["detail"] and up.state_dir not in r.json()["detail"]
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert part_files(up) == []
    assert info["source_id"] not in [s["source_id"] for s in sources(up)]
    assert "notes.mp4" not in originals(up)
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and "invalid media" in job["error"]


def test_oversized_uploads_are_413(up):
    before = originals(up)
    r = up.post("/api/upload/init", {"filename": "big.mp4", "file_size": MAX_UPLOAD + 1})
    assert r.status == 413 and "error" in r.json()
    # over the limit plus the multipart allowance: refused by the Site's body rules
    body, headers = multipart({"codec_selection": "h264"}, ("big.mp4", b"\0" * (MAX_UPLOAD + 2_000_000)))
    r = up.post("/api/upload", body, headers=headers)
    assert r.status == 413 and r.json()["error"] == "body too large"
    # over the limit but within the allowance: refused by the upload service
    body, headers = multipart({"codec_selection": "h264"}, ("big.mp4", b"\0" * (MAX_UPLOAD + 1)))
    r = up.post("/api/upload", body, headers=headers)
    assert r.status == 413 and r.json()["error"] == "upload too large" and r.json()["limit"] == MAX_UPLOAD
    job_id, _ = init(up, CLIP, filename="chunky.mp4")
    r = send(up, job_id, 0, b"\0" * (MAX_UPLOAD + 2_000_000))
    assert r.status == 413
    assert up.get(f"/api/upload/{job_id}").json()["received_size"] == 0
    # every other /api body is JSON-sized
    r = up.post("/api/sources/batch-reencode-json", b" " * (2 * 1024 * 1024),
                headers={"Content-Type": "application/json"})
    assert r.status == 413 and r.json()["error"] == "body too large"
    assert originals(up) == before and sources(up) == []
    assert up.get("/api/health").status == 200


def test_filename_path_traversal_is_sanitised(up):
    job_id, _ = init(up, CLIP, filename="../../etc/passwd")
    send_all(up, job_id, CLIP)
    r = complete(up, job_id)
    assert r.status == 200, r.text
    source = up.get(f"/api/sources/{r.json()['source_id']}").json()
    assert source["file_path"].startswith("originals/") and ".." not in source["file_path"]
    assert source["file_path"] in [f"originals/{n}" for n in originals(up)]
    assert not os.path.exists(os.path.join(up.workdir, "etc"))


def test_single_shot_upload_and_options_checked_before_storing(up):
    body, headers = multipart({"codec_selection": "nope", "segment_duration": "abc"}, ("single.mp4", CLIP))
    r = up.post("/api/upload", body, headers=headers)
    assert r.status == 400 and set(r.json()["fields"]) >= {"codec_selection", "segment_duration"}
    assert sources(up) == [] and "single.mp4" not in originals(up)
    assert up.media.probes == []  # refused before anything was stored or probed
    body, headers = multipart({"codec_selection": "h264", "partial_durations[]": ["200", "500"]},
                              ("single.mp4", CLIP))
    r = up.post("/api/upload", body, headers=headers)
    assert r.status == 200, r.text
    out = r.json()
    assert out["status"] == "queued" and len(out["job_ids"]) == 2 and out["job_id"] == out["job_ids"][0]
    names = sorted(up.get(f"/api/jobs/{j}").json()["name"] for j in out["job_ids"])
    assert names == ["single_p200", "single_p500"]
    assert "single.mp4" in originals(up)
    assert [p for p in part_files(up) if p.startswith("single-")] == []
    # not a video: 422, nothing kept
    body, headers = multipart({"codec_selection": "h264"}, ("text.mp4", b"hello" * 1000))
    r = up.post("/api/upload", body, headers=headers)
    assert r.status == 422 and "text.mp4" not in originals(up)
    assert part_files(up) == [] and len(sources(up)) == 1


def test_bad_requests(up):
    assert up.post("/api/upload/init", {"file_size": 10}).status == 400
    assert up.post("/api/upload/init", {"filename": "a.mp4", "file_size": "x"}).status == 400
    r = up.post("/api/upload/init", {"filename": "a.mp4", "file_size": 10, "hls_format": "zip"})
    assert r.status == 400 and "hls_format" in r.json()["fields"]
    assert up.get("/api/jobs").json() == []  # refused before any job was created
    assert send(up, str(uuid.uuid4()), 0, b"x").status == 404
    assert send(up, "../../etc", 0, b"x").status == 404
    job_id, _ = init(up, CLIP, filename="noofs.mp4")
    r = up.post(f"/api/upload/chunk/{job_id}", b"abc")
    assert r.status == 400 and "offset" in r.json()["fields"]
    assert up.get(f"/api/upload/{job_id}").json()["received_size"] == 0
    # form-encoded init works too
    r = up.post("/api/upload/init", b"filename=form.mp4&file_size=100&codec_selection=h264",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and r.json()["status"] == "uploading"


def test_delete_source_is_409_while_its_job_waits(up):
    job_id, _ = init(up, CLIP, filename="busy.mp4")
    send_all(up, job_id, CLIP)
    source_id = complete(up, job_id).json()["source_id"]
    r = up.delete(f"/api/sources/{source_id}")
    assert r.status == 409 and job_id in r.json()["job_ids"]
    assert "busy.mp4" in originals(up)
    assert up.post(f"/api/jobs/{job_id}/cancel").status == 200
    r = up.delete(f"/api/sources/{source_id}")
    assert r.status == 200
    assert up.get(f"/api/sources/{source_id}").status == 404
    assert "busy.mp4" not in originals(up)


def test_reencode_and_batch(up):
    job_id, _ = init(up, CLIP, filename="again.mp4")
    send_all(up, job_id, CLIP)
    source_id = complete(up, job_id).json()["source_id"]
    r = up.post(f"/api/sources/{source_id}/reencode",
                b"output_name=Again+Two&codec_selection=h264&partial_durations[]=250",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200, r.text
    out = r.json()
    assert out["status"] == "queued" and out["source_id"] == source_id and len(out["job_ids"]) == 1
    assert up.get(f"/api/jobs/{out['job_ids'][0]}").json()["name"] == "again_two"
    before = up.get("/api/jobs").json()
    r = up.post(f"/api/sources/{source_id}/reencode", {"codec_selection": "vp8"})
    assert r.status == 400
    assert up.get(f"/api/sources/{uuid.uuid4()}/reencode").status == 405
    assert up.post(f"/api/sources/{uuid.uuid4()}/reencode", {"codec_selection": "h264"}).status == 404
    assert up.get("/api/jobs").json() == before
    missing = str(uuid.uuid4())
    r = up.post("/api/sources/batch-reencode-json",
                {"source_ids": [source_id, missing], "codec_selection": "h264", "segment_duration": 2})
    assert r.status == 200
    out = r.json()
    assert [j["source_id"] for j in out["jobs"]] == [source_id]
    assert [e["source_id"] for e in out["errors"]] == [missing]
    assert up.post("/api/sources/batch-reencode-json", {"source_ids": []}).status == 400


def test_scan_originals(up):
    folder = os.path.join(up.media_dir, "originals")
    with open(os.path.join(folder, "dropped.mp4"), "wb") as fh:
        fh.write(CLIP)
    r = up.post("/api/sources/scan-originals")
    assert r.status == 200 and r.json()["new"] == 1
    up.advance(60)  # a later upload time for the next file
    with open(os.path.join(folder, "readme.txt"), "w") as fh:
        fh.write("not media")
    r = up.post("/api/sources/scan-originals")
    assert r.status == 200
    out = r.json()
    assert out == {"scanned": 2, "new": 0, "removed": 0, "invalid": 1}
    listed = {s["file_path"]: s for s in sources(up)}
    assert listed["originals/dropped.mp4"]["status"] == "ready"
    assert listed["originals/readme.txt"]["status"] == "invalid" and listed["originals/readme.txt"]["error"]
    assert [s["file_path"] for s in sources(up)] == ["originals/readme.txt", "originals/dropped.mp4"]
    os.unlink(os.path.join(folder, "readme.txt"))
    out = up.post("/api/sources/scan-originals").json()
    assert out["removed"] == 1 and out["new"] == 0
    assert "originals/readme.txt" not in {s["file_path"] for s in sources(up)}


def test_abandoned_upload_is_removed_and_its_job_failed(tmp_path):
    with ApiHarness(tmp_path, {"upload-ttl": "60"}) as api:
        job_id, info = init(api, CLIP, filename="gone.mp4")
        send(api, job_id, 0, CLIP[:CHUNK])
        api.advance(30)
        assert send(api, job_id, CHUNK, CLIP[CHUNK:2 * CHUNK]).status == 200  # activity restarts the ttl
        api.advance(45, step=5)
        assert api.get(f"/api/upload/{job_id}").json()["received_size"] == 2 * CHUNK
        api.advance(30, step=5)
        assert api.get(f"/api/upload/{job_id}").status == 404
        job = api.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "failed" and job["error"] == "upload abandoned"
        assert part_files(api) == []
        assert info["source_id"] not in [s["source_id"] for s in sources(api)]


def test_active_uploads_listing(up):
    job_id, _ = init(up, CLIP, filename="listed.mp4")
    send(up, job_id, 0, CLIP[:CHUNK])
    active = up.get("/api/upload/active").json()
    assert set(active) >= {"active_uploads", "queue_length", "uploads"}
    entry = [u for u in active["uploads"] if u["job_id"] == job_id][0]
    assert entry == {"job_id": job_id, "filename": "listed.mp4", "received_size": CHUNK,
                     "expected_size": len(CLIP), "status": "uploading"}
    assert active["queue_length"] == 0 and active["active_uploads"] == 1
    json.dumps(active)


def test_cancelling_the_job_discards_the_upload(up):
    job_id, _ = init(up, CLIP, filename="cancelme.mp4")
    send(up, job_id, 0, CLIP[:CHUNK])
    assert up.post(f"/api/jobs/{job_id}/cancel").status == 200
    r = send(up, job_id, CHUNK, CLIP[CHUNK:2 * CHUNK])
    assert r.status == 409 and r.json()["error"] == "upload cancelled"
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert part_files(up) == []


def test_complete_is_idempotent(up):
    job_id, _ = init(up, CLIP, filename="twice.mp4")
    send_all(up, job_id, CLIP)
    first = complete(up, job_id)
    again = complete(up, job_id)
    assert first.status == again.status == 200 and first.json() == again.json()
    state = up.get(f"/api/upload/{job_id}").json()
    assert state["status"] == "complete" and state["received_size"] == len(CLIP)
    assert [s["original_filename"] for s in sources(up)].count("twice.mp4") == 1
    assert len(up.media.probes) == 1


def test_delete_aborts_an_upload(up):
    job_id, info = init(up, CLIP, filename="abort.mp4")
    send(up, job_id, 0, CLIP[:CHUNK])
    r = up.delete(f"/api/upload/{job_id}")
    assert r.status == 200 and r.json() == {"cancelled": job_id}
    assert up.get(f"/api/upload/{job_id}").status == 404
    assert up.delete(f"/api/upload/{job_id}").status == 404
    assert part_files(up) == []
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"] == "upload cancelled"
