"""How long the media layer takes on a realistic item: packaging (ffmpeg -c copy + index),
rebuild_index (re-reading every box) and load_item (what the library does per item).

Builds a 120 s item with three rungs (720p/360p/180p) once, then times each step.
Prints figures; never fails on speed.  ``.venv/bin/python bench/media_index.py``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from streamlab.media.index import load_item
from streamlab.media.indexer import rebuild_index


def main() -> None:
    work = tempfile.mkdtemp(prefix="bench-media-")
    try:
        t0 = time.perf_counter()
        rungs = "720p:1280x720:2400,360p:640x360:600,180p:320x180:250"
        subprocess.run([sys.executable, "-m", "streamlab.media", "make-test-item", work, "--name", "bench",
                        "--duration", "120", "--rungs", rungs], check=True, capture_output=True)
        build = time.perf_counter() - t0
        item = os.path.join(work, "dynamic_content", "bench")
        index = load_item(item)
        parts = sum(len(s.parts) for t in index.tracks for s in t.segments)
        size = sum(s.size for t in index.tracks for s in t.segments)
        print(f"item: {index.segment_count} segments x {len(index.tracks)} tracks, {parts} parts, "
              f"{size / 1e6:.1f} MB, content.json {os.path.getsize(os.path.join(item, 'content.json'))} B")
        print(f"make-test-item (synthesise + encode 3 rungs + package): {build:.2f} s")
        for name, fn, runs in (("rebuild_index", rebuild_index, 5), ("load_item", load_item, 20)):
            t0 = time.perf_counter()
            for _ in range(runs):
                fn(item)
            per = (time.perf_counter() - t0) / runs
            print(f"{name}: {per * 1000:.1f} ms per item ({parts / per:,.0f} parts/s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
