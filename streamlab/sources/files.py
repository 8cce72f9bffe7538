"""File names and blocking file operations for sources.

The functions that touch the disk are blocking by design: callers run them with
``deferToThread`` (never on the reactor thread).  :func:`safe_filename` is pure.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata

from streamlab.fsutil import fsync_dir

ORIGINALS = "originals"
_MAX_NAME = 120
_TEMP_PREFIX = ".incoming-"


def safe_filename(raw: str, default: str = "upload") -> str:
    """A harmless file name from whatever a client sent.

    Directory parts (``/`` and ``\\``) are dropped, so ``../../etc/passwd`` becomes
    ``passwd``; anything but ``[A-Za-z0-9._-]`` becomes ``_``; leading dots are removed
    (no hidden files, no ``..``); the extension is lower-cased; the length is bounded.
    """
    text = unicodedata.normalize("NFKD", raw or "").encode("ascii", "ignore").decode("ascii")
    text = re.split(r"[/\\]", text)[-1]
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".-_ ")
    text = re.sub(r"_+", "_", text)
    stem, dot, ext = text.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", ext):
        stem = stem.rstrip("._-")[: _MAX_NAME - len(ext) - 1] or default
        text = f"{stem}.{ext.lower()}"
    else:
        text = text.rstrip("._-")[:_MAX_NAME]
    return text or default


def source_name(filename: str) -> str:
    """The display name of a source: its file name without the extension."""
    stem, dot, _ext = filename.rpartition(".")
    return stem if dot and stem else filename


def move_into(src: str, directory: str, filename: str) -> str:
    """Move *src* into *directory* under *filename* (or ``name_1.ext``, ``name_2.ext``...
    when taken) atomically and without ever replacing an existing file; the new absolute
    path.  Blocking: run in a thread.

    Same file system: ``link`` (fails if the name exists) + ``unlink``.  Other file
    system: copy to a hidden temp file next to the target, fsync, then link that in.
    """
    os.makedirs(directory, exist_ok=True)
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""
    staged = src
    temp: str | None = None
    try:
        if os.stat(src).st_dev != os.stat(directory).st_dev:
            temp = os.path.join(directory, f"{_TEMP_PREFIX}{os.getpid()}-{os.path.basename(src)}")
            with open(src, "rb") as fin, open(temp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)
                fout.flush()
                os.fsync(fout.fileno())
            staged = temp
        for attempt in range(10000):
            candidate = filename if attempt == 0 else f"{stem}_{attempt}{'.' + ext if ext else ''}"
            target = os.path.join(directory, candidate)
            try:
                os.link(staged, target)
            except FileExistsError:
                continue
            except OSError:
                # no hard links here: reserve the name exclusively, then rename over it
                try:
                    os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                except FileExistsError:
                    continue
                os.replace(staged, target)
                fsync_dir(directory)
                if staged != src:
                    os.unlink(src)
                return target
            fsync_dir(directory)
            os.unlink(src)
            return target
        raise FileExistsError(f"no free name for {filename!r} in {directory}")
    finally:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)


def list_originals(originals_dir: str) -> list[tuple[str, int]]:
    """``(file name, size)`` of every regular, non-hidden file directly in originals/."""
    out: list[tuple[str, int]] = []
    try:
        entries = list(os.scandir(originals_dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                out.append((entry.name, entry.stat(follow_symlinks=False).st_size))
        except OSError:
            continue
    return sorted(out)


def remove_file(path: str) -> bool:
    """Delete *path* if it exists; True when something was deleted."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
