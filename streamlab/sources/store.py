"""Source records in sqlite (table ``sources`` of schema 001)."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred

from streamlab.errors import NotFound
from streamlab.storage.db import Database

COLUMNS = ("source_id", "name", "original_filename", "file_path", "file_size", "duration", "width",
           "height", "codec", "fps", "audio_codec", "uploaded_at", "status", "error")


def row_to_source(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    """The API object of a source (content.md section 1)."""
    out = {name: row[name] for name in COLUMNS}
    width, height = out["width"], out["height"]
    out["resolution"] = f"{width}x{height}" if width and height else None
    return out


class SourceStore:
    """CRUD for source rows; every method returns a Deferred."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, record: dict[str, Any]) -> Deferred[None]:
        """Insert one source (all :data:`COLUMNS`)."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        return self.db.run_operation(
            f"INSERT INTO sources ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            [record.get(c) for c in COLUMNS])

    def get(self, source_id: str) -> Deferred[dict[str, Any]]:
        """One source; NotFound when unknown."""
        d = self.db.run_query(f"SELECT {', '.join(COLUMNS)} FROM sources WHERE source_id = ?", (source_id,))

        def one(rows: list[sqlite3.Row]) -> dict[str, Any]:
            if not rows:
                raise NotFound("source not found", detail=source_id)
            return row_to_source(rows[0])

        return d.addCallback(one)

    def list(self) -> Deferred[list[dict[str, Any]]]:
        """All sources, newest first."""
        d = self.db.run_query(f"SELECT {', '.join(COLUMNS)} FROM sources "
                              "ORDER BY uploaded_at DESC, rowid DESC")
        return d.addCallback(lambda rows: [row_to_source(r) for r in rows])

    def paths(self) -> Deferred[dict[str, str]]:
        """``file_path -> source_id`` of every record."""
        d = self.db.run_query("SELECT source_id, file_path FROM sources")
        return d.addCallback(lambda rows: {r["file_path"]: r["source_id"] for r in rows})

    def delete(self, source_id: str) -> Deferred[None]:
        """Forget one record."""
        return self.db.run_operation("DELETE FROM sources WHERE source_id = ?", (source_id,))

    def count(self) -> Deferred[int]:
        """How many sources there are."""
        d = self.db.run_query("SELECT COUNT(*) AS n FROM sources")
        return d.addCallback(lambda rows: int(rows[0]["n"]))
