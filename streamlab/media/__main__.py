"""``python -m streamlab.media``: build a test item, rebuild an index, inspect MP4 files.

* ``make-test-item MEDIA_DIR [--name testclip] [--duration 24]
  [--rungs 360p:640x360:600,180p:320x180:250] [--segment-duration 6] [--part-duration 0.2]
  [--gop-duration 1] [--ts] [--ffmpeg ffmpeg] [-v]`` writes
  ``MEDIA_DIR/dynamic_content/<name>/`` and prints its directory.
* ``package OUT_DIR --rung ID=PATH [--rung ...] --audio PATH [--segment-duration 6] [--ts] ...``
  packages already-encoded MP4s (e.g. a job's work files) into an item directory.
* ``rebuild-index ITEM_DIR`` re-reads the boxes and rewrites ``content.json``.
* ``inspect FILE [--init INIT]`` prints an init segment's tracks or a media segment's fragments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _make_test_item(args: argparse.Namespace) -> int:
    from streamlab.testing.fixtures import make_test_item, parse_rungs

    try:
        rungs = parse_rungs(args.rungs)
    except ValueError as exc:
        print(f"make-test-item: {exc}", file=sys.stderr)
        return 2
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if args.verbose:
            print(line, file=sys.stderr)

    outcome: dict[str, Any] = {}

    def main(reactor: Any) -> Any:
        d = make_test_item(reactor, args.media_dir, name=args.name, duration=args.duration, rungs=rungs,
                           segment_duration=args.segment_duration, part_duration=args.part_duration,
                           gop_duration=args.gop_duration, ts=args.ts, ffmpeg=args.ffmpeg, log=log)

        def ok(index: Any) -> None:
            outcome["index"] = index

        def failed(failure: Any) -> None:
            outcome["error"] = _failure_text(failure)

        return d.addCallbacks(ok, failed)

    _react(main)
    if "error" in outcome:
        print(f"make-test-item: {outcome['error']}", file=sys.stderr)
        return 1
    index = outcome["index"]
    print(os.path.join(args.media_dir, "dynamic_content", index.name))
    return 0


def _failure_text(failure: Any) -> str:
    """The error, and for a failed ffmpeg its last stderr lines."""
    text = str(failure.getErrorMessage())
    tail = getattr(failure.value, "stderr_tail", None)
    return text + ("\nffmpeg said:\n  " + "\n  ".join(tail) if tail else "")


def _react(main: Any) -> None:
    """Run *main* under task.react without letting it exit the interpreter."""
    from twisted.internet import task

    try:
        task.react(main)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def _package(args: argparse.Namespace) -> int:
    from streamlab.media.packager import RungInput, package

    rungs = []
    for spec in args.rung:
        rid, _, path = spec.partition("=")
        if not rid or not path:
            print(f"package: bad --rung {spec!r} (expected ID=PATH)", file=sys.stderr)
            return 2
        rungs.append(RungInput(rid, path, args.codec))
    outcome: dict[str, Any] = {}

    def main(reactor: Any) -> Any:
        d = package(reactor, ffmpeg=args.ffmpeg, out_dir=args.out_dir, name=args.name or
                    os.path.basename(os.path.normpath(args.out_dir)), source=args.source, codec=args.codec,
                    rungs=rungs, audio_path=args.audio, segment_duration=args.segment_duration,
                    part_duration=args.part_duration, gop_duration=args.gop_duration, ts=args.ts,
                    frame_rate=args.frame_rate)
        return d.addCallbacks(lambda index: outcome.update(index=index),
                              lambda failure: outcome.update(error=_failure_text(failure)))

    _react(main)
    if "error" in outcome:
        print(f"package: {outcome['error']}", file=sys.stderr)
        return 1
    print(args.out_dir)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from streamlab.media.index import UnusableItem
    from streamlab.media.indexer import rebuild_index

    try:
        index = rebuild_index(args.item_dir)
    except UnusableItem as exc:
        print(f"rebuild-index: {exc}", file=sys.stderr)
        return 1
    parts = sum(len(s.parts) for t in index.tracks for s in t.segments)
    print(json.dumps({"content": index.name, "segments": index.segment_count, "parts": parts}))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from streamlab.media import mp4

    try:
        if args.init is None:
            info = mp4.read_init(args.file)
            for t in info.tracks:
                print(json.dumps(t.__dict__))
            return 0
        init = mp4.read_init(args.init)
        for f in mp4.read_fragments(args.file, init):
            print(f"offset={f.offset} size={f.size} duration={f.duration:.6f} samples={f.sample_count} "
                  f"independent={f.independent} tfdt={f.decode_time}")
    except (OSError, mp4.MP4Error) as exc:
        print(f"inspect: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m streamlab.media", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-test-item", help="synthesise + encode + package a small test item")
    p.add_argument("media_dir")
    p.add_argument("--name", default="testclip")
    p.add_argument("--duration", type=float, default=24.0)
    p.add_argument("--rungs", default="360p:640x360:600,180p:320x180:250")
    p.add_argument("--segment-duration", type=float, default=6.0)
    p.add_argument("--part-duration", type=float, default=0.2)
    p.add_argument("--gop-duration", type=float, default=1.0)
    p.add_argument("--ts", action="store_true", help="also write MPEG-TS renditions")
    p.add_argument("--ffmpeg", default="ffmpeg")
    p.add_argument("-v", "--verbose", action="store_true", help="print ffmpeg's stderr")
    p.set_defaults(func=_make_test_item)
    p = sub.add_parser("package", help="package encoded rung MP4s + an AAC MP4 into an item directory")
    p.add_argument("out_dir", help="<media_dir>/dynamic_content/<name>")
    p.add_argument("--rung", action="append", required=True, help="ID=PATH, best first (repeatable)")
    p.add_argument("--audio", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--source", default="")
    p.add_argument("--codec", default="h264", choices=("h264", "hevc", "av1"))
    p.add_argument("--segment-duration", type=float, default=6.0)
    p.add_argument("--part-duration", type=float, default=0.2)
    p.add_argument("--gop-duration", type=float, default=1.0)
    p.add_argument("--frame-rate", type=float, default=None)
    p.add_argument("--ts", action="store_true", help="also write MPEG-TS renditions")
    p.add_argument("--ffmpeg", default="ffmpeg")
    p.set_defaults(func=_package)
    p = sub.add_parser("rebuild-index", help="re-read the boxes of an item, rewrite content.json")
    p.add_argument("item_dir")
    p.set_defaults(func=_rebuild)
    p = sub.add_parser("inspect", help="print an init segment's tracks, or a segment's fragments")
    p.add_argument("file")
    p.add_argument("--init", help="the init.mp4 of FILE (then FILE is a media segment)")
    p.set_defaults(func=_inspect)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
