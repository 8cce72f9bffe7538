"""The ABR ladder and the ffmpeg command lines that encode it (pure).

:func:`plan_encode` turns (source facts, options, codecs, encoders) into an ordered list
of :class:`EncodeStep`: one AAC-LC audio encode, then one video encode per rung and
codec.  Each video step writes one MP4 with closed GOPs of exactly ``gop_duration``
(fixed keyint, keyframes forced on the GOP grid, scene-cut detection off), a bitrate of
the spec ladder with ``maxrate`` = 124 % and ``bufsize`` = 2 x target, a burned-in label
(rung, codec, bitrate) and a running timecode + frame counter.  The packager
(:mod:`streamlab.media.packager`) then fragments these into the on-disk layout.

The output length is the loop length T of :func:`loop_plan` (``seam.loop_plan``): whole
segments, and with ``loop_alignment = "exact"`` (default) also whole AAC frames when
that drops at most one more segment of the source (with 6 s segments at 30 fps: a
multiple of 24 s).  The source is trimmed, or padded (last frame held, silence) when it
is shorter than one segment.  Video has no B-frames, so the packager's fragments need no
composition-delay edit list; the audio is advanced by the AAC encoder delay and faded at
the seam (``seam.audio_filter``) so it decodes to exactly T, sample-aligned with the video
(docs/media.md, "The loop seam").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from streamlab.jobs.options import RESOLUTIONS, EncodeOptions, av1_encoder
from streamlab.media.seam import LoopPlan, audio_filter, loop_plan

#: rung -> (16:9 width, height)
RUNGS: dict[str, tuple[int, int]] = {
    "360p": (640, 360), "540p": (960, 540), "720p": (1280, 720),
    "1080p": (1920, 1080), "1440p": (2560, 1440), "2160p": (3840, 2160),
}

#: codec -> rung -> target video kbps (spec/content.md section 3)
LADDER_KBPS: dict[str, dict[str, int]] = {
    "h264": {"360p": 600, "540p": 1200, "720p": 2400, "1080p": 5000, "1440p": 11000, "2160p": 21700},
    "hevc": {"360p": 300, "540p": 900, "720p": 1500, "1080p": 4500, "1440p": 7500, "2160p": 15000},
    "av1": {"360p": 300, "540p": 900, "720p": 1500, "1080p": 4500, "1440p": 7500, "2160p": 15000},
}
MAXRATE_FACTOR = 1.24
BUFSIZE_FACTOR = 2.0
AUDIO_KBPS = 128
AUDIO_RATE = 48000
#: rough relative encode cost per pixel, used only to weight progress across steps
CODEC_COST = {"h264": 1.0, "hevc": 3.0, "av1": 4.0}
PAD_COLORS = {"black": "black", "pink": "0xFF69B4"}
DEFAULT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


@dataclass(frozen=True)
class SourceFacts:
    """What the ladder needs to know about a source (from ffprobe via SourceService)."""

    path: str
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool


@dataclass(frozen=True)
class EncodeStep:
    """One ffmpeg run of an encode."""

    kind: str  # "audio" | "video"
    codec: str  # "aac" or a video codec
    rung: str  # "" for audio
    stage: str  # e.g. "encode 720p h264 (3/6)"
    argv: tuple[str, ...]
    output: str
    duration: float  # seconds of media this step produces (progress denominator)
    weight: float  # share of the whole job's work (progress weighting)
    width: int = 0
    height: int = 0
    kbps: int = AUDIO_KBPS


def select_rungs(source_height: int | None, max_resolution: str) -> list[str]:
    """Rungs to encode, lowest first: none above the source height or *max_resolution*;
    at least the lowest rung (a tiny source is scaled up to 360p)."""
    cap = RESOLUTIONS[max_resolution]
    if source_height:
        cap = min(cap, source_height)
    rungs = [name for name, (_, h) in RUNGS.items() if h <= cap]
    return rungs or ["360p"]


def output_frame_rate(fps: float | None) -> int:
    """Integer output frame rate (so a GOP is a whole number of frames); 30 when unknown."""
    if not fps or not math.isfinite(fps) or fps <= 0:
        return 30
    return max(1, min(60, round(fps)))


def output_duration(source_duration: float, segment_duration: float) -> float:
    """``segment_count x segment_duration``: the source trimmed to whole segments (at
    least one; a source shorter than one segment is padded)."""
    count = max(1, math.floor(source_duration / segment_duration + 1e-3))
    return round(count * segment_duration, 6)


def plan_loop(source: SourceFacts, options: EncodeOptions) -> LoopPlan:
    """The loop length T of a job's outputs, and whether it is exact (see module doc)."""
    return loop_plan(source.duration, options.segment_duration, output_frame_rate(source.fps),
                     prefer_exact=options.loop_alignment == "exact", sample_rate=AUDIO_RATE)


def rung_size(rung: str, source_w: int, source_h: int, padding: str) -> tuple[int, int]:
    """Output frame size: 16:9 rung size when letterboxing, else source aspect at rung height."""
    width, height = RUNGS[rung]
    if padding != "none" or not source_w or not source_h:
        return width, height
    scaled = int(round(source_w * height / source_h / 2.0)) * 2
    return max(2, scaled), height


def _escape_text(text: str) -> str:
    # drawtext text inside single quotes in a filtergraph: escape \ ' : and %
    return text.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")


def video_filter(*, rung: str, codec: str, kbps: int, size: tuple[int, int], fps: int, padding: str,
                 pad_seconds: float, font: str | None) -> str:
    """The ``-filter_complex`` graph of one rung: pad-in-time, fps, scale (+letterbox), labels."""
    width, height = size
    chain: list[str] = []
    if pad_seconds > 0:
        chain.append(f"tpad=stop_mode=clone:stop_duration={pad_seconds:.3f}")
    chain.append(f"fps={fps}")
    if padding in PAD_COLORS:
        chain.append(f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2")
        chain.append(f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color={PAD_COLORS[padding]}")
    else:
        chain.append(f"scale={width}:{height}")
    chain.append("setsar=1")
    chain.append("format=yuv420p")
    if font:
        small = max(12, height // 18)
        big = max(16, height // 10)
        common = f"fontfile={font}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=6"
        label = _escape_text(f"{rung} {codec} {kbps}k")
        # top right: sources often carry their own title top left (the demo does)
        chain.append(f"drawtext={common}:fontsize={small}:x=w-tw-16:y=16:text='{label}'")
        counter = "%{pts\\:hms}  #%{frame_num}"
        chain.append(f"drawtext={common}:fontsize={big}:x=(w-tw)/2:y=h-th-24:text='{counter}'")
    return "[0:v:0]" + ",".join(chain) + "[v]"


def codec_args(codec: str, *, kbps: int, gop_frames: int, gop_seconds: float,
               encoders: set[str]) -> list[str]:
    """Encoder, rate control and GOP flags for one video codec."""
    maxrate = int(round(kbps * MAXRATE_FACTOR))
    bufsize = int(round(kbps * BUFSIZE_FACTOR))
    rate = ["-b:v", f"{kbps}k", "-maxrate", f"{maxrate}k", "-bufsize", f"{bufsize}k"]
    gop = ["-g", str(gop_frames), "-keyint_min", str(gop_frames), "-sc_threshold", "0",
           "-force_key_frames", f"expr:gte(t,n_forced*{gop_seconds:g})"]
    # No B-frames: the first frame is presented when it is decoded (no composition delay,
    # so no edit list), and every player agrees where each loop starts.
    if codec == "h264":
        return (["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"] + rate + gop
                + ["-bf", "0", "-flags", "+cgop", "-x264-params", "scenecut=0:open_gop=0"])
    if codec == "hevc":
        return (["-c:v", "libx265", "-preset", "veryfast", "-tag:v", "hvc1"] + rate + gop
                + ["-x265-params",
                   f"keyint={gop_frames}:min-keyint={gop_frames}:scenecut=0:open-gop=0:bframes=0"
                   ":log-level=warning"])
    if codec == "av1":
        encoder = av1_encoder(encoders)
        if encoder == "libsvtav1":
            # SVT-AV1 (ffmpeg 5.x) has no VBV maxrate option: target bitrate + fixed closed GOPs.
            return (["-c:v", "libsvtav1", "-preset", "10", "-b:v", f"{kbps}k", "-g", str(gop_frames),
                     "-force_key_frames", f"expr:gte(t,n_forced*{gop_seconds:g})",
                     "-svtav1-params", "scd=0:irefresh-type=2"])
        if encoder == "libaom-av1":
            return (["-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1", "-usage", "realtime"]
                    + rate + gop)
        raise ValueError("no AV1 encoder available")
    raise ValueError(f"unknown codec {codec!r}")


def video_argv(*, ffmpeg: str, source: SourceFacts, output: str, codec: str, rung: str,
               options: EncodeOptions, encoders: set[str], font: str | None) -> list[str]:
    """The full ffmpeg command line for one rung of one codec."""
    fps = output_frame_rate(source.fps)
    total = plan_loop(source, options).duration
    pad = max(0.0, total - source.duration)
    kbps = LADDER_KBPS[codec][rung]
    size = rung_size(rung, source.width, source.height, options.padding)
    gop_frames = max(1, int(round(fps * options.gop_duration)))
    graph = video_filter(rung=rung, codec=codec, kbps=kbps, size=size, fps=fps, padding=options.padding,
                         pad_seconds=pad + (1.0 if pad > 0 else 0.0), font=font)
    return ([ffmpeg, "-hide_banner", "-nostdin", "-y", "-i", source.path,
             "-filter_complex", graph, "-map", "[v]", "-an", "-sn", "-dn"]
            + codec_args(codec, kbps=kbps, gop_frames=gop_frames, gop_seconds=options.gop_duration,
                         encoders=encoders)
            + ["-pix_fmt", "yuv420p", "-t", f"{total:g}", "-map_metadata", "-1",
               "-progress", "pipe:1", "-nostats", "-f", "mp4", output])


def audio_argv(*, ffmpeg: str, source: SourceFacts, output: str, options: EncodeOptions) -> list[str]:
    """AAC-LC 128 kbps 48 kHz stereo that decodes to exactly the loop length T, sample-
    aligned with the video: advanced by the encoder delay, faded in after the priming
    frame and out before T (silence when the source has no audio)."""
    total = plan_loop(source, options).duration
    if source.has_audio:
        inputs = ["-i", source.path, "-map", "0:a:0"]
    else:
        inputs = ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo", "-map", "0:a:0"]
    return ([ffmpeg, "-hide_banner", "-nostdin", "-y"] + inputs
            + ["-af", audio_filter(total, sample_rate=AUDIO_RATE),
               "-vn", "-sn", "-dn", "-c:a", "aac", "-profile:a", "aac_low", "-b:a", f"{AUDIO_KBPS}k",
               "-ar", str(AUDIO_RATE), "-ac", "2", "-map_metadata", "-1",
               "-progress", "pipe:1", "-nostats", "-f", "mp4", output])


def plan_encode(*, ffmpeg: str, source: SourceFacts, options: EncodeOptions, codecs: tuple[str, ...],
                encoders: set[str], work_dir: str, font: str | None) -> list[EncodeStep]:
    """Every ffmpeg run of one job, in order (audio first, then codec by codec, low rung first)."""
    total = plan_loop(source, options).duration
    rungs = select_rungs(source.height, options.max_resolution)
    fps = output_frame_rate(source.fps)
    video_total = len(rungs) * len(codecs)
    steps: list[EncodeStep] = []
    audio_out = os.path.join(work_dir, "audio.mp4")
    # audio costs about as much as a 5 % share of a 360p h264 rung
    steps.append(EncodeStep(
        kind="audio", codec="aac", rung="", stage="encode audio",
        argv=tuple(audio_argv(ffmpeg=ffmpeg, source=source, output=audio_out, options=options)),
        output=audio_out, duration=total, weight=0.05 * 640 * 360 * fps * total))
    n = 0
    for codec in codecs:
        for rung in rungs:
            n += 1
            out = os.path.join(work_dir, f"{codec}_{rung}.mp4")
            width, height = rung_size(rung, source.width, source.height, options.padding)
            argv = video_argv(ffmpeg=ffmpeg, source=source, output=out, codec=codec, rung=rung,
                              options=options, encoders=encoders, font=font)
            steps.append(EncodeStep(
                kind="video", codec=codec, rung=rung, stage=f"encode {rung} {codec} ({n}/{video_total})",
                argv=tuple(argv), output=out, duration=total,
                weight=width * height * fps * total * CODEC_COST[codec],
                width=width, height=height, kbps=LADDER_KBPS[codec][rung]))
    return steps


def font_or_none(path: str = DEFAULT_FONT) -> str | None:
    """*path* when the font file exists (labels are skipped without it)."""
    return path if os.path.isfile(path) else None
