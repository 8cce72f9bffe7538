"""One log file per job under ``<state_dir>/job_logs/<job_id>.log``.

Lines are appended from the reactor thread to a line-buffered file kept open while the
job writes (small local appends), and numbered: :meth:`JobLogs.append` returns the
line's 1-based number, so a WebSocket client that reads the file and then receives live
lines can drop the ones it already has.  Reading a whole log is blocking I/O: call
:meth:`JobLogs.read` from a thread.
"""

from __future__ import annotations

import os
import re
from typing import IO

_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_LINE = 2000


class JobLogs:
    """Job log files in *log_dir*."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._files: dict[str, IO[str]] = {}
        self._counts: dict[str, int] = {}

    def path(self, job_id: str) -> str:
        """The log file of *job_id*."""
        if not _ID_RE.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return os.path.join(self.log_dir, f"{job_id}.log")

    def append(self, job_id: str, line: str) -> int:
        """Append one line (newlines inside are flattened); returns its number."""
        text = line.replace("\r", " ").replace("\n", " ")[:MAX_LINE]
        fh = self._files.get(job_id)
        if fh is None:
            os.makedirs(self.log_dir, exist_ok=True)
            path = self.path(job_id)
            if job_id not in self._counts:
                self._counts[job_id] = _count_lines(path)
            fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - kept open
            self._files[job_id] = fh
        fh.write(text + "\n")
        self._counts[job_id] += 1
        return self._counts[job_id]

    def close(self, job_id: str) -> None:
        """Close the open file of *job_id* (it is reopened on the next append)."""
        fh = self._files.pop(job_id, None)
        if fh is not None:
            fh.close()

    def read(self, job_id: str) -> list[str]:
        """Every complete line of the log (blocking; [] when there is none)."""
        try:
            with open(self.path(job_id), encoding="utf-8", errors="replace") as fh:
                data = fh.read()
        except FileNotFoundError:
            return []
        lines = data.split("\n")
        return lines[:-1]  # the last element is "" or an incomplete line

    def remove(self, job_id: str) -> None:
        """Delete the log of *job_id*."""
        self.close(job_id)
        self._counts.pop(job_id, None)
        try:
            os.unlink(self.path(job_id))
        except FileNotFoundError:
            pass

    def close_all(self) -> None:
        """Close every open file (daemon stop)."""
        for job_id in list(self._files):
            self.close(job_id)


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0
