"""``bench/fleet.py --profile``: py-spy on the daemon during the measured window, and a
summary of its collapsed stacks (self, inclusive, per file, streamlab functions)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any


def start_profiler(pid: int, window: tuple[float, float], keep: str | None = None) -> dict[str, Any]:
    """Start ``py-spy record`` on *pid* for the *window* (wall clock)."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return {"error": "py-spy not installed (pip install py-spy)"}
    out = tempfile.mktemp(prefix="fleet-pyspy-", suffix=".txt")
    delay = max(0.0, window[0] - time.time())
    seconds = max(1, int(window[1] - window[0]))
    cmd = (
        f"sleep {delay:.2f}; exec {spy} record --pid {pid} --duration {seconds} --rate 200 --format raw "
        f"--nonblocking --output {out}"
    )
    proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return {"proc": proc, "out": out, "keep": keep}


def finish_profiler(spy: dict[str, Any]) -> dict[str, Any]:
    """Wait for py-spy; the summary of what it recorded (or the error)."""
    if "proc" not in spy:
        return spy
    _, err = spy["proc"].communicate(timeout=120)
    try:
        with open(spy["out"]) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {"error": f"py-spy wrote nothing: {err[-300:]}"}
    finally:
        if spy.get("keep") and os.path.exists(spy["out"]):
            shutil.copyfile(spy["out"], spy["keep"])
        if os.path.exists(spy["out"]):
            os.unlink(spy["out"])
    return profile_summary(lines)


def profile_summary(lines: list[str], top: int = 20) -> dict[str, Any]:
    """Collapsed stacks (``f1;f2;f3 count``) -> shares of all samples: the functions with
    the most self time, the most inclusive time (the reactor's trunk left out), the
    inclusive time of each source file, and the streamlab functions alone."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        for f in {f.rpartition(" (")[2].rstrip(")") for f in frames}:
            files[f] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], keep: Any, k: int = top) -> list[list[Any]]:
        return [[f, round(c / total, 3)] for f, c in counter.most_common() if keep(f, c)][:k]

    def branch(f: str, c: int) -> bool:
        return c < 0.9 * total  # the trunk (twistd, runReactor, mainLoop) is in every sample

    return {
        "samples": total,
        "self": share(self_c, lambda f, c: True),
        "inclusive": share(incl, branch),
        "files": share(files, branch, 25),
        "streamlab": share(incl, lambda f, c: "(streamlab/" in f and branch(f, c), 25),
    }


def _short(frame: str) -> str:
    """``func (path/to/mod.py:12)`` -> ``func (mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    if "site-packages" in path:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    elif "streamlab" in parts:
        short = "/".join(parts[parts.index("streamlab") :])
    else:
        short = parts[-1]
    return f"{name} ({short})"
