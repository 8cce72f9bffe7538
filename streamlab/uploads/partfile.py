"""An upload's bytes on disk (blocking: every function here runs in a thread).

The part file of a chunked upload (``<state_dir>/uploads/<upload_id>.part``) is cut back
to the acknowledged size and hashed after a restart (:func:`hash_file`); each chunk is
compared where it repeats acknowledged bytes, appended and fsynced before it is
acknowledged (:func:`apply_chunk`).  Single-shot uploads are written and fsynced whole
(:func:`write_single`).  What changes here is how bytes are stored, never when or why
(that is :mod:`streamlab.uploads.service`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import IO, Any

from streamlab.errors import Invalid
from streamlab.sources import files
from streamlab.uploads import core, forms

BLOCK = 1024 * 1024
SPOOL_LIMIT = 8 * 1024 * 1024


def hash_file(path: str, size: int) -> tuple[Any, int]:
    """Cut *path* to *size* bytes (dropping unacknowledged bytes) and hash it.

    Returns ``(hasher, size actually present)``; a file shorter than *size* keeps what
    it has.
    """
    hasher = hashlib.sha256()
    if not os.path.exists(path):
        open(path, "wb").close()
    with open(path, "r+b") as fh:
        present = min(size, os.fstat(fh.fileno()).st_size)
        fh.truncate(present)
        remaining = present
        while remaining:
            data = fh.read(min(BLOCK, remaining))
            if not data:
                break
            hasher.update(data)
            remaining -= len(data)
    return hasher, present


def apply_chunk(part_path: str, plan: core.ChunkPlan, src: IO[bytes], start: int, hasher: Any) -> Any:
    """Compare the repeated part of a chunk with the file, append the new part, fsync.

    Returns the updated hasher (a copy; *hasher* is untouched), or None when the
    repeated bytes differ from what is on disk.
    """
    with open(part_path, "r+b") as fh:
        if plan.compare_len:
            fh.seek(plan.offset)
            src.seek(start)
            remaining = plan.compare_len
            while remaining:
                n = min(BLOCK, remaining)
                if fh.read(n) != src.read(n):
                    return None
                remaining -= n
        if not plan.append_len:
            return hasher
        updated = hasher.copy()
        write_at = plan.offset + plan.compare_len
        fh.seek(write_at)
        src.seek(start + plan.compare_len)
        remaining = plan.append_len
        while remaining:
            data = src.read(min(BLOCK, remaining))
            if not data:
                raise Invalid("invalid chunk", detail="chunk body is shorter than announced")
            fh.write(data)
            updated.update(data)
            remaining -= len(data)
        fh.truncate(write_at + plan.append_len)
        fh.flush()
        os.fsync(fh.fileno())
        return updated


def write_single(content: IO[bytes], content_type: str, dest: str, limit: int) -> forms.FormResult:
    """Write the ``file`` field of a multipart body to *dest* (fsynced)."""
    with open(dest, "wb") as out:
        result = forms.parse_multipart(content, content_type, file_dest=out, file_limit=limit)
        out.flush()
        os.fsync(out.fileno())
    return result


def extract_chunk(content: IO[bytes], content_type: str, limit: int) -> tuple[forms.FormResult, IO[bytes]]:
    """The ``file`` field of a multipart chunk, spooled (in memory up to
    :data:`SPOOL_LIMIT`); the caller closes the spool."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT)  # noqa: SIM115 - returned
    try:
        result = forms.parse_multipart(content, content_type, file_dest=spool, file_limit=limit)
    except BaseException:
        spool.close()
        raise
    return result, spool


def free_bytes(directory: str) -> int | None:
    """Free bytes on *directory*'s file system (None when unknown)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def create_empty(path: str) -> None:
    """A new, empty part file (fsynced)."""
    with open(path, "wb") as fh:
        os.fsync(fh.fileno())


def remove_strays(uploads_dir: str, keep: set[str]) -> None:
    """Delete leftovers of interrupted single-shot uploads."""
    try:
        names = os.listdir(uploads_dir)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".part") and name not in keep:
            files.remove_file(os.path.join(uploads_dir, name))
