"""Durable file writes, in one place: every small state file (content.json, the setup
marker, server_id, keys) is written to a temp file beside it, fsynced, renamed over the
target and the directory fsynced, so a crash leaves either the old or the new file.

Blocking: call from a thread (deferToThread) unless the file is tiny and written once."""

from __future__ import annotations

import os
import secrets


def fsync_dir(directory: str) -> None:
    """Make a rename/link in *directory* durable (best effort on filesystems that refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace *path* with *data* atomically and durably (created with *mode*)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
