"""SqliteJobStore (real sqlite via the Database service) and MemoryJobStore behave alike."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from streamlab.jobs import state as st
from streamlab.jobs.store import MemoryJobStore, SqliteJobStore
from streamlab.storage.db import Database


def jobs():
    a = st.new_job(name="a", source_id="s1", config={"codec_selection": "h264", "partial_durations": [200]},
                   output_paths=["a_h264"], now=1_700_000_000.0, seq=1)
    b = st.new_job(name="b", source_id="s2", config={}, output_paths=["b_h264", "b_hevc"],
                   now=1_700_000_001.0, seq=2, status=st.UPLOADING)
    a2 = st.with_progress(st.transition(a, st.ENCODING, now=1_700_000_002.0), 42.5,
                          "encode 360p h264 (1/1)", 3.0)
    return a, b, a2


@pytest_twisted.inlineCallbacks
def exercise(store):
    a, b, a2 = jobs()
    yield store.save(b)
    yield store.save(a)
    yield store.save(a2)  # replaces a
    loaded = yield store.load_all()
    assert [j.job_id for j in loaded] == [a.job_id, b.job_id]  # by seq
    got = loaded[0]
    assert got.status == "encoding" and got.progress == 42.5 and got.stage == "encode 360p h264 (1/1)"
    assert got.config == a.config and got.output_paths == ("a_h264",) and got.started_at == a2.started_at
    assert got.eta_seconds is None  # not persisted
    assert loaded[1].output_paths == ("b_h264", "b_hevc") and loaded[1].status == "uploading"
    yield store.delete(a.job_id)
    yield store.delete("unknown")
    assert [j.job_id for j in (yield store.load_all())] == [b.job_id]


@pytest_twisted.inlineCallbacks
def test_memory_store():
    yield exercise(MemoryJobStore())


@pytest_twisted.inlineCallbacks
def test_sqlite_store(tmp_path):
    db = Database(str(tmp_path / "state" / "streamlab.db"), reactor)
    db.startService()
    try:
        yield db.ready
        yield exercise(SqliteJobStore(db))
    finally:
        db.stopService()


def test_sqlite_schema_rejects_unknown_status(tmp_path):
    import sqlite3

    from streamlab.storage.db import migrate

    conn = sqlite3.connect(str(tmp_path / "x.db"))
    migrate(conn)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO jobs (job_id, seq, name, source_id, status, config, created_at) "
                     "VALUES ('j', 1, 'n', 's', 'bogus', '{}', 'now')")
