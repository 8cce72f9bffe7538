"""Run every benchmark under bench/ one after another and print their figures.

``make bench`` calls this (``make bench ONLY=fleet`` runs just the player fleet).
Benchmarks print figures and never fail on speed; a bench that crashes is reported and
the others still run.  ``--only render,proxy`` picks some.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# Quick ones first; encode and media_index take minutes on 2 cores.  The fleet comes
# first at a small N (its JSON is the capacity figure people look for, docs/capacity.md).
ORDER = ["fleet", "render", "proxy_cores", "blocking", "proxy", "servers", "shaping", "uploads",
         "media_index", "encode"]
# arguments per bench when run from here (the fleet's own defaults are a small run too)
ARGS = {"fleet": ["--players", "20", "--duration", "10"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated bench names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or ORDER
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        print(f"\n=== bench/{name}.py", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *ARGS.get(name, [])], cwd=HERE.parent)
        print(f"=== bench/{name}.py: exit {code} in {time.monotonic() - started:.1f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that crashed (not a speed verdict): {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
