"""The content index (``content.json``) of one encoded item: model, parser, validator.

Pure: :func:`parse_index` turns decoded JSON into frozen objects or raises
:class:`UnusableItem` with the reason; :func:`check_files` compares the index with the
files on disk (sizes) and is meant to run off the reactor thread.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1


class UnusableItem(ValueError):
    """The item cannot be served; the message says why (shown in logs and /api/content?all=1)."""


@dataclass(frozen=True)
class Part:
    """One fragment (moof+mdat) inside a segment file."""

    offset: int
    size: int
    duration: float
    independent: bool


@dataclass(frozen=True)
class Segment:
    """One media segment file (``seg_NNNNN``), numbered from 1 on disk."""

    duration: float
    size: int
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Track:
    """A video rung or an audio track (or a TS rendition with ``container == "ts"``)."""

    id: str
    type: str  # "video" | "audio"
    codecs: str
    bandwidth: int
    average_bandwidth: int
    timescale: int
    init: str
    segment_template: str
    segments: tuple[Segment, ...]
    container: str = "fmp4"  # "fmp4" | "ts"
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    channels: int = 0
    sample_rate: int = 0
    language: str = "und"
    #: exact length of the track's timeline (first sample's decode time 0 to the end of its
    #: last sample) in ``timescale`` units; 0 when unknown (older content.json)
    duration_ticks: int = 0

    @property
    def exact_duration(self) -> float:
        """``duration_ticks / timescale`` in seconds (0.0 when unknown)."""
        return self.duration_ticks / self.timescale if self.duration_ticks and self.timescale else 0.0

    def segment_path(self, number: int) -> str:
        """Relative path of file number *number* (1-based)."""
        return self.segment_template.format(number=number)

    @property
    def resolution(self) -> str:
        """``"1280x720"`` for video, ``""`` for audio."""
        return f"{self.width}x{self.height}" if self.type == "video" else ""


@dataclass(frozen=True)
class ContentIndex:
    """Everything the origin needs about one item."""

    name: str
    source: str
    codec: str
    segment_duration: float
    part_duration: float
    gop_duration: float
    segment_count: int
    duration: float
    created_at: str
    tracks: tuple[Track, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def loop_duration(self) -> float:
        """T = segment_count x segment_duration."""
        return self.segment_count * self.segment_duration

    def track(self, track_id: str) -> Track | None:
        """The track with id *track_id* (fMP4 first), or None."""
        for t in self.tracks:
            if t.id == track_id and t.container == "fmp4":
                return t
        for t in self.tracks:
            if t.id == track_id:
                return t
        return None

    @property
    def video(self) -> tuple[Track, ...]:
        """fMP4 video rungs, highest bandwidth first."""
        vids = [t for t in self.tracks if t.type == "video" and t.container == "fmp4"]
        return tuple(sorted(vids, key=lambda t: -t.bandwidth))

    @property
    def audio(self) -> tuple[Track, ...]:
        """fMP4 audio tracks."""
        return tuple(t for t in self.tracks if t.type == "audio" and t.container == "fmp4")

    @property
    def ts_tracks(self) -> tuple[Track, ...]:
        """MPEG-TS renditions (only for items encoded with hls_format ts|both)."""
        return tuple(t for t in self.tracks if t.container == "ts")


def _req(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise UnusableItem(f"{where}: missing {key!r}")
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise UnusableItem(f"{where}: {key!r} has the wrong type")
    return value


def _parse_track(obj: Any, i: int, seg_count: int) -> Track:
    where = f"tracks[{i}]"
    if not isinstance(obj, dict):
        raise UnusableItem(f"{where}: not an object")
    tid = _req(obj, "id", str, where)
    if not tid or "/" in tid or ".." in tid:
        raise UnusableItem(f"{where}: bad id {tid!r}")
    ttype = _req(obj, "type", str, where)
    if ttype not in ("video", "audio"):
        raise UnusableItem(f"{where}: type must be video or audio")
    container = obj.get("container", "fmp4")
    segments_raw = _req(obj, "segments", list, where)
    if len(segments_raw) != seg_count:
        raise UnusableItem(f"{where}: {len(segments_raw)} segments, expected {seg_count}")
    segments = []
    for n, seg in enumerate(segments_raw, start=1):
        sw = f"{where}.segments[{n}]"
        if not isinstance(seg, dict):
            raise UnusableItem(f"{sw}: not an object")
        parts = []
        end = 0
        for p in seg.get("parts", []):
            part = Part(int(p["offset"]), int(p["size"]), float(p["duration"]), bool(p.get("independent")))
            if part.offset < end or part.size <= 0:
                raise UnusableItem(f"{sw}: parts overlap or are empty")
            end = part.offset + part.size
            parts.append(part)
        size = _req(seg, "size", int, sw)
        if end > size:
            raise UnusableItem(f"{sw}: parts run past the segment's size")
        if container == "fmp4" and not parts:
            raise UnusableItem(f"{sw}: no parts")
        segments.append(Segment(_req(seg, "duration", float, sw), size, tuple(parts)))
    return Track(
        id=tid, type=ttype, codecs=_req(obj, "codecs", str, where),
        bandwidth=int(_req(obj, "bandwidth", int, where)),
        average_bandwidth=int(obj["average_bandwidth"] if "average_bandwidth" in obj else obj["bandwidth"]),
        timescale=int(obj.get("timescale", 90000)),
        init=str(obj.get("init", "")), segment_template=_req(obj, "segment_template", str, where),
        segments=tuple(segments), container=container,
        width=int(obj.get("width", 0)), height=int(obj.get("height", 0)),
        frame_rate=float(obj.get("frame_rate", 0.0)), channels=int(obj.get("channels", 0)),
        sample_rate=int(obj.get("sample_rate", 0)), language=str(obj.get("language", "und")),
        duration_ticks=int(obj.get("duration_ticks", 0)),
    )


def parse_index(data: Any) -> ContentIndex:
    """Validate decoded ``content.json`` and build the model (UnusableItem on error)."""
    if not isinstance(data, dict):
        raise UnusableItem("content.json is not an object")
    if data.get("format") != FORMAT:
        raise UnusableItem(f"unsupported format {data.get('format')!r}")
    try:
        seg_dur = _req(data, "segment_duration", float, "item")
        part_dur = _req(data, "part_duration", float, "item")
        count = _req(data, "segment_count", int, "item")
        if seg_dur <= 0 or part_dur <= 0 or part_dur > seg_dur or count < 1:
            raise UnusableItem("segment_duration/part_duration/segment_count out of range")
        tracks_raw = _req(data, "tracks", list, "item")
        tracks = tuple(_parse_track(t, i, count) for i, t in enumerate(tracks_raw))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, UnusableItem):
            raise
        raise UnusableItem(f"malformed content.json: {exc!r}") from None
    if not any(t.type == "video" and t.container == "fmp4" for t in tracks):
        raise UnusableItem("no fMP4 video track")
    ids = [(t.id, t.container) for t in tracks]
    if len(set(ids)) != len(ids):
        raise UnusableItem("duplicate track ids")
    known = {"format", "name", "source", "codec", "segment_duration", "part_duration", "gop_duration",
             "segment_count", "duration", "created_at", "tracks"}
    return ContentIndex(
        name=str(data.get("name", "")), source=str(data.get("source", "")),
        codec=str(data.get("codec", "")), segment_duration=seg_dur, part_duration=part_dur,
        gop_duration=float(data.get("gop_duration", 1.0)), segment_count=count,
        duration=float(data.get("duration", count * seg_dur)),
        created_at=str(data.get("created_at", "")), tracks=tracks,
        extra={k: v for k, v in data.items() if k not in known},
    )


def index_to_json(index: ContentIndex) -> dict[str, Any]:
    """The ``content.json`` document for *index* (inverse of :func:`parse_index`)."""

    def track(t: Track) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": t.id, "type": t.type, "codecs": t.codecs, "bandwidth": t.bandwidth,
            "average_bandwidth": t.average_bandwidth, "timescale": t.timescale, "init": t.init,
            "segment_template": t.segment_template,
        }
        if t.container != "fmp4":
            out["container"] = t.container
        if t.type == "video":
            out.update(width=t.width, height=t.height, frame_rate=t.frame_rate)
        else:
            out.update(channels=t.channels, sample_rate=t.sample_rate, language=t.language)
        if t.duration_ticks:
            out.update(duration=round(t.exact_duration, 9), duration_ticks=t.duration_ticks)
        out["segments"] = [
            {"duration": s.duration, "size": s.size,
             "parts": [{"offset": p.offset, "size": p.size, "duration": p.duration,
                        "independent": p.independent} for p in s.parts]}
            for s in t.segments
        ]
        return out

    doc: dict[str, Any] = {
        "format": FORMAT, "name": index.name, "source": index.source, "codec": index.codec,
        "segment_duration": index.segment_duration, "part_duration": index.part_duration,
        "gop_duration": index.gop_duration, "segment_count": index.segment_count,
        "duration": index.duration, "created_at": index.created_at,
        "tracks": [track(t) for t in index.tracks],
    }
    doc.update(index.extra)
    return doc


def load_item(item_dir: str) -> ContentIndex:
    """Read, parse and check ``<item_dir>/content.json`` against the files (blocking I/O:
    call from a thread).  Raises UnusableItem with the reason."""
    path = os.path.join(item_dir, "content.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise UnusableItem("content.json is missing") from None
    except (OSError, ValueError) as exc:
        raise UnusableItem(f"content.json unreadable: {exc}") from None
    index = parse_index(data)
    check_files(item_dir, index)
    return index


def check_files(item_dir: str, index: ContentIndex) -> None:
    """Every init and segment file exists with the size the index says."""
    for t in index.tracks:
        if t.init and not os.path.isfile(os.path.join(item_dir, t.init)):
            raise UnusableItem(f"track {t.id}: {t.init} is missing")
        for n, seg in enumerate(t.segments, start=1):
            rel = t.segment_path(n)
            try:
                size = os.stat(os.path.join(item_dir, rel)).st_size
            except OSError:
                raise UnusableItem(f"track {t.id}: {rel} is missing") from None
            if size != seg.size:
                raise UnusableItem(f"track {t.id}: {rel} is {size} bytes, index says {seg.size}")


def target_duration(durations: list[float]) -> int:
    """EXT-X-TARGETDURATION for these durations (ceil, allowing float noise)."""
    return max(1, max((math.ceil(d - 1e-6) for d in durations), default=1))
