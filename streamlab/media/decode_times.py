"""Where the decode times are in an item's fragments, for the continuous live timeline.

In the continuous timeline (docs/streams.md) segment ``n`` of loop ``k`` is served with
every ``tfdt`` (``baseMediaDecodeTime``) raised by ``k x loop`` (the loop length in the
track's timescale), so timestamps keep rising across loops and players never see a
discontinuity.  To keep that cheap on the hot path, the position, version and value of
every ``tfdt`` field of every segment file are found once, when the item is loaded
(:func:`build`, blocking: the content library runs it in a thread), and a request only
overwrites those known bytes (:func:`patch`): no box parsing per request.

tfdt version 0 stores 32 bits.  Growing a box to version 1 would shift every byte offset
the playlists list (parts, byte ranges), so it is not done: :meth:`TrackTimes.fits` says
whether loop ``k`` still fits in 32 bits, and the origin refuses the continuous timeline
(409) for a loop that does not.  ffmpeg's muxer (our packager) always writes version 1.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left
from dataclasses import dataclass

from streamlab.media.index import ContentIndex, Track
from streamlab.media.mp4 import MP4Error, children, find, iter_boxes, read_init, read_top_level

_U32 = 1 << 32


@dataclass(frozen=True)
class FileTimes:
    """The ``tfdt`` fields of one segment file: absolute offsets of the value, their sizes
    (4 or 8 bytes) and original values, in file order."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    values: tuple[int, ...]


@dataclass(frozen=True)
class TrackTimes:
    """Per file (0-based) its :class:`FileTimes`; the track's timescale and loop length."""

    timescale: int
    loop_ticks: int
    files: tuple[FileTimes, ...]
    max32: int = -1  # the largest value held in a 32-bit (version 0) field, -1 when none

    def delta(self, loop: int) -> int:
        """What loop *loop* adds to every decode time (ticks)."""
        return loop * self.loop_ticks

    def fits(self, loop: int) -> bool:
        """Whether every 32-bit (version 0) field still fits once shifted for *loop*."""
        return self.max32 < 0 or self.max32 + self.delta(loop) < _U32


@dataclass(frozen=True)
class DecodeTimes:
    """Decode-time index of one item: (track id, container) -> :class:`TrackTimes`."""

    tracks: dict[tuple[str, str], TrackTimes]

    def track(self, track: Track) -> TrackTimes | None:
        """The index of *track* (None for tracks without fragments, e.g. MPEG-TS)."""
        return self.tracks.get((track.id, track.container))


def file_fields(path: str) -> FileTimes:
    """Every ``moof/traf/tfdt`` value field of the segment at *path* (blocking; reads the
    box headers and the ``moof`` boxes only)."""
    offsets: list[int] = []
    sizes: list[int] = []
    values: list[int] = []
    with open(path, "rb") as fh:
        for box in read_top_level(path):
            if box.type != "moof":
                continue
            fh.seek(box.offset)
            buf = fh.read(box.size)
            if len(buf) != box.size:
                raise MP4Error(f"{path}: moof at {box.offset} is truncated")
            moof = next(iter_boxes(buf))
            for traf in children(buf, moof):
                if traf.type != "traf":
                    continue
                tfdt = find(buf, traf, "tfdt")
                if tfdt is None:
                    continue
                pos = tfdt.payload_offset
                version = buf[pos]
                size = 8 if version == 1 else 4
                if pos + 4 + size > tfdt.end:
                    raise MP4Error(f"{path}: tfdt at {box.offset + tfdt.offset} is too short")
                (value,) = struct.unpack_from(">Q" if size == 8 else ">I", buf, pos + 4)
                offsets.append(box.offset + pos + 4)
                sizes.append(size)
                values.append(value)
    return FileTimes(tuple(offsets), tuple(sizes), tuple(values))


def build(item_dir: str, index: ContentIndex) -> DecodeTimes:
    """The decode-time index of every fMP4 track of *index* (blocking I/O; MP4Error when a
    file cannot be read as fragmented MP4)."""
    tracks: dict[tuple[str, str], TrackTimes] = {}
    for t in index.tracks:
        if t.container != "fmp4":
            continue
        timescale = t.timescale
        if t.init:
            timescale = read_init(os.path.join(item_dir, t.init)).track().timescale or timescale
        files = tuple(file_fields(os.path.join(item_dir, t.segment_path(i)))
                      for i in range(1, len(t.segments) + 1))
        max32 = max((v for f in files for v, s in zip(f.values, f.sizes, strict=True) if s == 4), default=-1)
        loop_ticks = round(index.loop_duration * timescale)
        tracks[(t.id, t.container)] = TrackTimes(timescale, loop_ticks, files, max32)
    return DecodeTimes(tracks)


def patch(data: bytes, pos: int, times: FileTimes, delta: int) -> bytes:
    """*data* (the file's bytes from offset *pos*) with every ``tfdt`` value it overlaps
    raised by *delta*; the input itself when it overlaps none.  Fields cut by the edges of
    *data* (an arbitrary byte range) are patched in the part that is there.
    Raises OverflowError when a 32-bit field would overflow (check :meth:`TrackTimes.fits`)."""
    if not delta or not times.offsets:
        return data
    end = pos + len(data)
    offsets = times.offsets
    i = bisect_left(offsets, pos - 7)
    if i >= len(offsets) or offsets[i] >= end:
        return data
    # one copy: the untouched spans are memoryview slices, joined with the new values
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    done = 0  # relative to pos
    while i < len(offsets) and offsets[i] < end:
        off, size = offsets[i], times.sizes[i]
        if off + size > pos:
            new = (times.values[i] + delta).to_bytes(size, "big")
            a, b = max(off, pos), min(off + size, end)
            pieces.append(view[done:a - pos])
            pieces.append(new[a - off:b - off])
            done = b - pos
        i += 1
    pieces.append(view[done:])
    return b"".join(pieces)
