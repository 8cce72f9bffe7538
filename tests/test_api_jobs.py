"""/api/jobs and /api/sources/{id}/reencode on the in-memory harness (streamlab.testing.api):
validation, 404/409 and the job state machine, as a client sees them.  The encoder list
is the fake ffmpeg's, never the host's (real encodes: tests/integration/test_jobs_api.py)."""

from __future__ import annotations

import os
import signal

import pytest

from streamlab.testing.api import ApiHarness
from streamlab.testing.fakemedia import fake_video

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def api(tmp_path):
    with ApiHarness(tmp_path) as harness:
        yield harness


def reencode(api: ApiHarness, source_id: str, **options) -> list[str]:
    r = api.post(f"/api/sources/{source_id}/reencode", options)
    assert r.status == 200, r.text
    return r.json()["job_ids"]


def test_bad_input_is_4xx_and_changes_nothing(api):
    source = api.add_original("tiny.mp4", fake_video())
    (done,) = reencode(api, source["source_id"], codec_selection="h264", output_name="first")
    api.running_encodes()[0].exit(1)  # the encoder fails: a terminal job to compare against
    api.settle()
    before = api.get("/api/jobs").json()
    assert [j["status"] for j in before] == ["failed"]
    for options, field in (({"codec_selection": "vp9"}, "codec_selection"),
                           ({"max_resolution": "480p"}, "max_resolution"),
                           ({"segment_duration": "x"}, "segment_duration"),
                           ({"padding": "green"}, "padding")):
        r = api.post(f"/api/sources/{source['source_id']}/reencode", options)
        assert r.status == 400, (options, r.text)
        assert field in r.json().get("fields", {}), r.text
    # the fake ffmpeg lists no AV1 encoder, whatever the host's ffmpeg has
    r = api.post(f"/api/sources/{source['source_id']}/reencode", {"codec_selection": "av1"})
    assert r.status == 400 and "AV1 encoder" in r.json()["fields"]["codec_selection"], r.text
    assert "libsvtav1" not in api.get("/api/setup").json()["ffmpeg"]["encoders"]
    assert api.get(f"/api/jobs/{UNKNOWN}").status == 404
    assert api.post(f"/api/jobs/{UNKNOWN}/cancel").status == 404
    assert api.delete(f"/api/jobs/{UNKNOWN}").status == 404
    r = api.get("/api/jobs?status=bogus")
    assert r.status == 400 and "error" in r.json() and "status" in r.json()["fields"]
    r = api.post(f"/api/jobs/{done}/cancel")
    assert r.status == 409 and r.json()["status_now"] == "failed"
    r = api.post(f"/api/jobs/{done}/cancel", {"force": True})
    assert r.status == 400 and r.json()["fields"] == {"force": "unknown field"}
    assert api.get("/api/jobs").json() == before
    assert api.running_encodes() == []


def test_av1_is_offered_when_the_encoder_list_has_one(tmp_path):
    with ApiHarness(tmp_path, encoders=["libx264", "libsvtav1", "aac"]) as api:
        assert "libsvtav1" in api.get("/api/setup").json()["ffmpeg"]["encoders"]
        source = api.add_original("tiny.mp4", fake_video())
        (job_id,) = reencode(api, source["source_id"], codec_selection="av1", output_name="sharp")
        assert api.get(f"/api/jobs/{job_id}").json()["output_paths"] == ["sharp_av1"]


def test_cancel_encoding_then_conflicts_then_delete_removes_job_and_source(api):
    source = api.add_original("bigger.mp4", fake_video())
    (job_id,) = reencode(api, source["source_id"], codec_selection="both", output_name="cancelme")
    job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "encoding" and job["output_paths"] == ["cancelme_h264", "cancelme_hevc"]
    (encoder,) = api.running_encodes()
    r = api.post(f"/api/jobs/{job_id}/cancel")
    assert r.status == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert (encoder.pid, signal.SIGTERM) in api.reactor.children.group_signals and encoder.ended
    assert not os.path.exists(os.path.join(api.state_dir, "work", job_id))
    assert api.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
    # cancelling again is a conflict
    r = api.post(f"/api/jobs/{job_id}/cancel")
    assert r.status == 409 and r.json()["status_now"] == "cancelled"
    r = api.delete(f"/api/jobs/{job_id}")
    assert r.status == 200 and r.json()["deleted"] == job_id
    assert api.get(f"/api/jobs/{job_id}").status == 404
    assert api.delete(f"/api/jobs/{job_id}").status == 404
    # nothing else used that source, so it went too
    assert r.json()["source_deleted"] is True
    assert api.get(f"/api/sources/{source['source_id']}").status == 404
    assert not os.path.exists(os.path.join(api.media_dir, source["file_path"]))


def test_delete_is_409_while_encoding_and_changes_nothing(api):
    source = api.add_original("busy.mp4", fake_video())
    (job_id,) = reencode(api, source["source_id"], codec_selection="h264", output_name="busy")
    before = api.get(f"/api/jobs/{job_id}").json()
    r = api.delete(f"/api/jobs/{job_id}")
    assert r.status == 409
    assert r.json()["detail"] == "cancel it first" and r.json()["status_now"] == "encoding"
    assert api.get(f"/api/jobs/{job_id}").json() == before
    assert len(api.running_encodes()) == 1
    assert api.get(f"/api/sources/{source['source_id']}").status == 200


def test_queued_job_waits_for_the_worker_and_cancels_without_a_process(api):
    source = api.add_original("two.mp4", fake_video())
    first, second = reencode(api, source["source_id"], codec_selection="h264", output_name="pair",
                             partial_durations=[200, 500])
    assert api.get(f"/api/jobs/{first}").json()["status"] == "encoding"
    assert api.get(f"/api/jobs/{second}").json()["status"] == "queued"
    assert [j["job_id"] for j in api.get("/api/jobs?status=queued").json()] == [second]
    spawned = len(api.reactor.processes)
    r = api.post(f"/api/jobs/{second}/cancel")
    assert r.status == 200 and r.json()["status"] == "cancelled"
    assert len(api.reactor.processes) == spawned
    assert api.get(f"/api/jobs/{first}").json()["status"] == "encoding"


def test_a_failing_encoder_fails_the_job_with_its_last_line(api):
    source = api.add_original("broken.mp4", fake_video())
    (job_id,) = reencode(api, source["source_id"], codec_selection="h264", output_name="broken")
    (encoder,) = api.running_encodes()
    encoder.err(b"Error while opening encoder for output stream #0:0\n")
    encoder.exit(1)
    api.settle()
    job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed" and "exit code 1" in job["error"] and "opening encoder" in job["error"]
    assert api.get("/api/jobs?status=failed").json()[0]["job_id"] == job_id
    assert not os.path.exists(os.path.join(api.state_dir, "work", job_id))


def test_unknown_job_websocket_closes_4404(api):
    ws = api.websocket(f"/api/jobs/{UNKNOWN}/stream")
    api.settle()
    assert ws.messages == [] and ws.close_code == 4404


def test_websocket_of_a_cancelled_job_replays_the_log_then_ends(api):
    source = api.add_original("wsclip.mp4", fake_video())
    (job_id,) = reencode(api, source["source_id"], codec_selection="h264", output_name="wsclip")
    live = api.websocket(f"/api/jobs/{job_id}/stream")
    assert api.post(f"/api/jobs/{job_id}/cancel").status == 200
    late = api.websocket(f"/api/jobs/{job_id}/stream")
    api.settle()
    for ws in (live, late):
        assert ws.close_code == 1000
        assert ws.messages[-1] == {"type": "end", "status": "cancelled", "error": None}
        assert [m["type"] for m in ws.messages].count("end") == 1
    logs = [m["line"] for m in late.messages if m["type"] == "log"]
    assert any(line.startswith("job created") for line in logs) and "cancelled" in logs[-1]
    assert [m["line"] for m in live.messages if m["type"] == "log"] == logs  # no line twice, none lost
