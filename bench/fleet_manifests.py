"""Manifest parsing for the player fleet (pure, no I/O): what a player needs from a
master playlist, an (LL-)HLS media playlist and a DASH MPD, with the live-clock times
the origin lists, so lateness can be measured against *publication*, not a guess.

A hand-written line parser rather than ``m3u8.loads``: the fleet parses thousands of
10 KB playlists per second and must not steal the daemon's core.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attrs(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted"`` -> dict (quotes stripped)."""
    return {k: v.strip('"') for k, v in _ATTR.findall(text)}


def iso_to_epoch(text: str) -> float:
    """ISO-8601 (``Z`` or offset) -> epoch seconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Variant:
    """One ``EXT-X-STREAM-INF`` of a master playlist."""

    uri: str
    bandwidth: int
    resolution: str = ""


def parse_master(text: str) -> list[Variant]:
    """Variants of an HLS master playlist, in listed order."""
    out: list[Variant] = []
    pending: dict[str, str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attrs(line[len("#EXT-X-STREAM-INF:") :])
        elif pending is not None and line and not line.startswith("#"):
            out.append(Variant(line, int(pending.get("BANDWIDTH", "0")), pending.get("RESOLUTION", "")))
            pending = None
    return out


def pick_variant(variants: list[Variant], rendition: str) -> Variant:
    """``highest`` / ``lowest`` bandwidth, or the variant whose URI contains *rendition*."""
    if not variants:
        raise ValueError("master lists no variants")
    if rendition == "highest":
        return max(variants, key=lambda v: v.bandwidth)
    if rendition == "lowest":
        return min(variants, key=lambda v: v.bandwidth)
    for v in variants:
        if f"_{rendition}.m3u8" in v.uri:
            return v
    raise ValueError(f"no variant {rendition!r} in master")


@dataclass
class Part:
    """One ``EXT-X-PART``: byte range inside its segment's file, and publication time."""

    index: int
    uri: str
    offset: int
    size: int
    duration: float
    published_at: float


@dataclass
class Segment:
    """One media segment (complete, or the one in production when ``complete`` is False)."""

    msn: int
    uri: str
    start: float  # live-clock start (PROGRAM-DATE-TIME + listed durations)
    duration: float
    complete: bool
    offset: int | None = None  # EXT-X-BYTERANGE (2 s playlists)
    size: int | None = None
    parts: list[Part] = field(default_factory=list)

    @property
    def published_at(self) -> float:
        """When the whole segment is available (its end on the live clock)."""
        return self.start + self.duration


@dataclass
class MediaPlaylist:
    """What a player reads from a media playlist."""

    target_duration: float
    part_target: float | None
    map_uri: str | None
    segments: list[Segment]
    hint_uri: str | None = None
    hint_start: int | None = None

    @property
    def last_complete(self) -> Segment | None:
        """The newest complete segment."""
        for seg in reversed(self.segments):
            if seg.complete:
                return seg
        return None

    def next_part(self) -> tuple[int, int]:
        """``(_HLS_msn, _HLS_part)`` of the part after the last one listed."""
        last = self.segments[-1]
        if last.complete:
            return last.msn + 1, 0
        return last.msn, len(last.parts)

    @property
    def hint_msn(self) -> int:
        """Media sequence number of the segment the preload hint points into."""
        last = self.segments[-1]
        return last.msn + 1 if last.complete else last.msn


def parse_media(text: str) -> MediaPlaylist:
    """Parse an (LL-)HLS media playlist; times come from ``EXT-X-PROGRAM-DATE-TIME``.

    Raises ValueError when it has no segments or no PROGRAM-DATE-TIME to time them."""
    target = 0.0
    part_target: float | None = None
    map_uri: str | None = None
    msn = 0
    clock: float | None = None
    segments: list[Segment] = []
    parts: list[Part] = []
    part_clock = 0.0
    duration: float | None = None
    byterange: tuple[int, int | None] | None = None
    hint_uri: str | None = None
    hint_start: int | None = None
    last_range_end: dict[str, int] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line[0] != "#":
            if duration is None or clock is None:
                raise ValueError("segment without EXTINF / PROGRAM-DATE-TIME")
            off = size = None
            if byterange is not None:
                size = byterange[0]
                off = byterange[1] if byterange[1] is not None else last_range_end.get(line, 0)
                last_range_end[line] = off + size
            segments.append(Segment(msn, line, clock, duration, True, off, size, parts))
            clock += duration
            msn += 1
            parts, part_clock, duration, byterange = [], 0.0, None, None
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-PART":
            a = attrs(value)
            if clock is None:
                raise ValueError("part before PROGRAM-DATE-TIME")
            dur = float(a["DURATION"])
            part_clock += dur
            size_s, _, off_s = a.get("BYTERANGE", "").partition("@")
            parts.append(
                Part(len(parts), a["URI"], int(off_s or 0), int(size_s or 0), dur, clock + part_clock)
            )
        elif tag == "#EXTINF":
            duration = float(value.split(",", 1)[0])
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            clock = iso_to_epoch(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            msn = int(value)
        elif tag == "#EXT-X-BYTERANGE":
            size_s, _, off_s = value.partition("@")
            byterange = (int(size_s), int(off_s) if off_s else None)
        elif tag == "#EXT-X-TARGETDURATION":
            target = float(value)
        elif tag == "#EXT-X-PART-INF":
            part_target = float(attrs(value)["PART-TARGET"])
        elif tag == "#EXT-X-MAP":
            map_uri = attrs(value).get("URI")
        elif tag == "#EXT-X-PRELOAD-HINT":
            a = attrs(value)
            if a.get("TYPE") == "PART":
                hint_uri, hint_start = a.get("URI"), int(a.get("BYTERANGE-START", "0"))
    if parts:
        assert clock is not None
        segments.append(Segment(msn, parts[0].uri, clock, part_clock, False, None, None, parts))
    if not segments:
        raise ValueError("playlist lists no segments")
    return MediaPlaylist(target, part_target, map_uri, segments, hint_uri, hint_start)


# --------------------------------------------------------------------------- DASH

_NS = "{urn:mpeg:dash:schema:mpd:2011}"
_DUR = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def iso_duration(text: str) -> float:
    """``PT6.016S`` -> seconds."""
    m = _DUR.match(text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return (
        float(m["d"] or 0) * 86400 + float(m["h"] or 0) * 3600 + float(m["m"] or 0) * 60 + float(m["s"] or 0)
    )


@dataclass
class DashPeriod:
    """One Period's SegmentTemplate for the chosen Representation."""

    id: str
    start: float  # absolute epoch seconds (availabilityStartTime + Period@start)
    duration: float | None
    seg_duration: float
    start_number: int
    media: str
    init: str
    ato: float  # availabilityTimeOffset

    def count(self) -> int | None:
        """Segments in the period (None when open-ended)."""
        if self.duration is None:
            return None
        return max(1, round(self.duration / self.seg_duration))

    def available_at(self, k: int) -> float:
        """Availability time of the period's k-th segment (0-based)."""
        return self.start + (k + 1) * self.seg_duration - self.ato

    def url(self, k: int) -> str:
        """URL (relative to the MPD) of the period's k-th segment."""
        return _template(self.media, self.start_number + k)


def _template(media: str, number: int) -> str:
    def sub(m: re.Match[str]) -> str:
        fmt = m.group(1)
        return (f"%{fmt[1:]}" % number) if fmt else str(number)

    return re.sub(r"\$Number(%0\d+d)?\$", sub, media)


@dataclass
class Mpd:
    """What a DASH player reads from a dynamic MPD."""

    availability_start: float
    minimum_update_period: float
    periods: list[DashPeriod]


def parse_mpd(text: str, representation: str = "highest") -> Mpd:
    """Parse a dynamic MPD with ``SegmentTemplate``/``$Number$``; *representation* is a
    Representation id or ``highest``/``lowest`` (video bandwidth)."""
    root = ET.fromstring(text)
    ast = iso_to_epoch(root.get("availabilityStartTime", "1970-01-01T00:00:00Z"))
    mup = iso_duration(root.get("minimumUpdatePeriod", "PT2S"))
    periods: list[DashPeriod] = []
    for period in root.iter(f"{_NS}Period"):
        reps = []
        for aset in period.iter(f"{_NS}AdaptationSet"):
            if aset.get("contentType", "video") != "video":
                continue
            for rep in aset.iter(f"{_NS}Representation"):
                tmpl = rep.find(f"{_NS}SegmentTemplate")
                if tmpl is None:
                    tmpl = aset.find(f"{_NS}SegmentTemplate")
                if tmpl is not None:
                    reps.append((rep, tmpl))
        if not reps:
            continue
        if representation in ("highest", "lowest"):
            pick = (max if representation == "highest" else min)(
                reps, key=lambda r: int(r[0].get("bandwidth", 0))
            )
        else:
            matches = [r for r in reps if r[0].get("id") == representation]
            if not matches:
                raise ValueError(f"no Representation {representation!r}")
            pick = matches[0]
        rep, tmpl = pick
        timescale = int(tmpl.get("timescale", "1"))
        dur = period.get("duration")
        periods.append(
            DashPeriod(
                id=period.get("id", ""),
                start=ast + iso_duration(period.get("start", "PT0S")),
                duration=iso_duration(dur) if dur else None,
                seg_duration=int(tmpl.get("duration", "0")) / timescale,
                start_number=int(tmpl.get("startNumber", "1")),
                media=tmpl.get("media", "").replace("$RepresentationID$", rep.get("id", "")),
                init=tmpl.get("initialization", "").replace("$RepresentationID$", rep.get("id", "")),
                ato=float(tmpl.get("availabilityTimeOffset", "0")),
            )
        )
    if not periods:
        raise ValueError("MPD has no video SegmentTemplate")
    return Mpd(ast, mup, periods)
