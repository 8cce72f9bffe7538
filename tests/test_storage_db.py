"""The sqlite Database service: migrations, transactions, readiness."""

from __future__ import annotations

import os
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import reactor

from streamlab.errors import Unavailable
from streamlab.storage import db as dbmod
from streamlab.storage.db import Database, MigrationError, migrate, schema_files, split_statements


def _write(dirpath, name, text):
    with open(os.path.join(dirpath, name), "w", encoding="utf-8") as fh:
        fh.write(text)


def test_fresh_database_gets_every_schema_file(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "a.db"))
    version = migrate(conn)
    files = schema_files()
    assert files and version == files[-1][0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sources", "uploads", "schema_version"} <= tables
    recorded = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert recorded == [f[0] for f in files]


def test_rerun_is_a_noop(tmp_path):
    path = str(tmp_path / "a.db")
    conn = sqlite3.connect(path)
    v1 = migrate(conn)
    conn.execute("INSERT INTO sources (source_id, name, original_filename, file_path, uploaded_at) "
                 "VALUES ('s1', 'n', 'n.mp4', 'originals/n.mp4', '2026-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    assert migrate(conn) == v1
    assert conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(schema_files())


def test_failing_migration_changes_nothing(tmp_path):
    schema = tmp_path / "schema"
    schema.mkdir()
    _write(schema, "001_a.sql", "CREATE TABLE a (x INTEGER);\n")
    _write(schema, "002_b.sql", "CREATE TABLE b (x INTEGER);\nINSERT INTO nope VALUES (1);\n")
    conn = sqlite3.connect(str(tmp_path / "a.db"))
    with pytest.raises(MigrationError, match="002_b"):
        migrate(conn, str(schema))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "a" in tables and "b" not in tables
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    # fix the file: the next start applies it
    _write(schema, "002_b.sql", "CREATE TABLE b (x INTEGER);\n")
    assert migrate(conn, str(schema)) == 2


def test_duplicate_version_numbers_are_refused(tmp_path):
    _write(tmp_path, "001_a.sql", "SELECT 1;")
    _write(tmp_path, "001_b.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match="two schema files"):
        schema_files(str(tmp_path))


def test_split_statements_handles_semicolons_in_strings_and_comments():
    script = "-- head\nCREATE TABLE t (x TEXT DEFAULT ';');\n\nINSERT INTO t VALUES ('a;b');\n-- tail\n"
    assert split_statements(script) == ["-- head\nCREATE TABLE t (x TEXT DEFAULT ';');",
                                        "INSERT INTO t VALUES ('a;b');"]
    with pytest.raises(MigrationError):
        split_statements("CREATE TABLE t (x")


@pytest_twisted.inlineCallbacks
def test_service_migrates_before_queries_and_uses_wal(tmp_path):
    db = Database(str(tmp_path / "state" / "streamlab.db"), reactor=reactor)
    # queued before start: waits for the migration instead of failing
    early = db.run_query("SELECT COUNT(*) AS n FROM sources")
    db.startService()
    try:
        rows = yield early
        assert rows[0]["n"] == 0
        yield db.ready
        assert db.schema_version == schema_files()[-1][0]
        mode = yield db.run_query("PRAGMA journal_mode")
        assert mode[0][0] == "wal"
    finally:
        db.stopService()


@pytest_twisted.inlineCallbacks
def test_interaction_is_one_transaction():
    db = Database(":memory:", reactor=reactor)
    db.startService()
    try:
        yield db.run_operation(
            "INSERT INTO sources (source_id, name, original_filename, file_path, uploaded_at) "
            "VALUES ('s1', 'n', 'n.mp4', 'originals/n.mp4', '2026-01-01T00:00:00Z')")

        def half(cur):
            cur.execute("UPDATE sources SET name = 'changed' WHERE source_id = 's1'")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            yield db.run_interaction(half)
        rows = yield db.run_query("SELECT name FROM sources")
        assert [r["name"] for r in rows] == ["n"]

        def both(cur, new):
            cur.execute("UPDATE sources SET name = ? WHERE source_id = 's1'", (new,))
            cur.execute("SELECT name FROM sources WHERE source_id = 's1'")
            return cur.fetchone()["name"]

        assert (yield db.run_interaction(both, "m")) == "m"
    finally:
        db.stopService()


@pytest_twisted.inlineCallbacks
def test_broken_schema_makes_db_unavailable(tmp_path):
    schema = tmp_path / "schema"
    schema.mkdir()
    _write(schema, "001_a.sql", "CREATE TABLE oops (;\n")
    db = Database(":memory:", reactor=reactor, schema_dir=str(schema))
    db.startService()
    try:
        with pytest.raises(Unavailable):
            yield db.ready
        with pytest.raises(Unavailable):
            yield db.run_query("SELECT 1")
    finally:
        db.stopService()


def test_schema_dir_is_package_data():
    assert os.path.isdir(dbmod.SCHEMA_DIR)
