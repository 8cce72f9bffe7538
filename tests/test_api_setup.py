"""/api/setup on the in-memory harness (streamlab.testing.api): the status, idempotent
initialize, and the seed state machine (queued, exists, first start, stop).  The demo
synthesis and ffmpeg's encoder list are played by the fake process reactor (the real
synthesis and encode: tests/integration/test_setup_api.py)."""

from __future__ import annotations

import os
import signal

import pytest

from streamlab.testing.api import ApiHarness

SEED = {"seed-duration": "6", "seed-codecs": "h264", "seed-on-first-start": "no"}


@pytest.fixture
def api(tmp_path):
    with ApiHarness(tmp_path, SEED) as harness:
        yield harness


def test_status_before_and_after_initialize(api):
    r = api.get("/api/setup")
    assert r.status == 200
    s = r.json()
    assert s["status"] == "incomplete" and s["initialized"] is False
    assert s["media_dir"] == api.media_dir and s["writable"] is True
    assert s["ffmpeg"]["found"] is True and "libx264" in s["ffmpeg"]["encoders"]
    assert s["ffmpeg"]["version"].startswith("ffmpeg version")
    assert s["sources_count"] == 0 and s["content_count"] == 0 and s["issues"] == []
    assert any("seed" in r for r in s["recommendations"])
    assert any("initialize" in r for r in s["recommendations"])
    assert s["demo"] == {"state": "absent"}
    first = api.post("/api/setup/initialize")
    assert first.status == 200 and first.json()["initialized"] is True
    assert first.json()["status"] == "ready"
    assert not any("initialize" in r for r in first.json()["recommendations"])
    for sub in ("originals", "dynamic_content"):
        assert os.path.isdir(os.path.join(api.media_dir, sub))
    assert os.path.isfile(os.path.join(api.state_dir, "setup.json"))
    again = api.post("/api/setup/initialize")
    assert again.status == 200 and again.json()["initialized"] is True
    assert api.get("/api/setup").json()["status"] == "ready"
    r = api.post("/api/setup/initialize", {"media_dir": "/elsewhere"})
    assert r.status == 400 and r.json()["fields"] == {"media_dir": "unknown field"}


def test_status_names_a_missing_libx264_as_an_issue(tmp_path):
    with ApiHarness(tmp_path, SEED, encoders=["libx265", "aac"]) as api:
        assert api.post("/api/setup/initialize").status == 200
        s = api.get("/api/setup").json()
        assert s["status"] == "incomplete" and s["issues"] == ["ffmpeg has no libx264 encoder"]
        assert s["ffmpeg"]["encoders"] == ["libx265", "aac"]


def test_seed_queues_the_demo_then_exists_while_it_encodes(api):
    r = api.post("/api/setup/seed")
    assert r.status == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["job_id"] and body["source_id"]
    assert body["job_ids"] == [body["job_id"]]
    (synthesis,) = api.media.syntheses
    assert "-t" in synthesis.args and synthesis.args[synthesis.args.index("-t") + 1] == "6"
    source = api.get(f"/api/sources/{body['source_id']}").json()
    assert source["original_filename"] == "streamlab_demo.mp4" and source["resolution"] == "1280x720"
    job = api.get(f"/api/jobs/{body['job_id']}").json()
    assert job["name"] == "streamlab_demo" and job["output_paths"] == ["streamlab_demo_h264"]
    assert job["status"] == "encoding"
    assert [p for p in os.listdir(os.path.join(api.state_dir, "uploads")) if p.startswith("seed-")] == []
    # while it is encoding a second seed does not start another one
    r = api.post("/api/setup/seed")
    assert r.status == 200
    assert r.json() == {"status": "exists", "job_id": body["job_id"], "source_id": body["source_id"]}
    assert len(api.media.syntheses) == 1 and len(api.get("/api/jobs").json()) == 1
    s = api.get("/api/setup").json()
    assert s["demo"]["state"] == "encoding" and s["demo"]["job_id"] == body["job_id"]
    assert s["sources_count"] == 1 and s["queue_length"] == 0
    r = api.post("/api/setup/seed", {"codec": "av1"})
    assert r.status == 400 and len(api.get("/api/jobs").json()) == 1


def test_a_seed_during_the_synthesis_shares_it(api):
    api.media.hold_synthesis = True
    first = api.begin("POST", "/api/setup/seed")
    assert api.get("/api/setup").json()["demo"] == {"state": "synthesising"}
    second = api.begin("POST", "/api/setup/seed")
    (synthesis,) = api.media.syntheses
    api.media.finish_synthesis(synthesis)
    a, b = api.result_of(first), api.result_of(second)
    assert a.status == 202 and a.json()["status"] == "queued"
    assert b.status == 200 and b.json() == {"status": "exists"}
    assert len(api.get("/api/jobs").json()) == 1 and len(api.get("/api/sources").json()) == 1


def test_stopping_during_an_api_seed_answers_503_and_leaves_no_file(api):
    api.media.hold_synthesis = True
    pending = api.begin("POST", "/api/setup/seed")
    (synthesis,) = api.media.syntheses
    api.stop()
    assert (synthesis.pid, signal.SIGTERM) in api.reactor.children.group_signals and synthesis.ended
    r = api.result_of(pending)
    assert r.status == 503 and r.json() == {"error": "daemon stopping",
                                            "detail": "the demo synthesis was stopped"}
    assert [p for p in os.listdir(os.path.join(api.state_dir, "uploads")) if p.startswith("seed-")] == []
    api.assert_log_clean()


def test_seed_on_first_start_queues_the_demo_once(tmp_path):
    config = dict(SEED, **{"seed-on-first-start": "yes"})
    db = str(tmp_path / "state" / "streamlab.db")
    with ApiHarness(tmp_path, config, db_path=db) as api:
        jobs = api.get("/api/jobs").json()
        assert [j["name"] for j in jobs] == ["streamlab_demo"]
        assert jobs[0]["output_paths"] == ["streamlab_demo_h264"]
        assert api.get("/api/setup").json()["initialized"] is True
    # a second start with a source present does not seed again; the job carries on
    with ApiHarness(tmp_path, config, db_path=db) as api:
        assert api.media.syntheses == []
        assert [j["job_id"] for j in api.get("/api/jobs").json()] == [jobs[0]["job_id"]]
        assert api.get("/api/sources").json()[0]["original_filename"] == "streamlab_demo.mp4"
        assert api.get(f"/api/jobs/{jobs[0]['job_id']}").json()["status"] == "encoding"


def test_no_seed_on_first_start_when_content_exists(tmp_path, test_item):
    from streamlab.testing.fixtures import install_test_item

    harness = ApiHarness(tmp_path, dict(SEED, **{"seed-on-first-start": "yes"}))
    install_test_item(harness.media_dir, "testclip", source=test_item)
    with harness as api:
        assert api.media.syntheses == [] and api.get("/api/jobs").json() == []
        assert api.get("/api/setup").json()["content_count"] == 1


def test_a_seed_that_finishes_at_once_answers_its_own_result(api):
    """seed() hands back the run's own Deferred: a run that fired synchronously (no
    thread hop) must not give the caller the attribute its completion cleared."""
    from twisted.internet import defer

    result = {"status": "queued", "job_id": "j1"}
    api.setup._seed = lambda: defer.succeed(result)
    got = []
    d = api.setup.seed()
    assert d is not None
    d.addCallback(got.append)
    assert got == [result]
    assert api.setup._seeding is None  # the next seed starts a new run
