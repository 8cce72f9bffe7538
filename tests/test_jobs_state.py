import pytest

from streamlab.errors import Conflict
from streamlab.jobs import state as st


def job(status=st.QUEUED):
    j = st.new_job(name="x", source_id="s", config={}, output_paths=["x_h264"], now=1_700_000_000.0, seq=1)
    return j if status == st.QUEUED else st.Job(**{**j.__dict__, "status": status})


@pytest.mark.parametrize("old,new", [
    (st.UPLOADING, st.QUEUED), (st.UPLOADING, st.CANCELLED), (st.UPLOADING, st.FAILED),
    (st.QUEUED, st.ENCODING), (st.QUEUED, st.CANCELLED), (st.ENCODING, st.COMPLETE),
    (st.ENCODING, st.FAILED), (st.ENCODING, st.CANCELLED), (st.ENCODING, st.QUEUED),
])
def test_allowed(old, new):
    assert st.transition(job(old), new, now=1_700_000_100.0).status == new


@pytest.mark.parametrize("old,new", [
    (st.UPLOADING, st.ENCODING), (st.QUEUED, st.COMPLETE), (st.COMPLETE, st.QUEUED),
    (st.COMPLETE, st.CANCELLED), (st.FAILED, st.QUEUED), (st.CANCELLED, st.ENCODING),
    (st.CANCELLED, st.CANCELLED),
])
def test_rejected_with_409(old, new):
    j = job(old)
    with pytest.raises(Conflict) as exc:
        st.transition(j, new, now=0)
    assert exc.value.status == 409
    assert j.status == old


def test_timestamps_and_fields():
    j = job()
    assert j.created_at == "2023-11-14T22:13:20.000Z"
    enc = st.transition(j, st.ENCODING, now=1_700_000_010.5)
    assert enc.started_at == "2023-11-14T22:13:30.500Z" and enc.stage == "probe"
    done = st.transition(st.with_progress(enc, 50, "encode 360p h264 (1/1)", 3.0), st.COMPLETE,
                         now=1_700_000_020.0)
    assert done.progress == 100.0 and done.completed_at and done.eta_seconds is None
    body = done.to_json()
    assert set(body) == {"job_id", "name", "source_id", "status", "progress", "stage", "config",
                         "output_paths",
                         "created_at", "started_at", "completed_at", "error", "eta_seconds"}
    failed = st.transition(enc, st.FAILED, now=1_700_000_020.0, error="boom")
    assert failed.error == "boom" and failed.terminal


def test_new_job_status():
    with pytest.raises(ValueError):
        st.new_job(name="x", source_id="s", config={}, output_paths=[], now=0, seq=1, status=st.ENCODING)
    assert st.new_job(name="x", source_id="s", config={}, output_paths=[], now=0, seq=1,
                      status=st.UPLOADING).status == st.UPLOADING
