"""The daemon's sqlite database: one connection through ``twisted.enterprise.adbapi``.

Every query runs on adbapi's single pool thread (``cp_min = cp_max = 1``), so the
reactor never blocks on sqlite and all statements are serialised on one connection.
The connection uses WAL journaling (set in ``cp_openfun``) and returns
:class:`sqlite3.Row` rows.

The schema is versioned: ``streamlab/storage/schema/NNN_name.sql`` files are applied in
order, each inside its own transaction together with its row in ``schema_version``, when
the service starts.  Calls made before the migration finished wait for it (see
:attr:`Database.ready`), so no API handler ever sees a half-migrated schema.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamlab.errors import Unavailable
from streamlab.interfaces import IDaemonReactor

T = TypeVar("T")

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")
_SCHEMA_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

log = Logger()


class MigrationError(RuntimeError):
    """A schema file could not be applied (the database is left at the previous version)."""


def schema_files(schema_dir: str = SCHEMA_DIR) -> list[tuple[int, str, str]]:
    """``(version, name, path)`` of every ``NNN_name.sql`` in *schema_dir*, in order.

    Two files with the same number are an error (two helpers picked the same version).
    """
    found: dict[int, tuple[int, str, str]] = {}
    try:
        names = sorted(os.listdir(schema_dir))
    except FileNotFoundError:
        return []
    for filename in names:
        match = _SCHEMA_FILE_RE.match(filename)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two schema files with version {version:03d}: "
                                 f"{os.path.basename(found[version][2])} and {filename}")
        found[version] = (version, match.group(2), os.path.join(schema_dir, filename))
    return [found[v] for v in sorted(found)]


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (sqlite's own notion of complete)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            text = current.strip()
            if text and text != ";":
                statements.append(text)
            current = ""
    if current.strip() and not _only_comments(current):
        raise MigrationError(f"incomplete SQL statement at end of script: {current.strip()[:60]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied schema version (0 for a fresh database)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                 "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    if conn.in_transaction:
        conn.commit()
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, schema_dir: str = SCHEMA_DIR) -> int:
    """Apply every schema file newer than the database's version; return the new version.

    Runs on the database thread with a raw sqlite3 connection.  Each file is applied in
    one transaction with its ``schema_version`` row, so a failing file changes nothing
    and a re-run is a no-op.
    """
    version = current_version(conn)
    for number, name, path in schema_files(schema_dir):
        if number <= version:
            continue
        with open(path, encoding="utf-8") as fh:
            statements = split_statements(fh.read())
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name, applied_at) "
                         "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ','now'))", (number, name))
            conn.commit()
        except sqlite3.Error as exc:
            conn.rollback()
            raise MigrationError(f"schema {number:03d}_{name}: {exc}") from exc
        version = number
    return version


def _open_connection(conn: sqlite3.Connection) -> None:
    """Per-connection setup: rows by name, WAL, foreign keys, patience on locks."""
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


class Database(Service):
    """The sqlite database as a service: opens and migrates on start, closes on stop.

    ``run_query``/``run_operation``/``run_interaction`` may be called at any time after
    construction; they wait until the migration has finished (and fail with
    :class:`~streamlab.errors.Unavailable` if it failed).
    """

    name = "db"

    def __init__(self, path: str, reactor: IDaemonReactor, schema_dir: str = SCHEMA_DIR) -> None:
        self.path = path
        self.schema_dir = schema_dir
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None
        self.schema_version = 0
        self._outcome: Failure | None | bool = False  # False = not yet, None = ok, Failure = failed
        self._waiters: list[Deferred[None]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> Deferred[None]:
        """A fresh Deferred that fires once the schema is migrated (errbacks if that failed)."""
        if self._outcome is None:
            return defer.succeed(None)
        if isinstance(self._outcome, Failure):
            return defer.fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def _settle(self, outcome: Failure | None) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if outcome is None:
                d.callback(None)
            else:
                d.errback(outcome)

    def startService(self) -> None:
        """Open the connection and migrate the schema in the database thread."""
        super().startService()
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._outcome = False
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_open_connection, cp_reactor=self._reactor, cp_noisy=False,
        )
        d = self._pool.runWithConnection(self._migrate_on_connection)

        def done(version: int) -> None:
            self.schema_version = version
            log.info("database {path} at schema version {version}", path=self.path, version=version)
            self._settle(None)

        def failed(failure: Failure) -> None:
            log.failure("database migration failed for {path}", failure, path=self.path)
            self._settle(Failure(Unavailable("database unavailable", detail=str(failure.value))))

        d.addCallbacks(done, failed)

    def _migrate_on_connection(self, conn: Any) -> int:
        # adbapi hands us its Connection wrapper; the raw sqlite3 connection is behind a cursor.
        raw = conn.cursor().connection
        return migrate(raw, self.schema_dir)

    def stopService(self) -> Deferred[None] | None:
        """Close the connection (after queued work)."""
        super().stopService()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        return None

    # ------------------------------------------------------------------ queries

    def _pool_or_fail(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            raise Unavailable("database unavailable", detail="database is not running")
        return self._pool

    def run_query(self, sql: str, params: Sequence[Any] = ()) -> Deferred[list[sqlite3.Row]]:
        """Run one SELECT; the rows (sqlite3.Row) as a list."""
        return self.ready.addCallback(lambda _: self._pool_or_fail().runQuery(sql, tuple(params)))

    def run_operation(self, sql: str, params: Sequence[Any] = ()) -> Deferred[None]:
        """Run one statement that returns no rows, committed."""
        return self.ready.addCallback(lambda _: self._pool_or_fail().runOperation(sql, tuple(params)))

    def run_interaction(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``fn(cursor, *args)`` in the database thread as ONE transaction.

        Committed when *fn* returns, rolled back when it raises.  The cursor is adbapi's
        transaction object (``execute``, ``fetchone``, ``fetchall``, ``lastrowid``...).
        """
        def in_transaction(txn: Any, *a: Any) -> T:
            raw = txn.connection
            if not raw.in_transaction:
                txn.execute("BEGIN")
            return fn(txn, *a)

        return self.ready.addCallback(lambda _: self._pool_or_fail().runInteraction(in_transaction, *args))
