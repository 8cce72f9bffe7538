"""The packager: already-encoded MP4s -> one content item (fMP4/CMAF segments + content.json).

How (see docs/media.md for the why): ONE ``ffmpeg -c copy`` child process reads every
rung and the audio file and writes, per track, ffmpeg's ``dash`` muxer output with
``-seg_duration <segment_duration> -frag_type duration -frag_duration <d>``.  The dash
muxer cuts a new segment at the first keyframe at or after every segment boundary (the
inputs have closed GOPs that divide the segment duration, so every video segment is
exactly ``segment_duration``) and inside a segment flushes a fragment (moof+mdat) as soon
as the fragment holds ``d`` of media.  ``d`` is set half a frame below the last whole
number of frames that fits in ``part_duration``, so video fragments are exactly
``part_duration`` (whole frames) and AAC fragments are the largest number of whole
1024-sample frames that does not exceed it (LL-HLS forbids parts longer than the part
target).  Sidx boxes are turned off (``movflags=+skip_sidx``), the per-track MPD files
are throw-away and deleted.  With ``ts=True`` the same process also writes 6 s MPEG-TS
segments per rung (video + audio muxed) with the ``hls`` muxer.

Everything is written into a hidden staging directory next to ``out_dir``; after ffmpeg
exits 0 the segments are indexed with :mod:`streamlab.media.mp4` in a thread, surplus
segments beyond the common whole-segment count are removed (the loop rule), ``content.json``
is written last and atomically, and the staging directory replaces ``out_dir``.  On any
failure or cancellation the staging directory is removed and ``out_dir`` is untouched.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, error, protocol, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamlab.formats import number_text
from streamlab.fsutil import atomic_write, fsync_dir
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
_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
AAC_FRAME = 1024
#: A segment counts as whole when it is at most this much shorter than segment_duration.
WHOLE_SEGMENT_TOLERANCE = 0.1
STDERR_TAIL = 25
#: fMP4 flags: no sidx; trun v1 with negative composition offsets, so a B-frame input
#: still has its first sample at decode AND presentation time 0 without an edit list
MOVFLAGS = "+skip_sidx+negative_cts_offsets"


class PackagingError(RuntimeError):
    """Packaging failed; ``stderr_tail`` holds ffmpeg's last stderr lines (if it ran)."""

    def __init__(self, message: str, stderr_tail: Sequence[str] = ()) -> None:
        tail = list(stderr_tail)
        full = message + ("\nffmpeg said:\n  " + "\n  ".join(tail) if tail else "")
        super().__init__(full)
        self.reason = message
        self.stderr_tail = tail


@dataclass(frozen=True)
class RungInput:
    """One encoded video rung: its id (e.g. ``"720p"``), the MP4 path and the codec."""

    id: str
    path: str
    codec: str  # "h264" | "hevc" | "av1"


# --------------------------------------------------------------------------- ffmpeg command


def fragment_target(part_duration: float, frame_duration: float) -> float:
    """The ``-frag_duration`` that makes fragments of the most whole frames <= part_duration.

    ffmpeg closes a fragment once it holds at least ``frag_duration`` of media, so a value
    half a frame below ``n`` frames yields fragments of exactly ``n`` frames."""
    frames = max(1, math.floor(part_duration / frame_duration + 1e-6))
    return (frames - 0.5) * frame_duration


def ffmpeg_argv(*, ffmpeg: str, stage_dir: str, rungs: Sequence[RungInput], audio_path: str,
                segment_duration: float, part_duration: float, frame_rate: float,
                audio_sample_rate: int = 48000, ts: bool = False) -> list[str]:
    """The one ffmpeg command line that packages every track into *stage_dir* (pure)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-y"]
    for rung in rungs:
        argv += ["-i", rung.path]
    # The AAC priming frame is kept as an ordinary first sample at time 0 (no edit list
    # anywhere; the encode path advanced the audio by the encoder delay), so the audio
    # input's edit list is not applied: TS and fMP4 audio both start at 0 like the video.
    argv += ["-ignore_editlist", "1", "-i", audio_path]
    audio_index = len(rungs)

    def dash(track_dir: str, frag: float) -> list[str]:
        return ["-c", "copy", "-f", "dash", "-seg_duration", _num(segment_duration),
                "-frag_type", "duration", "-frag_duration", _num(frag),
                "-use_template", "1", "-use_timeline", "0", "-window_size", "0",
                "-init_seg_name", "init.mp4", "-media_seg_name", "seg_$Number%05d$.m4s",
                "-format_options", f"movflags={MOVFLAGS}:use_editlist=0", "-write_prft", "0",
                "-hls_playlist", "0", "-streaming", "0",
                os.path.join(stage_dir, track_dir, "packager.mpd")]

    video_frag = fragment_target(part_duration, 1.0 / frame_rate)
    for i, rung in enumerate(rungs):
        tag = ["-tag:v", "hvc1"] if rung.codec == "hevc" else []  # Apple players need hvc1
        argv += ["-map", f"{i}:v:0", "-map_metadata", "-1", *tag, *dash(f"video/{rung.id}", video_frag)]
    # Audio: one fragment per AAC frame; the indexer groups them into evenly sized parts
    # (see group_parts), so no segment ends with a tiny tail part.
    audio_args = dash("audio/audio", 0.0)
    i = audio_args.index("-frag_type")
    audio_args[i:i + 4] = ["-frag_type", "every_frame"]
    argv += ["-map", f"{audio_index}:a:0", "-map_metadata", "-1", *audio_args]
    if ts:
        for i, rung in enumerate(rungs):
            ts_dir = os.path.join(stage_dir, "ts", rung.id)
            bsf = ["-bsf:v", "hevc_mp4toannexb"] if rung.codec == "hevc" else []
            argv += ["-map", f"{i}:v:0", "-map", f"{audio_index}:a:0", "-c", "copy", *bsf,
                     "-f", "hls", "-hls_time", _num(segment_duration), "-hls_list_size", "0",
                     "-hls_segment_type", "mpegts", "-start_number", "1",
                     "-hls_segment_filename", os.path.join(ts_dir, "seg_%05d.ts"),
                     os.path.join(ts_dir, "packager.m3u8")]
    return argv


def _num(value: float) -> str:
    return number_text(value, 6)


def setsid_wrapper() -> list[str]:
    """``["setsid"]`` when available: the child gets its own process group (killpg-able)."""
    path = shutil.which("setsid")
    return [path] if path else []


class FFmpegProtocol(protocol.ProcessProtocol):
    """Collects stderr lines (forwarding each to *log*), fires *done* with the exit code."""

    def __init__(self, log_line: Callable[[str], None] | None = None) -> None:
        self.done: Deferred[int] = Deferred()
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._log = log_line
        self._buf = b""

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        pass

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self._buf += data
        *lines, self._buf = re.split(rb"[\r\n]", self._buf)
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        self.tail.append(line)
        if self._log is not None:
            try:
                self._log(line)
            except Exception:  # a broken log sink must not break packaging
                log.failure("ffmpeg log callback failed")

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        if self._buf:
            self._line(self._buf)
            self._buf = b""
        value = reason.value
        code = value.exitCode if isinstance(value, (error.ProcessDone, error.ProcessTerminated)) else -1
        if code is None:
            code = -(getattr(value, "signal", None) or 1)
        self.done.callback(code)


class FFmpegRun:
    """One ffmpeg child in its own process group (``setsid``).

    ``result`` fires None on exit 0 or errbacks with :class:`PackagingError` carrying the
    last stderr lines; ``ended`` fires with the exit code once the process is gone;
    :meth:`kill` sends SIGTERM to the group, then SIGKILL after ``kill_grace`` seconds."""

    def __init__(self, reactor: Any, argv: Sequence[str], log_line: Callable[[str], None] | None = None,
                 kill_grace: float = 5.0) -> None:
        self._reactor = reactor
        self._grace = kill_grace
        self.protocol = FFmpegProtocol(log_line)
        self.ended: Deferred[int] = self.protocol.done
        self.result: Deferred[None] = Deferred()
        exe = shutil.which(argv[0]) or argv[0]
        self._group = bool(setsid_wrapper())
        full = [*setsid_wrapper(), exe, *argv[1:]]
        self.transport = reactor.spawnProcess(self.protocol, full[0], full, env=None)
        self.ended.addCallback(self._ended)

    @property
    def pid(self) -> int | None:
        """The child's pid (= its process group id), None once it has been reaped."""
        return getattr(self.transport, "pid", None)

    def _ended(self, code: int) -> int:
        if code == 0:
            self.result.callback(None)
        else:
            self.result.errback(PackagingError(f"ffmpeg exited with status {code}", self.protocol.tail))
        return code

    def _signal(self, sig: int) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            if self._group:
                try:
                    os.killpg(pid, sig)
                    return
                except ProcessLookupError:
                    pass  # setsid has not run yet in the child: signal the process itself
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGTERM the process group now, SIGKILL it after the grace period."""
        if self.ended.called:
            return
        self._signal(signal.SIGTERM)
        timer = self._reactor.callLater(self._grace, self._signal, signal.SIGKILL)

        def stop_timer(code: int) -> int:
            if timer.active():
                timer.cancel()
            return code

        self.ended.addBoth(stop_timer)


def run_ffmpeg(reactor: Any, argv: Sequence[str], log_line: Callable[[str], None] | None = None,
               kill_grace: float = 5.0) -> Deferred[None]:
    """Run *argv* (ffmpeg) as a child in its own process group; see :class:`FFmpegRun`.

    Cancelling the returned Deferred kills the process group."""
    run = FFmpegRun(reactor, argv, log_line, kill_grace)
    outer: Deferred[None] = Deferred(lambda _: run.kill())
    _forward(run.result, outer)
    return outer


def _forward(src: Deferred[Any], dst: Deferred[Any]) -> None:
    """Fire *dst* with *src*'s result unless *dst* was already fired (cancelled)."""

    def relay(result: Any) -> None:
        if dst.called:
            return None  # cancelled meanwhile: the late result (or failure) is dropped
        if isinstance(result, Failure):
            dst.errback(result)
        else:
            dst.callback(result)
        return None

    src.addBoth(relay)


# --------------------------------------------------------------------------- indexing


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
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and _ID_RE.match(d))
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
                    part_duration=part_duration, gop_duration=round(gop, 3), created_at=_utc_iso(None))


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


def _utc_iso(seconds: float | None) -> str:
    when = (datetime.datetime.now(datetime.UTC) if seconds is None
            else datetime.datetime.fromtimestamp(seconds, datetime.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- package()


def validate(*, name: str, rungs: Sequence[RungInput], segment_duration: float, part_duration: float,
             gop_duration: float) -> None:
    """Check the packaging options; ValueError naming the problem."""
    if not name:
        raise ValueError("name must not be empty")
    if not rungs:
        raise ValueError("at least one video rung is needed")
    ids = [r.id for r in rungs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate rung ids: {ids}")
    for r in rungs:
        if not _ID_RE.match(r.id):
            raise ValueError(f"bad rung id {r.id!r} (use [A-Za-z0-9_-])")
        if r.codec not in ("h264", "hevc", "av1"):
            raise ValueError(f"rung {r.id}: unknown codec {r.codec!r}")
    if not (0 < part_duration <= gop_duration <= segment_duration):
        raise ValueError("need 0 < part_duration <= gop_duration <= segment_duration")

    def multiple(big: float, small: float) -> bool:
        ratio = big / small
        return abs(ratio - round(ratio)) < 1e-6

    if not multiple(segment_duration, gop_duration):
        raise ValueError("segment_duration must be a whole number of GOPs")
    if not multiple(gop_duration, part_duration):
        raise ValueError("gop_duration must be a whole number of parts")


def package(reactor: Any, *, ffmpeg: str, out_dir: str, name: str, source: str, codec: str,
            rungs: Sequence[RungInput], audio_path: str, segment_duration: float = 6.0,
            part_duration: float = 0.2, gop_duration: float = 1.0, ts: bool = False,
            log: Callable[[str], None] | None = None, frame_rate: float | None = None,
            extra: dict[str, Any] | None = None) -> Deferred[ContentIndex]:
    """Package encoded rungs + audio into the item directory *out_dir*.

    *rungs* are MP4s with closed GOPs of *gop_duration* (any order; the index lists them
    as given), *audio_path* an MP4/M4A with AAC.  *frame_rate* defaults to what the first
    rung says (read in a thread).  *extra* keys are stored at the top of content.json.
    Fires the new :class:`ContentIndex`; errbacks with PackagingError (ffmpeg failed,
    or the result is unusable) or ValueError (bad options).  Cancelling kills ffmpeg's
    process group.  Any partial output is removed; an existing *out_dir* is replaced only
    on success."""
    try:
        validate(name=name, rungs=rungs, segment_duration=segment_duration, part_duration=part_duration,
                 gop_duration=gop_duration)
    except ValueError:
        return defer.fail()
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    stage = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{secrets.token_hex(4)}")
    created_at = _utc_iso(reactor.seconds())
    state: dict[str, Any] = {"running": None, "cancelled": False}

    def prepare() -> float:
        os.makedirs(parent, exist_ok=True)
        for r in rungs:
            if not os.path.isfile(r.path):
                raise PackagingError(f"rung {r.id}: no such file {r.path}")
        if not os.path.isfile(audio_path):
            raise PackagingError(f"audio: no such file {audio_path}")
        for r in rungs:
            os.makedirs(os.path.join(stage, "video", r.id))
            if ts:
                os.makedirs(os.path.join(stage, "ts", r.id))
        os.makedirs(os.path.join(stage, "audio", "audio"))
        return frame_rate or probe_frame_rate(rungs[0].path)

    def spawn(rate: float) -> Deferred[None]:
        if state["cancelled"]:
            raise PackagingError("cancelled")
        argv = ffmpeg_argv(ffmpeg=ffmpeg, stage_dir=stage, rungs=rungs, audio_path=audio_path,
                           segment_duration=segment_duration, part_duration=part_duration,
                           frame_rate=rate, ts=ts)
        if log is not None:
            log("packager: " + " ".join(argv))
        run = FFmpegRun(reactor, argv, log)
        state["running"] = run
        return run.result

    def finish(_: None) -> ContentIndex:
        meta = ItemMeta(name=name, source=source, codec=codec, segment_duration=segment_duration,
                        part_duration=part_duration, gop_duration=gop_duration, created_at=created_at,
                        extra=extra)
        for r in rungs:
            _remove_byproducts(os.path.join(stage, "video", r.id))
            if ts:
                _remove_byproducts(os.path.join(stage, "ts", r.id))
        _remove_byproducts(os.path.join(stage, "audio", "audio"))
        try:
            index = index_item(stage, meta, [r.id for r in rungs], ["audio"],
                               [r.id for r in rungs] if ts else (), trim=True)
        except UnusableItem as exc:
            raise PackagingError(f"packaged output is unusable: {exc}") from None
        bad = [(t.id, n + 1, s.duration) for t in index.video for n, s in enumerate(t.segments)
               if abs(s.duration - segment_duration) > 1e-3]
        if bad:
            raise PackagingError(f"video segments are not {segment_duration:g} s long "
                                 f"(GOPs not aligned?): {bad[:3]}")
        write_index(stage, index)
        if state["cancelled"]:
            raise PackagingError("cancelled")
        _swap_in(stage, out_dir)
        return index

    def cleanup(failure: Failure) -> Deferred[Any]:
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), shutil.rmtree, stage, True)
        d.addBoth(lambda _: failure)
        return d

    def run() -> Deferred[ContentIndex]:
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), prepare)
        d.addCallback(spawn)
        d.addCallback(lambda _: threads.deferToThreadPool(reactor, reactor.getThreadPool(), finish, None))
        d.addErrback(cleanup)
        return d

    inner = run()

    def cancel(_: Deferred[ContentIndex]) -> None:
        # The caller sees CancelledError at once; ffmpeg is killed and the staging
        # directory removed in the background (the inner chain still runs cleanup).
        state["cancelled"] = True
        running: FFmpegRun | None = state["running"]
        if running is not None:
            running.kill()

    outer: Deferred[ContentIndex] = Deferred(cancel)
    _forward(inner, outer)
    return outer


def _remove_byproducts(track_dir: str) -> None:
    try:
        names = os.listdir(track_dir)
    except FileNotFoundError:
        return
    for n in names:
        if n.endswith((".mpd", ".m3u8", ".tmp")):
            os.unlink(os.path.join(track_dir, n))


def _swap_in(stage: str, out_dir: str) -> None:
    """Make *stage* the item directory *out_dir* (replacing an older one)."""
    old = None
    if os.path.lexists(out_dir):
        old = f"{stage}.old"
        os.rename(out_dir, old)
    os.rename(stage, out_dir)
    fsync_dir(os.path.dirname(out_dir))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def probe_frame_rate(path: str) -> float:
    """Frame rate of the first video track of an MP4 (blocking I/O): samples / duration
    from the ``stts`` box, or 30.0 when the file does not say."""
    try:
        top = next(b for b in mp4.read_top_level(path) if b.type == "moov")
        with open(path, "rb") as fh:  # read the moov only: the mdat may be huge
            fh.seek(top.offset)
            data = fh.read(top.size)
        moov = mp4.Box("moov", 0, top.size, top.header_size)
        for trak in mp4.children(data, moov):
            if trak.type != "trak":
                continue
            hdlr = mp4.find_path(data, trak, "mdia", "hdlr")
            mdhd = mp4.find_path(data, trak, "mdia", "mdhd")
            stts = mp4.find_path(data, trak, "mdia", "minf", "stbl", "stts")
            if hdlr is None or mdhd is None or stts is None:
                continue
            if bytes(data[hdlr.payload_offset + 8:hdlr.payload_offset + 12]) != b"vide":
                continue
            version = data[mdhd.payload_offset]
            ts_pos = mdhd.payload_offset + (20 if version == 1 else 12)
            timescale = int.from_bytes(data[ts_pos:ts_pos + 4], "big")
            pos = stts.payload_offset + 4
            entries = int.from_bytes(data[pos:pos + 4], "big")
            samples = ticks = 0
            for i in range(entries):
                q = pos + 4 + 8 * i
                count = int.from_bytes(data[q:q + 4], "big")
                delta = int.from_bytes(data[q + 4:q + 8], "big")
                samples += count
                ticks += count * delta
            if samples and ticks and timescale:
                # The most common delta is the frame duration (the last frame may differ).
                rate = samples * timescale / ticks
                return float(round(rate)) if abs(rate - round(rate)) < 0.01 else rate
    except (StopIteration, mp4.MP4Error, IndexError, OSError):
        pass
    return 30.0
