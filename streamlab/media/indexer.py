"""Indexing an item directory: segment files -> :class:`~streamlab.media.index.ContentIndex`.

:mod:`streamlab.media.index` is the model of ``content.json``; this module builds it
from the files, reading the MP4 boxes with :mod:`streamlab.media.mp4`.  The packager
calls :func:`index_item` on its staging directory (``trim=True``: surplus segments beyond
the common whole-segment count are deleted, the loop rule, and the audio's last frame is
cut at the loop length), ``rebuild-index`` and ``/api/content/{name}/rebuild`` call
:func:`rebuild_index` on an existing item.  Video fragments become parts one to one;
audio fragments (one per AAC frame) are grouped into even parts (:func:`group_parts`).

Everything here is blocking file I/O: run it in a thread.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from streamlab.formats import iso_s
from streamlab.fsutil import atomic_write
from streamlab.media import mp4, seam
from streamlab.media.index import (
    ContentIndex,
    Part,
    Segment,
    Track,
    UnusableItem,
    index_to_json,
    parse_index,
)

log = Logger()

SEGMENT_TEMPLATE = "seg_{number:05d}"
_SEG_RE = re.compile(r"^seg_(\d{5,})\.(m4s|ts)$")
#: rung and track ids (directory names)
ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: A segment counts as whole when it is at most this much shorter than segment_duration.
WHOLE_SEGMENT_TOLERANCE = 0.1


@dataclass(frozen=True)
class ItemMeta:
    """The item-level facts the files alone do not tell."""

    name: str
    source: str
    codec: str
    segment_duration: float
    part_duration: float
    gop_duration: float
    created_at: str
    extra: dict[str, Any] | None = None


def _segment_files(track_dir: str, ext: str) -> list[str]:
    """``seg_00001.<ext>``, ``seg_00002.<ext>`` ... present in *track_dir*, consecutive from 1."""
    try:
        names = os.listdir(track_dir)
    except FileNotFoundError:
        return []
    numbers = set()
    for n in names:
        m = _SEG_RE.match(n)
        if m and m.group(2) == ext:
            numbers.add(int(m.group(1)))
    out = []
    number = 1
    while number in numbers:
        out.append(os.path.join(track_dir, f"seg_{number:05d}.{ext}"))
        number += 1
    return out


@dataclass
class _Scanned:
    kind: str
    track_id: str
    info: mp4.TrackInfo
    segments: list[tuple[int, list[mp4.Fragment]]]  # (file size, fragments)
    files: list[str]


def _scan_fmp4(item_dir: str, kind: str, track_id: str) -> _Scanned:
    rel = f"{kind}/{track_id}"
    track_dir = os.path.join(item_dir, rel)
    init_path = os.path.join(track_dir, "init.mp4")
    if not os.path.isfile(init_path):
        raise UnusableItem(f"{rel}/init.mp4 is missing")
    try:
        info = mp4.read_init(init_path).track()
    except mp4.MP4Error as exc:
        raise UnusableItem(f"{rel}/init.mp4: {exc}") from None
    files = _segment_files(track_dir, "m4s")
    segments = []
    for path in files:
        try:
            fragments = mp4.read_fragments(path, info)
        except mp4.MP4Error as exc:
            raise UnusableItem(str(exc).replace(item_dir + os.sep, "")) from None
        segments.append((os.path.getsize(path), fragments))
    return _Scanned(kind, track_id, info, segments, files)


def _whole_count(scanned: _Scanned, segment_duration: float) -> int:
    count = 0
    for _size, frags in scanned.segments:
        if sum(f.ticks for f in frags) / scanned.info.timescale < segment_duration - WHOLE_SEGMENT_TOLERANCE:
            break
        count += 1
    return count


def _rnd(value: float) -> float:
    return round(value, 6)


def group_parts(frags: Sequence[mp4.Fragment], part_duration: float) -> tuple[Part, ...]:
    """Parts of one audio segment from its fragments: as few parts as possible, none longer
    than *part_duration*, their sample counts as even as whole fragments allow.

    With one fragment per AAC frame, a 282-frame segment becomes 32 parts of 8-9 frames
    (every part >= 85 % of the part target, as LL-HLS asks of all but the last) instead
    of 31 parts of 9 frames and a 3-frame tail that players stumble on."""
    if not frags:
        return ()
    # the typical frame (the track's last sample may be cut at the loop end: not its duration)
    frame = statistics.median(f.ticks / f.sample_count for f in frags if f.sample_count) / frags[0].timescale
    cap = max(1, math.floor(part_duration / frame + 1e-6))
    total = sum(f.sample_count for f in frags)
    count = max(1, math.ceil(total / cap))
    parts: list[Part] = []
    group: list[mp4.Fragment] = []
    done = 0
    for f in frags:
        group.append(f)
        done += f.sample_count
        boundary = (len(parts) + 1) * total / count
        if done + 1e-9 >= boundary or f is frags[-1]:
            first = group[0]
            parts.append(Part(first.offset, group[-1].offset + group[-1].size - first.offset,
                              _rnd(sum(g.ticks for g in group) / first.timescale), first.independent))
            group = []
    return tuple(parts)


def _track_from_scan(s: _Scanned, count: int, segment_duration: float, part_duration: float) -> Track:
    segments = []
    for size, frags in s.segments[:count]:
        if s.kind == "audio":
            parts = group_parts(frags, part_duration)
        else:
            parts = tuple(Part(f.offset, f.size, _rnd(f.duration), f.independent) for f in frags)
        duration = _rnd(sum(f.ticks for f in frags) / s.info.timescale)
        segments.append(Segment(duration, size, parts))
    total_bytes = sum(seg.size for seg in segments)
    total_time = sum(seg.duration for seg in segments) or 1.0
    peak = max(seg.size * 8 / seg.duration for seg in segments if seg.duration > 0)
    common: dict[str, Any] = dict(
        duration_ticks=sum(f.ticks for _, frags in s.segments[:count] for f in frags),
        id=s.track_id, type=s.kind, codecs=s.info.codecs, bandwidth=int(math.ceil(peak)),
        average_bandwidth=int(math.ceil(total_bytes * 8 / total_time)), timescale=s.info.timescale,
        init=f"{s.kind}/{s.track_id}/init.mp4",
        segment_template=f"{s.kind}/{s.track_id}/{SEGMENT_TEMPLATE}.m4s", segments=tuple(segments),
        language=s.info.language,
    )
    if s.kind == "video":
        first = s.segments[0][1]
        samples = sum(f.sample_count for f in first)
        secs = sum(f.ticks for f in first) / s.info.timescale
        rate = samples / secs if secs else 0.0
        rate = float(round(rate)) if abs(rate - round(rate)) < 0.01 else round(rate, 3)
        return Track(**common, width=s.info.width, height=s.info.height, frame_rate=rate)
    return Track(**common, channels=s.info.channels, sample_rate=s.info.sample_rate)


def _ts_track(item_dir: str, rung: Track, audio: Track | None, count: int, trim: bool) -> Track:
    rel = f"ts/{rung.id}"
    files = _segment_files(os.path.join(item_dir, rel), "ts")
    if len(files) < count:
        raise UnusableItem(f"{rel}: {len(files)} TS segments, expected {count}")
    if trim:
        for path in files[count:]:
            os.unlink(path)
    segments = tuple(Segment(v.duration, os.path.getsize(path), ())
                     for v, path in zip(rung.segments, files[:count], strict=True))
    total = sum(s.size for s in segments)
    time_total = sum(s.duration for s in segments) or 1.0
    codecs = rung.codecs + (f",{audio.codecs}" if audio is not None else "")
    return Track(
        id=rung.id, type="video", codecs=codecs,
        bandwidth=int(math.ceil(max(s.size * 8 / s.duration for s in segments))),
        average_bandwidth=int(math.ceil(total * 8 / time_total)), timescale=90000, init="",
        segment_template=f"{rel}/{SEGMENT_TEMPLATE}.ts", segments=segments, container="ts",
        width=rung.width, height=rung.height, frame_rate=rung.frame_rate,
        duration_ticks=round(rung.exact_duration * 90000),
    )


def _end_audio_at_loop(s: _Scanned, count: int, loop: float) -> None:
    """Make audio track *s* end exactly at the loop length: cut its last frame at T
    (:func:`seam.end_track_at`) in the last kept segment file, and re-read that file.

    A track that ends more than one frame early, or a layout the cut cannot rewrite, is
    left as it is: content.json's per-track ``duration`` then tells the truth."""
    path = s.files[count - 1]
    end = round(loop * s.info.timescale)
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        new = seam.end_track_at(data, end)
    except seam.SeamError as exc:
        log.warn("{path}: audio not cut at the loop end: {why}", path=path, why=str(exc))
        return
    if new == data:
        return
    atomic_write(path, new)
    s.segments[count - 1] = (len(new), mp4.read_fragments(path, s.info))


def index_item(item_dir: str, meta: ItemMeta, video_ids: Sequence[str], audio_ids: Sequence[str],
               ts_ids: Sequence[str] = (), trim: bool = False) -> ContentIndex:
    """Index the segment files of an item directory (blocking: run in a thread).

    ``segment_count`` is the number of leading whole segments every track has (the
    loop rule); with *trim* the surplus segment files are deleted.  Raises UnusableItem."""
    scans = [_scan_fmp4(item_dir, "video", v) for v in video_ids]
    scans += [_scan_fmp4(item_dir, "audio", a) for a in audio_ids]
    if not video_ids:
        raise UnusableItem("no video track")
    for s in scans:
        if s.info.kind != s.kind:
            raise UnusableItem(f"{s.kind}/{s.track_id}: init.mp4 holds a {s.info.kind} track")
    count = min(_whole_count(s, meta.segment_duration) for s in scans)
    if count < 1:
        shortest = min(scans, key=lambda s: _whole_count(s, meta.segment_duration))
        raise UnusableItem(f"{shortest.kind}/{shortest.track_id}: shorter than one whole "
                           f"{meta.segment_duration:g} s segment")
    if trim:
        for s in scans:
            for path in s.files[count:]:
                os.unlink(path)
            if s.kind == "audio":
                _end_audio_at_loop(s, count, count * meta.segment_duration)
    tracks = [_track_from_scan(s, count, meta.segment_duration, meta.part_duration) for s in scans]
    audio = next((t for t in tracks if t.type == "audio"), None)
    by_id = {t.id: t for t in tracks if t.type == "video"}
    for tid in ts_ids:
        if tid not in by_id:
            raise UnusableItem(f"ts/{tid}: no fMP4 rung with that id")
        tracks.append(_ts_track(item_dir, by_id[tid], audio, count, trim))
    index = ContentIndex(
        name=meta.name, source=meta.source, codec=meta.codec,
        segment_duration=meta.segment_duration, part_duration=meta.part_duration,
        gop_duration=meta.gop_duration, segment_count=count,
        duration=_rnd(count * meta.segment_duration), created_at=meta.created_at, tracks=tuple(tracks),
        extra=dict(meta.extra or {}),
    )
    # Round-trip through the validator: never write what the origin would refuse.
    return parse_index(index_to_json(index))


def write_index(item_dir: str, index: ContentIndex) -> None:
    """Write ``content.json`` atomically: temp file, fsync, rename, fsync the directory."""
    data = json.dumps(index_to_json(index), separators=(",", ":")).encode()
    atomic_write(os.path.join(item_dir, "content.json"), data)


def _subdirs(path: str) -> list[str]:
    try:
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and ID_RE.match(d))
    except FileNotFoundError:
        return []


def _infer_meta(item_dir: str, video_ids: Sequence[str]) -> ItemMeta:
    """Item facts from the files alone (when content.json is missing or unreadable)."""
    first = _scan_fmp4(item_dir, "video", video_ids[0])
    if not first.segments:
        raise UnusableItem(f"video/{video_ids[0]}: no segment files")
    seg_durs = [sum(f.ticks for f in frags) / first.info.timescale for _, frags in first.segments]
    segment_duration = round(statistics.median(seg_durs), 3)
    frags = first.segments[0][1]
    part_duration = round(statistics.median([f.duration for f in frags]), 3)
    starts = [i for i, f in enumerate(frags) if f.independent]
    gop = (starts[1] - starts[0]) * part_duration if len(starts) > 1 else segment_duration
    codec = {"avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc", "av01": "av1"}.get(
        first.info.sample_entry, first.info.sample_entry)
    name = os.path.basename(os.path.normpath(item_dir))
    return ItemMeta(name=name, source="", codec=codec, segment_duration=segment_duration,
                    part_duration=part_duration, gop_duration=round(gop, 3), created_at=utc_iso(None))


def rebuild_index(item_dir: str) -> ContentIndex:
    """Re-read the MP4 boxes of an existing item and rewrite ``content.json`` atomically.

    Blocking (call in a thread).  Item facts (name, source, durations, ...) and the track
    order come from the current ``content.json`` when it is readable, otherwise from the
    files.  Segment files are never deleted.  Idempotent.  Raises UnusableItem."""
    try:
        with open(os.path.join(item_dir, "content.json"), encoding="utf-8") as fh:
            old: dict[str, Any] | None = json.load(fh)
        if not isinstance(old, dict):
            old = None
    except (OSError, ValueError):
        old = None
    video_dirs = [d for d in _subdirs(os.path.join(item_dir, "video"))
                  if os.path.isfile(os.path.join(item_dir, "video", d, "init.mp4"))]
    audio_dirs = [d for d in _subdirs(os.path.join(item_dir, "audio"))
                  if os.path.isfile(os.path.join(item_dir, "audio", d, "init.mp4"))]
    ts_dirs = [d for d in _subdirs(os.path.join(item_dir, "ts")) if d in video_dirs]
    if not video_dirs:
        raise UnusableItem("no video/<rung>/init.mp4")
    meta: ItemMeta | None = None
    if old is not None:
        order = [str(t.get("id")) for t in old.get("tracks", []) if isinstance(t, dict)]
        video_dirs.sort(key=lambda d: order.index(d) if d in order else len(order))
        audio_dirs.sort(key=lambda d: order.index(d) if d in order else len(order))
        try:
            known = {"format", "name", "source", "codec", "segment_duration", "part_duration",
                     "gop_duration", "segment_count", "duration", "created_at", "tracks"}
            meta = ItemMeta(
                name=str(old.get("name") or os.path.basename(os.path.normpath(item_dir))),
                source=str(old.get("source", "")), codec=str(old.get("codec", "")),
                segment_duration=float(old["segment_duration"]), part_duration=float(old["part_duration"]),
                gop_duration=float(old.get("gop_duration", 1.0)), created_at=str(old.get("created_at", "")),
                extra={k: v for k, v in old.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError):
            meta = None
    else:
        video_dirs.sort(key=lambda d: -_height_of(item_dir, d))
    if meta is None:
        meta = _infer_meta(item_dir, video_dirs)
    index = index_item(item_dir, meta, video_dirs, audio_dirs, ts_dirs, trim=False)
    write_index(item_dir, index)
    return index


def _height_of(item_dir: str, rung: str) -> int:
    try:
        return mp4.read_init(os.path.join(item_dir, "video", rung, "init.mp4")).track().height
    except (OSError, mp4.MP4Error):
        return 0


def utc_iso(seconds: float | None) -> str:
    """``2026-12-03T22:15:00Z`` for *seconds* since the epoch (None: now)."""
    return iso_s(time.time() if seconds is None else seconds)
