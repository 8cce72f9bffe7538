"""A small, pure ISO-BMFF (MP4) box reader for fragmented MP4 / CMAF.

What the origin and the packager need, and nothing more:

* :func:`iter_boxes` walks the boxes of a byte string (top level or inside a container);
  :func:`read_top_level` walks a file's top-level boxes by reading only their headers.
* :func:`parse_init` reads an ``init.mp4`` (``moov``): per track the handler, ``mdhd``
  timescale and language, the sample entry (``avc1``/``hvc1``/``hev1``/``av01``/``mp4a``)
  with its RFC 6381 ``codecs`` string, ``tkhd`` width/height, audio channels/sample rate
  and the ``trex`` defaults from ``mvex``.
* :func:`parse_fragments` cuts a media segment (``seg_NNNNN.m4s``) into fragments: every
  ``moof`` + ``mdat`` pair with the boxes that precede it (``styp``, ``prft``, ``sidx``,
  ``emsg``) counted into it, so fragment offsets and sizes tile the whole file.  Each
  fragment has its duration (sum of the ``trun`` sample durations, with ``tfhd`` and
  ``trex`` defaults) and whether its first sample is a sync sample.

Everything here works on ``bytes``; the ``read_*`` helpers do blocking file I/O and are
meant to run in a thread.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "mvex", "moof", "traf", "edts", "dinf",
                        "udta", "mfra"})


class MP4Error(ValueError):
    """The bytes are not the MP4 structure we expected (the message says where)."""


@dataclass(frozen=True)
class Box:
    """One box: its type, where it starts (absolute offset), total size and header size."""

    type: str
    offset: int
    size: int
    header_size: int

    @property
    def end(self) -> int:
        """Offset just past the box."""
        return self.offset + self.size

    @property
    def payload_offset(self) -> int:
        """Offset of the first byte after the header."""
        return self.offset + self.header_size


def _decode_header(data: bytes | memoryview, pos: int, avail: int) -> tuple[str, int, int]:
    """(type, size, header size) at *pos*; size 0 means "to the end".  *avail* = bytes left."""
    if avail < 8:
        raise MP4Error(f"truncated box header at offset {pos}")
    size, raw_type = struct.unpack_from(">I4s", data, pos)
    btype = raw_type.decode("latin-1")
    header = 8
    if size == 1:
        if avail < 16:
            raise MP4Error(f"truncated 64-bit box header at offset {pos}")
        (size,) = struct.unpack_from(">Q", data, pos + 8)
        header = 16
    if btype == "uuid":
        header += 16
    if size != 0 and size < header:
        raise MP4Error(f"box {btype!r} at offset {pos} has a bad size {size}")
    return btype, size, header


def _header(data: bytes | memoryview, pos: int, end: int) -> Box:
    btype, size, header = _decode_header(data, pos, end - pos)
    if size == 0:
        size = end - pos
    if pos + size > end:
        raise MP4Error(f"box {btype!r} at offset {pos} has a bad size {size} (container ends at {end})")
    return Box(btype, pos, size, header)


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes of *data* between *start* and *end* (one level, in order)."""
    stop = len(data) if end is None else end
    pos = start
    while pos < stop:
        box = _header(data, pos, stop)
        yield box
        pos = box.end


def children(data: bytes | memoryview, box: Box, skip: int = 0) -> Iterator[Box]:
    """Child boxes of container *box* (*skip* bytes of fields come before the children)."""
    return iter_boxes(data, box.payload_offset + skip, box.end)


def find(data: bytes | memoryview, box: Box, btype: str) -> Box | None:
    """The first child of *box* of type *btype*, or None."""
    for child in children(data, box):
        if child.type == btype:
            return child
    return None


def find_path(data: bytes | memoryview, box: Box, *path: str) -> Box | None:
    """Descend through *path* (first match at every level)."""
    current: Box | None = box
    for btype in path:
        if current is None:
            return None
        current = find(data, current, btype)
    return current


def read_top_level(path: str) -> list[Box]:
    """The top-level boxes of the file at *path*, reading headers only (blocking I/O)."""
    boxes: list[Box] = []
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(32)
            try:
                btype, box_size, header = _decode_header(head, 0, len(head))
            except MP4Error as exc:
                raise MP4Error(f"{path}: {exc} (offset {pos})") from None
            if box_size == 0:
                box_size = size - pos
            if pos + box_size > size:
                raise MP4Error(f"{path}: box {btype!r} at {pos} runs past the end of the file")
            boxes.append(Box(btype, pos, box_size, header))
            pos += box_size
    return boxes


# --------------------------------------------------------------------------- init segment


@dataclass(frozen=True)
class TrackInfo:
    """What an init segment says about one track."""

    track_id: int
    handler: str  # "vide" | "soun" | other
    timescale: int
    sample_entry: str  # "avc1", "hvc1", "hev1", "av01", "mp4a", ...
    codecs: str  # RFC 6381, e.g. "avc1.64001f", "mp4a.40.2"
    language: str = "und"
    width: int = 0
    height: int = 0
    channels: int = 0
    sample_rate: int = 0
    default_sample_duration: int = 0
    default_sample_size: int = 0
    default_sample_flags: int = 0

    @property
    def kind(self) -> str:
        """``"video"``, ``"audio"`` or the raw handler type."""
        return {"vide": "video", "soun": "audio"}.get(self.handler, self.handler)


@dataclass(frozen=True)
class InitInfo:
    """An init segment: its tracks, in file order."""

    tracks: tuple[TrackInfo, ...]

    def track(self, track_id: int | None = None) -> TrackInfo:
        """The track with *track_id* (default: the first one)."""
        if not self.tracks:
            raise MP4Error("init segment has no tracks")
        if track_id is None:
            return self.tracks[0]
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise MP4Error(f"init segment has no track {track_id}")


def _full_box(data: bytes | memoryview, box: Box) -> tuple[int, int, int]:
    """(version, flags, offset of the fields after version/flags)."""
    pos = box.payload_offset
    if box.end - pos < 4:
        raise MP4Error(f"{box.type} at {box.offset} too short")
    vf = struct.unpack_from(">I", data, pos)[0]
    return vf >> 24, vf & 0xFFFFFF, pos + 4


def _language(code: int) -> str:
    if code == 0 or code == 0x7FFF:
        return "und"
    chars = [((code >> shift) & 0x1F) + 0x60 for shift in (10, 5, 0)]
    if not all(0x61 <= c <= 0x7A for c in chars):
        return "und"
    return bytes(chars).decode("ascii")


def _avc_codecs(entry: str, data: bytes | memoryview, config: Box | None) -> str:
    if config is None or config.size - config.header_size < 4:
        return entry
    p = config.payload_offset
    profile, compat, level = data[p + 1], data[p + 2], data[p + 3]
    return f"{entry}.{profile:02x}{compat:02x}{level:02x}"


def _reverse_bits32(value: int) -> int:
    out = 0
    for _ in range(32):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


def _hevc_codecs(entry: str, data: bytes | memoryview, config: Box | None) -> str:
    if config is None or config.size - config.header_size < 13:
        return entry
    p = config.payload_offset
    b1 = data[p + 1]
    space = (b1 >> 6) & 0x3
    tier = (b1 >> 5) & 0x1
    profile_idc = b1 & 0x1F
    (compat,) = struct.unpack_from(">I", data, p + 2)
    constraints = bytes(data[p + 6:p + 12])
    level = data[p + 12]
    parts = [entry, f"{['', 'A', 'B', 'C'][space]}{profile_idc}", f"{_reverse_bits32(compat):X}",
             f"{'H' if tier else 'L'}{level}"]
    trimmed = constraints.rstrip(b"\x00")
    parts.extend(f"{b:X}" for b in trimmed)
    return ".".join(parts)


def _av1_codecs(entry: str, data: bytes | memoryview, config: Box | None) -> str:
    if config is None or config.size - config.header_size < 3:
        return entry
    p = config.payload_offset
    b1, b2 = data[p + 1], data[p + 2]
    profile = (b1 >> 5) & 0x7
    level = b1 & 0x1F
    tier = (b2 >> 7) & 1
    high_bitdepth = (b2 >> 6) & 1
    twelve_bit = (b2 >> 5) & 1
    depth = (12 if twelve_bit else 10) if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{'H' if tier else 'M'}.{depth:02d}"


def _descriptor(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of an MPEG-4 descriptor."""
    if pos + 2 > end:
        raise MP4Error("truncated esds descriptor")
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):
        b = data[pos]
        pos += 1
        length = (length << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, pos, min(pos + length, end)


def _mp4a_codecs(entry: str, data: bytes | memoryview, esds: Box | None) -> str:
    if esds is None:
        return entry
    try:
        _, _, pos = _full_box(data, esds)
        tag, start, end = _descriptor(data, pos, esds.end)
        if tag != 0x03:
            return entry
        flags = data[start + 2]
        pos = start + 3
        if flags & 0x80:
            pos += 2
        if flags & 0x40:
            pos += 1 + data[pos]
        if flags & 0x20:
            pos += 2
        tag, start, end = _descriptor(data, pos, end)
        if tag != 0x04:
            return entry
        oti = data[start]
        pos = start + 13
        if oti != 0x40 or pos >= end:
            return f"{entry}.{oti:x}"
        tag, start, _ = _descriptor(data, pos, end)
        if tag != 0x05:
            return f"{entry}.40"
        aot = data[start] >> 3
        if aot == 31:
            aot = 32 + (((data[start] & 0x7) << 3) | (data[start + 1] >> 5))
        return f"{entry}.40.{aot}"
    except IndexError:
        return entry


def _sample_entry(data: bytes | memoryview, stsd: Box) -> tuple[str, str, int, int, int]:
    """(fourcc, codecs, width, height, channels-or-0) of the first sample entry in *stsd*."""
    _, _, pos = _full_box(data, stsd)
    entries = list(iter_boxes(data, pos + 4, stsd.end))
    if not entries:
        raise MP4Error("stsd has no sample entry")
    entry = entries[0]
    fourcc = entry.type
    p = entry.payload_offset
    if fourcc in ("avc1", "avc3", "hvc1", "hev1", "av01", "vp09", "encv"):
        width, height = struct.unpack_from(">HH", data, p + 24)
        kids = {b.type: b for b in iter_boxes(data, p + 78, entry.end)}
        if fourcc in ("avc1", "avc3"):
            codecs = _avc_codecs(fourcc, data, kids.get("avcC"))
        elif fourcc in ("hvc1", "hev1"):
            codecs = _hevc_codecs(fourcc, data, kids.get("hvcC"))
        elif fourcc == "av01":
            codecs = _av1_codecs(fourcc, data, kids.get("av1C"))
        else:
            codecs = fourcc
        return fourcc, codecs, width, height, 0
    if fourcc in ("mp4a", "ac-3", "ec-3", "Opus", "fLaC", "enca"):
        channels = struct.unpack_from(">H", data, p + 16)[0]
        codecs = fourcc
        if fourcc == "mp4a":
            kids = {b.type: b for b in iter_boxes(data, p + 28, entry.end)}
            codecs = _mp4a_codecs(fourcc, data, kids.get("esds"))
        return fourcc, codecs, 0, 0, channels
    return fourcc, fourcc, 0, 0, 0


def parse_init(data: bytes | memoryview) -> InitInfo:
    """Read the ``moov`` of an init segment (MP4Error when there is none)."""
    moov = next((b for b in iter_boxes(data) if b.type == "moov"), None)
    if moov is None:
        raise MP4Error("no moov box")
    trex: dict[int, tuple[int, int, int]] = {}
    mvex = find(data, moov, "mvex")
    if mvex is not None:
        for box in children(data, mvex):
            if box.type == "trex":
                _, _, pos = _full_box(data, box)
                tid, _desc, dur, size, flags = struct.unpack_from(">5I", data, pos)
                trex[tid] = (dur, size, flags)
    tracks = []
    for trak in children(data, moov):
        if trak.type != "trak":
            continue
        tkhd = find(data, trak, "tkhd")
        mdhd = find_path(data, trak, "mdia", "mdhd")
        hdlr = find_path(data, trak, "mdia", "hdlr")
        stsd = find_path(data, trak, "mdia", "minf", "stbl", "stsd")
        if tkhd is None or mdhd is None or hdlr is None or stsd is None:
            raise MP4Error(f"trak at {trak.offset} lacks tkhd/mdhd/hdlr/stsd")
        version, _, pos = _full_box(data, tkhd)
        track_id = struct.unpack_from(">I", data, pos + (16 if version == 1 else 8))[0]
        tk_w, tk_h = struct.unpack_from(">II", data, tkhd.end - 8)
        version, _, pos = _full_box(data, mdhd)
        if version == 1:
            timescale = struct.unpack_from(">I", data, pos + 16)[0]
            lang = struct.unpack_from(">H", data, pos + 28)[0]
        else:
            timescale = struct.unpack_from(">I", data, pos + 8)[0]
            lang = struct.unpack_from(">H", data, pos + 16)[0]
        _, _, pos = _full_box(data, hdlr)
        handler = bytes(data[pos + 4:pos + 8]).decode("latin-1")
        fourcc, codecs, width, height, channels = _sample_entry(data, stsd)
        if handler == "vide":
            width = (tk_w >> 16) or width
            height = (tk_h >> 16) or height
        dur, size, flags = trex.get(track_id, (0, 0, 0))
        tracks.append(TrackInfo(
            track_id=track_id, handler=handler, timescale=timescale, sample_entry=fourcc, codecs=codecs,
            language=_language(lang), width=width if handler == "vide" else 0,
            height=height if handler == "vide" else 0, channels=channels,
            sample_rate=timescale if handler == "soun" else 0,
            default_sample_duration=dur, default_sample_size=size, default_sample_flags=flags,
        ))
    if not tracks:
        raise MP4Error("moov has no trak")
    return InitInfo(tuple(tracks))


def read_init(path: str) -> InitInfo:
    """:func:`parse_init` of the file at *path* (blocking I/O)."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return parse_init(data)
    except (MP4Error, struct.error, IndexError) as exc:
        raise MP4Error(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- media segments


def sample_is_sync(flags: int) -> bool:
    """True when ISO-BMFF sample *flags* describe an independently decodable sample."""
    depends_on = (flags >> 24) & 0x3
    non_sync = (flags >> 16) & 0x1
    return depends_on != 1 and not non_sync


@dataclass(frozen=True)
class Fragment:
    """One fragment of a media segment: byte range, timing, and independence."""

    offset: int
    size: int
    ticks: int  # duration in the track's timescale
    timescale: int
    independent: bool
    sample_count: int
    decode_time: int | None  # tfdt baseMediaDecodeTime, when present

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.ticks / self.timescale


@dataclass(frozen=True)
class _Traf:
    ticks: int
    samples: int
    first_flags: int | None
    decode_time: int | None


def _parse_traf(data: bytes | memoryview, traf: Box, track: TrackInfo) -> _Traf | None:
    tfhd = find(data, traf, "tfhd")
    if tfhd is None:
        raise MP4Error(f"traf at {traf.offset} has no tfhd")
    _, flags, pos = _full_box(data, tfhd)
    (track_id,) = struct.unpack_from(">I", data, pos)
    if track_id != track.track_id:
        return None
    pos += 4
    default_duration = track.default_sample_duration
    default_flags = track.default_sample_flags
    if flags & 0x1:
        pos += 8
    if flags & 0x2:
        pos += 4
    if flags & 0x8:
        (default_duration,) = struct.unpack_from(">I", data, pos)
        pos += 4
    if flags & 0x10:
        pos += 4
    if flags & 0x20:
        (default_flags,) = struct.unpack_from(">I", data, pos)
    decode_time = None
    ticks = 0
    samples = 0
    first_flags: int | None = None
    for box in children(data, traf):
        if box.type == "tfdt":
            version, _, p = _full_box(data, box)
            decode_time = struct.unpack_from(">Q" if version == 1 else ">I", data, p)[0]
        elif box.type == "trun":
            _, tflags, p = _full_box(data, box)
            (count,) = struct.unpack_from(">I", data, p)
            p += 4
            if tflags & 0x1:
                p += 4
            run_first: int | None = None
            if tflags & 0x4:
                (run_first,) = struct.unpack_from(">I", data, p)
                p += 4
            per_sample = [(tflags >> bit) & 1 for bit in (8, 9, 10, 11)]
            stride = 4 * sum(per_sample)
            if p + stride * count > box.end:
                raise MP4Error(f"trun at {box.offset} is shorter than its {count} samples")
            for i in range(count):
                q = p + i * stride
                duration = default_duration
                if per_sample[0]:
                    (duration,) = struct.unpack_from(">I", data, q)
                    q += 4
                if per_sample[1]:
                    q += 4
                sflags = default_flags
                if per_sample[2]:
                    (sflags,) = struct.unpack_from(">I", data, q)
                if i == 0 and run_first is not None:
                    sflags = run_first
                if first_flags is None and samples == 0 and i == 0:
                    first_flags = sflags
                ticks += duration
            samples += count
    return _Traf(ticks, samples, first_flags, decode_time)


def parse_fragments(data: bytes | memoryview, track: TrackInfo | InitInfo) -> list[Fragment]:
    """Split a media segment into fragments (see the module docstring).

    Every byte of *data* belongs to exactly one fragment: boxes before a ``moof`` are
    counted into that fragment, boxes after the last ``mdat`` into the last one.
    """
    return _fragments(list(iter_boxes(data)), len(data), lambda box: (data, box), track)


def _fragments(boxes: list[Box], total: int, moof_bytes: Callable[[Box], tuple[bytes | memoryview, Box]],
               track: TrackInfo | InitInfo) -> list[Fragment]:
    """Fragments from the top-level *boxes* of a segment of *total* bytes; *moof_bytes*
    gives a buffer holding a moof and the moof's Box within that buffer."""
    info = track.track() if isinstance(track, InitInfo) else track
    if info.timescale <= 0:
        raise MP4Error("track timescale is 0")
    fragments: list[Fragment] = []
    start = 0
    moof: Box | None = None
    for box in boxes:
        if box.type == "moof":
            if moof is not None:
                raise MP4Error(f"moof at {box.offset} follows a moof without an mdat")
            moof = box
        elif box.type == "mdat":
            if moof is None:
                raise MP4Error(f"mdat at {box.offset} without a moof")
            buf, local = moof_bytes(moof)
            traf = None
            for child in children(buf, local):
                if child.type == "traf":
                    traf = _parse_traf(buf, child, info)
                    if traf is not None:
                        break
            if traf is None:
                raise MP4Error(f"moof at {moof.offset} has no traf for track {info.track_id}")
            independent = sample_is_sync(traf.first_flags if traf.first_flags is not None
                                         else info.default_sample_flags)
            fragments.append(Fragment(start, box.end - start, traf.ticks, info.timescale, independent,
                                      traf.samples, traf.decode_time))
            start = box.end
            moof = None
    if moof is not None:
        raise MP4Error(f"moof at {moof.offset} without an mdat")
    if not fragments:
        raise MP4Error("no moof+mdat fragment")
    if start < total:
        last = fragments[-1]
        fragments[-1] = Fragment(last.offset, total - last.offset, last.ticks, last.timescale,
                                 last.independent, last.sample_count, last.decode_time)
    return fragments


def read_fragments(path: str, track: TrackInfo | InitInfo) -> list[Fragment]:
    """:func:`parse_fragments` of the file at *path* (blocking I/O).  Reads only the box
    headers and the ``moof`` boxes, never the media data."""
    try:
        with open(path, "rb") as fh:
            boxes = read_top_level(path)

            def moof_bytes(box: Box) -> tuple[bytes, Box]:
                fh.seek(box.offset)
                buf = fh.read(box.size)
                if len(buf) != box.size:
                    raise MP4Error(f"moof at {box.offset} is truncated")
                return buf, Box(box.type, 0, box.size, box.header_size)

            return _fragments(boxes, os.path.getsize(path), moof_bytes, track)
    except (MP4Error, struct.error, IndexError) as exc:
        text = str(exc)
        raise MP4Error(text if text.startswith(path) else f"{path}: {text}") from None
