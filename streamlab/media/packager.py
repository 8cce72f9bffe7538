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

ffmpeg runs as a :class:`streamlab.ffmpeg.FFmpegChild`, the runner the encoder uses too:
low priority, its own process group, dying with the daemon; a failure is the same typed
:class:`streamlab.ffmpeg.FFmpegError` (non-zero exit, killed, timed out) with the last
stderr lines.

Everything is written into a hidden staging directory next to ``out_dir``; after ffmpeg
exits 0 the segments are indexed (:mod:`streamlab.media.indexer`) in a thread, surplus
segments beyond the common whole-segment count are removed (the loop rule), ``content.json``
is written last and atomically, and the staging directory replaces ``out_dir``.  On any
failure or cancellation the staging directory is removed and ``out_dir`` is untouched.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from streamlab.ffmpeg import FFmpegChild
from streamlab.formats import number_text
from streamlab.fsutil import fsync_dir
from streamlab.media import mp4
from streamlab.media.index import ContentIndex, UnusableItem
from streamlab.media.indexer import ID_RE, ItemMeta, index_item, utc_iso, write_index

#: fMP4 flags: no sidx; trun v1 with negative composition offsets, so a B-frame input
#: still has its first sample at decode AND presentation time 0 without an edit list
MOVFLAGS = "+skip_sidx+negative_cts_offsets"


class PackagingError(RuntimeError):
    """Packaging failed before or after ffmpeg: a missing input, an unusable result, or
    cancelled.  (ffmpeg's own failures are :class:`streamlab.ffmpeg.FFmpegError`.)"""


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
        if not ID_RE.match(r.id):
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
            extra: dict[str, Any] | None = None, kill_grace: float = 5.0,
            timeout: float | None = None) -> Deferred[ContentIndex]:
    """Package encoded rungs + audio into the item directory *out_dir*.

    *rungs* are MP4s with closed GOPs of *gop_duration* (any order; the index lists them
    as given), *audio_path* an MP4/M4A with AAC.  *frame_rate* defaults to what the first
    rung says (read in a thread).  *extra* keys are stored at the top of content.json.
    Fires the new :class:`ContentIndex`; errbacks with :class:`streamlab.ffmpeg.FFmpegError`
    (ffmpeg exited non-zero, was killed, or ran past *timeout* seconds), PackagingError
    (a missing input, or the result is unusable) or ValueError (bad options).  Cancelling
    terminates ffmpeg's process group (SIGKILL after *kill_grace*).  Any partial output is
    removed; an existing *out_dir* is replaced only on success."""
    try:
        validate(name=name, rungs=rungs, segment_duration=segment_duration, part_duration=part_duration,
                 gop_duration=gop_duration)
    except ValueError:
        return defer.fail()
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    stage = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{secrets.token_hex(4)}")
    meta = ItemMeta(name=name, source=source, codec=codec, segment_duration=segment_duration,
                    part_duration=part_duration, gop_duration=gop_duration,
                    created_at=utc_iso(reactor.seconds()), extra=extra)
    ids = [r.id for r in rungs]
    job = _Packaging()

    def in_thread(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    def spawn(rate: float) -> Deferred[None]:
        if job.cancelled:
            raise PackagingError("cancelled")
        argv = ffmpeg_argv(ffmpeg=ffmpeg, stage_dir=stage, rungs=rungs, audio_path=audio_path,
                           segment_duration=segment_duration, part_duration=part_duration,
                           frame_rate=rate, ts=ts)
        if log is not None:
            log("packager: " + " ".join(argv))
        job.child = FFmpegChild(reactor, argv, on_line=log, kill_grace=kill_grace, timeout=timeout)
        return job.child.start().when_exited()

    def finish(_: None) -> ContentIndex:
        index = _index_stage(stage, meta, ids, ts)
        if job.cancelled:
            raise PackagingError("cancelled")
        _swap_in(stage, out_dir)
        return index

    def cleanup(failure: Failure) -> Deferred[Any]:
        d = in_thread(shutil.rmtree, stage, True)
        d.addBoth(lambda _: failure)
        return d

    inner = in_thread(_prepare, stage, rungs, audio_path, ts, frame_rate)
    inner.addCallback(spawn)
    inner.addCallback(lambda _: in_thread(finish, None))
    inner.addErrback(cleanup)
    # The caller sees CancelledError at once; ffmpeg is stopped and the staging
    # directory removed in the background (the inner chain still runs cleanup).
    outer: Deferred[ContentIndex] = Deferred(lambda _: job.cancel())
    _forward(inner, outer)
    return outer


class _Packaging:
    """What a cancel must reach: the flag the threads check, and the running child."""

    def __init__(self) -> None:
        self.cancelled = False
        self.child: FFmpegChild | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.child is not None:
            self.child.terminate()


def _prepare(stage: str, rungs: Sequence[RungInput], audio_path: str, ts: bool,
             frame_rate: float | None) -> float:
    """Check the inputs, make the staging tree; the frame rate to package at (blocking)."""
    os.makedirs(os.path.dirname(stage), exist_ok=True)
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
    return frame_rate or mp4.read_frame_rate(rungs[0].path)


def _index_stage(stage: str, meta: ItemMeta, ids: Sequence[str], ts: bool) -> ContentIndex:
    """Index ffmpeg's output in *stage* (trimmed to whole segments), check the video
    segment lengths, write content.json (blocking)."""
    for rid in ids:
        _remove_byproducts(os.path.join(stage, "video", rid))
        if ts:
            _remove_byproducts(os.path.join(stage, "ts", rid))
    _remove_byproducts(os.path.join(stage, "audio", "audio"))
    try:
        index = index_item(stage, meta, ids, ["audio"], ids if ts else (), trim=True)
    except UnusableItem as exc:
        raise PackagingError(f"packaged output is unusable: {exc}") from None
    bad = [(t.id, n + 1, s.duration) for t in index.video for n, s in enumerate(t.segments)
           if abs(s.duration - meta.segment_duration) > 1e-3]
    if bad:
        raise PackagingError(f"video segments are not {meta.segment_duration:g} s long "
                             f"(GOPs not aligned?): {bad[:3]}")
    write_index(stage, index)
    return index


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
