"""Extra cost of the continuous timeline per request: patching tfdt values in the bytes
served (streamlab.media.decode_times.patch) against just reading them.

Run: .venv/bin/python bench/rewrite.py [ITEM_DIR]
Without ITEM_DIR a test item is built first (ffmpeg, ~2 s).  Prints microseconds per
whole segment (written in 128 KiB chunks, as the origin does) and per LL part (one byte
range), for the video and the audio track, with and without the rewrite.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from streamlab.live.media import CHUNK  # noqa: E402
from streamlab.media import decode_times  # noqa: E402
from streamlab.media.index import load_item  # noqa: E402

ITEM: list[str] = []


def _best(fn, rounds: int) -> float:
    """The fastest single call of *rounds* (µs): robust on a machine shared with others."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def _origin(item: str, index, times):
    """An OriginResource on a Clock over *item*, and a function doing one GET through a
    real twisted.web Request on a StringTransport (what a request costs end to end)."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from streamlab.live.origin import OriginResource

    class Library:
        def get(self, name):
            return index

        def item_dir(self, name):
            return item

        def decode_times(self, name):
            return times

    clock = Clock()
    epoch = 1_700_000_000.0
    n_live = 9_999 * index.segment_count + 2
    clock.advance(epoch + n_live * index.segment_duration + 3.0)
    origin = OriginResource(Library(), clock, epoch=epoch, window=36, idle_timeout=600)
    top = Resource()
    top.putChild(b"go-live", origin)
    site = Site(top, reactor=clock)
    site.timeOut = None

    def get(path: str, headers: str = "") -> int:
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(f"GET /go-live/x/{path} HTTP/1.1\r\nHost: b\r\n{headers}\r\n".encode())
        return len(transport.value())

    return get, n_live


def main() -> None:
    if len(sys.argv) > 1:
        item = sys.argv[1]
    else:
        from streamlab.testing.fixtures import build_test_item
        item = build_test_item(tempfile.mkdtemp(prefix="bench-rewrite-"))
    ITEM.append(item)
    t0 = time.perf_counter()
    index = load_item(item)
    times = decode_times.build(item, index)
    build_ms = (time.perf_counter() - t0) * 1000
    print(f"continuous-timeline rewrite bench ({item})")
    print(f"decode-time index built at load: {build_ms:.1f} ms for {len(index.tracks)} tracks "
          f"x {index.segment_count} files (load_item included)")
    delta = 9_999 * 1_152_000  # loop 9999
    for track in (index.video[0], index.audio[0]):
        tt = times.track(track)
        fields = tt.files[1]
        with open(os.path.join(item, track.segment_path(2)), "rb") as fh:
            data = fh.read()
        seg = track.segments[1]
        part = seg.parts[len(seg.parts) // 2]

        def whole(patch: bool, data=data, fields=fields) -> None:
            for pos in range(0, len(data), CHUNK):
                chunk = data[pos:pos + CHUNK]
                if patch:
                    decode_times.patch(chunk, pos, fields, delta)

        def one_part(patch: bool, data=data, fields=fields, part=part) -> None:
            chunk = data[part.offset:part.offset + part.size]
            if patch:
                decode_times.patch(chunk, part.offset, fields, delta)

        seg_plain, seg_patch = _best(lambda: whole(False), 200), _best(lambda: whole(True), 200)
        part_plain, part_patch = _best(lambda: one_part(False), 5000), _best(lambda: one_part(True), 5000)
        print(f"{track.id:>6}: segment {len(data):>8} B, {len(fields.offsets):>3} tfdt: patch only "
              f"{seg_plain:7.1f} us plain, {seg_patch:7.1f} us patched (+{seg_patch - seg_plain:.1f} us)")
        print(f"{track.id:>6}: part    {part.size:>8} B, patch only "
              f"{part_plain:7.2f} us plain, {part_patch:7.2f} us patched (+{part_patch - part_plain:.2f} us)")




def requests(item: str) -> None:
    """End to end: one GET through the origin (twisted.web over StringTransport)."""
    index = load_item(item)
    times = decode_times.build(item, index)
    get, n_live = _origin(item, index, times)
    n = n_live - 1  # complete: served at once
    print("one GET through the origin (twisted.web Request on a StringTransport), us:")
    for track in (index.video[0], index.audio[0]):
        pre = track.segment_path(1).rsplit("/", 1)[0]
        seg = track.segments[n % index.segment_count]
        part = seg.parts[len(seg.parts) // 2]
        rng = f"Range: bytes={part.offset}-{part.offset + part.size - 1}\r\n"
        for label, path, hdr, rounds in (("segment", f"{pre}/n{n}.m4s", "", 200),
                                         ("part", f"{pre}/n{n}.m4s", rng, 2000)):
            plain = _best(lambda p=path, h=hdr: get(p, h), rounds)
            cont = _best(lambda p=path, h=hdr: get(p + "?timeline=continuous", h), rounds)
            print(f"{track.id:>6} {label:<8} plain {plain:8.1f}  continuous {cont:8.1f}  "
                  f"(+{cont - plain:.1f} us, {100 * (cont - plain) / plain:.0f} %)")


if __name__ == "__main__":
    main()
    requests(sys.argv[1] if len(sys.argv) > 1 else ITEM[0])
