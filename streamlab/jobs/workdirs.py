"""The job service's blocking file work (each call runs in a thread): fresh work
directories, removing a run's partial output, and finding the content items a source
still feeds."""

from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Any


def fresh_dir(path: str) -> None:
    """*path* as a new empty directory (an older one is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def remove_partial(work_root: str, content_dir: str, job_id: str, names: list[str],
                    finished: list[str]) -> None:
    """Remove a job's work dir, the packager's staging dirs of its outputs and the items
    this run already swapped in (*finished*)."""
    shutil.rmtree(os.path.join(work_root, job_id), ignore_errors=True)
    for name in names:
        for stage in glob.glob(os.path.join(glob.escape(content_dir), f".{glob.escape(name)}.partial-*")):
            shutil.rmtree(stage, ignore_errors=True)
    for name in finished:
        shutil.rmtree(os.path.join(content_dir, name), ignore_errors=True)


def source_labels(source: dict[str, Any]) -> set[str]:
    """The names a content.json ``source`` field may use for *source* (its file name)."""
    labels = {os.path.basename(str(source.get("file_path") or ""))}
    labels.discard("")
    return labels


def content_using(content_dir: str, labels: set[str]) -> list[str]:
    """Content items whose content.json names one of *labels* as its source."""
    used = []
    try:
        names = os.listdir(content_dir)
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(content_dir, name, "content.json")
        try:
            with open(path, encoding="utf-8") as fh:
                source = json.load(fh).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if source in labels:
            used.append(name)
    return used
