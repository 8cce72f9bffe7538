"""The loop seam, in the media: make a track end exactly at the loop length T (pure core).

The packager writes every track without edit lists, its first sample at decode and
presentation time 0 (docs/media.md, "The loop seam").  Video is whole frames, so its
last segment ends at T by construction.  AAC audio is 1024-sample frames: unless T is a
whole number of frames (with 6 s segments: T a multiple of 24 s) the last frame crosses T.
:func:`end_track_at` then shortens that last sample's *duration* (tfhd default or trun
entry) so the track's timeline ends exactly at T, and drops any fragment that starts at
or after T.  The samples beyond T are the encoder's faded-out padding (the encode path
fades the audio out before T), so whatever a decoder does with them is silent.

Everything here works on the bytes of one media segment file; :func:`loop_plan` is the
arithmetic of choosing T.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

from streamlab.media import mp4

AAC_FRAME = 1024
AUDIO_RATE = 48000
#: priming samples of ffmpeg's AAC encoder (what its edit list calls media_time 1024)
AAC_ENCODER_DELAY = 1024
#: fade-in after the priming and fade-out before T at the loop seam (no click)
SEAM_FADE = 0.01

_TFHD_BASE_DATA_OFFSET = 0x01
_TFHD_SAMPLE_DESCRIPTION = 0x02
_TFHD_DEFAULT_DURATION = 0x08
_TRUN_DATA_OFFSET = 0x01
_TRUN_FIRST_FLAGS = 0x04
_TRUN_DURATION = 0x100
_TRUN_SIZE = 0x200
_TRUN_FLAGS = 0x400
_TRUN_CTS = 0x800


class SeamError(ValueError):
    """The segment cannot be cut at T (layout this module does not rewrite)."""


@dataclass(frozen=True)
class FragmentTiming:
    """Where one fragment (moof+mdat, plus the boxes before it) sits in a segment file."""

    offset: int  # of the first box of the fragment (styp/moof)
    decode_time: int  # tfdt
    durations: tuple[int, ...]  # per sample, in timescale ticks
    duration_fields: tuple[int, ...]  # byte offset of each sample's duration field (or the tfhd default)

    @property
    def end(self) -> int:
        """Decode time just after the last sample."""
        return self.decode_time + sum(self.durations)


def fragment_timings(data: bytes, trex_duration: int = 0) -> list[FragmentTiming]:
    """Every fragment of a one-track media segment, with where its durations are stored."""
    out: list[FragmentTiming] = []
    start = 0
    for box in mp4.iter_boxes(data):
        if box.type != "moof":
            if box.type in ("mdat",):
                start = box.end
            continue
        traf = mp4.find(data, box, "traf")
        if traf is None:
            raise SeamError("moof without traf")
        tfhd = mp4.find(data, traf, "tfhd")
        tfdt = mp4.find(data, traf, "tfdt")
        trun = mp4.find(data, traf, "trun")
        if tfhd is None or tfdt is None or trun is None:
            raise SeamError("traf without tfhd/tfdt/trun")
        p = tfhd.payload_offset
        tf_flags = int.from_bytes(data[p + 1:p + 4], "big")
        q = p + 8
        if tf_flags & _TFHD_BASE_DATA_OFFSET:
            q += 8
        if tf_flags & _TFHD_SAMPLE_DESCRIPTION:
            q += 4
        default_field = q if tf_flags & _TFHD_DEFAULT_DURATION else -1
        default = struct.unpack_from(">I", data, q)[0] if default_field >= 0 else trex_duration
        p = tfdt.payload_offset
        decode_time = struct.unpack_from(">Q" if data[p] == 1 else ">I", data, p + 4)[0]
        p = trun.payload_offset
        tr_flags = int.from_bytes(data[p + 1:p + 4], "big")
        count = struct.unpack_from(">I", data, p + 4)[0]
        q = p + 8 + (4 if tr_flags & _TRUN_DATA_OFFSET else 0) + (4 if tr_flags & _TRUN_FIRST_FLAGS else 0)
        durations: list[int] = []
        fields: list[int] = []
        for _ in range(count):
            if tr_flags & _TRUN_DURATION:
                durations.append(struct.unpack_from(">I", data, q)[0])
                fields.append(q)
            else:
                durations.append(default)
                fields.append(default_field)
            q += 4 * sum(1 for bit in (_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTS) if tr_flags & bit)
        out.append(FragmentTiming(start, decode_time, tuple(durations), tuple(fields)))
        start = box.end
    return out


def end_track_at(data: bytes, end_ticks: int, *, max_stretch: int = AAC_FRAME,
                 trex_duration: int = 0) -> bytes:
    """*data* (the track's last media segment) cut so the track ends at *end_ticks*.

    Fragments that start at or after *end_ticks* are dropped (they are the tail of the
    file); the last sample of the fragment that crosses it is shortened to end there, or,
    when the track ends early by at most *max_stretch* ticks, lengthened to reach it.
    Returns the new bytes (unchanged when the track already ends exactly there)."""
    timings = fragment_timings(data, trex_duration)
    if not timings:
        raise SeamError("no fragments")
    keep = [f for f in timings if f.decode_time < end_ticks]
    if not keep:
        raise SeamError(f"every fragment starts at or after {end_ticks}")
    cut = timings[len(keep)].offset if len(keep) < len(timings) else len(data)
    out = bytearray(data[:cut])
    last = keep[-1]
    overshoot = last.end - end_ticks
    if overshoot == 0:
        return bytes(out)
    if overshoot < 0 and -overshoot > max_stretch:
        raise SeamError(f"track ends {-overshoot} ticks before the loop end (more than {max_stretch})")
    field = last.duration_fields[-1]
    new = last.durations[-1] - overshoot
    if new <= 0:
        # several samples cross the end (not one AAC frame per fragment): not handled
        raise SeamError(f"the last fragment runs {overshoot} ticks past the loop end")
    if field < 0:
        raise SeamError("the sample duration comes from the init segment (trex); cannot shorten it alone")
    shared = last.duration_fields.count(field) > 1
    if shared:
        raise SeamError("the last sample's duration is the fragment's default for several samples")
    struct.pack_into(">I", out, field, new)
    return bytes(out)


# --------------------------------------------------------------------------- choosing T


@dataclass(frozen=True)
class LoopPlan:
    """The loop length chosen for a source, and why."""

    source_duration: float
    duration: float  # T, seconds: a whole number of segments (and video frames)
    exact: bool  # T is also a whole number of AAC frames
    unit: float  # the shortest exact loop for these settings (lcm of segment, AAC frame, video frame)
    shortened_by: float  # seconds of the source not used
    padded_by: float  # seconds added (source shorter than one segment)
    audio_frames: float  # T in AAC frames (fractional when not exact)

    def to_json(self) -> dict[str, object]:
        """Plain data (job log, content.json ``loop``)."""
        return {"source_duration": round(self.source_duration, 6), "duration": self.duration,
                "exact": self.exact, "exact_unit": self.unit, "shortened_by": round(self.shortened_by, 6),
                "padded_by": round(self.padded_by, 6), "audio_frames": self.audio_frames}

    def describe(self) -> str:
        """One line for the job log."""
        how = ("a whole number of AAC frames: audio and video end together"
               if self.exact else f"{self.audio_frames:g} AAC frames: the last audio frame is cut at T")
        change = ""
        if self.shortened_by > 1e-6:
            change = f", {self.shortened_by:g} s of the source not used"
        elif self.padded_by > 1e-6:
            change = f", padded by {self.padded_by:g} s"
        return f"loop {self.duration:g} s from a {self.source_duration:g} s source{change}; {how}"


def _frac(value: float) -> Fraction:
    return Fraction(value).limit_denominator(1000)


def exact_unit(segment_duration: float, fps: int, sample_rate: int = AUDIO_RATE) -> Fraction:
    """The shortest loop that is whole segments, whole video frames and whole AAC frames."""
    parts = [_frac(segment_duration), Fraction(1, fps), Fraction(AAC_FRAME, sample_rate)]
    num = math.lcm(*(p.numerator for p in parts))
    den = math.gcd(*(p.denominator for p in parts))
    return Fraction(num, den)


def loop_plan(source_duration: float, segment_duration: float, fps: int, *, prefer_exact: bool = True,
              sample_rate: int = AUDIO_RATE) -> LoopPlan:
    """T for a source: whole segments (at least one; a shorter source is padded).

    With *prefer_exact*, T is rounded further down to a whole number of AAC frames too
    (a multiple of :func:`exact_unit`, 24 s with 6 s segments at 30 fps) when that drops
    at most one more segment of the source; otherwise the audio is cut at T (not exact)."""
    seg = _frac(segment_duration)
    src = Fraction(source_duration).limit_denominator(10**6)
    count = max(1, math.floor(src / seg + Fraction(1, 1000)))
    t = count * seg
    unit = exact_unit(segment_duration, fps, sample_rate)
    if prefer_exact:
        exact_t = math.floor(src / unit + Fraction(1, 1000)) * unit
        if exact_t >= seg and t - exact_t <= seg:
            t = exact_t
    frames = t * sample_rate / AAC_FRAME
    return LoopPlan(source_duration=float(src), duration=float(t), exact=frames.denominator == 1,
                    unit=float(unit), shortened_by=float(max(Fraction(0), src - t)),
                    padded_by=float(max(Fraction(0), t - src)),
                    audio_frames=float(frames) if frames.denominator != 1 else int(frames))


def audio_filter(duration: float, *, sample_rate: int = AUDIO_RATE, delay: int = AAC_ENCODER_DELAY,
                 fade: float = SEAM_FADE, pad: bool = True) -> str:
    """The ``-af`` chain that makes an AAC encode decode to exactly the loop, sample-aligned.

    The AAC encoder puts *delay* priming samples before the input; the packager keeps the
    priming frame at time 0 without an edit list, so the input is advanced by *delay*
    samples (``atrim=start_sample``) and stops *delay* samples before T: decoded sample k is
    then source sample k for k >= delay, the first frame is the encoder's silent pre-roll,
    and the content fades in after it and out just before T."""
    total = round(duration * sample_rate)
    fed = total - delay
    fade_out_start = max(0.0, fed / sample_rate - fade)
    chain = [f"aresample={sample_rate}"]
    if pad:
        chain.append("apad")
    chain += [f"atrim=start_sample={delay}:end_sample={total}", "asetpts=N/SR/TB",
              f"afade=t=in:st=0:d={fade:g}", f"afade=t=out:st={fade_out_start:.6f}:d={fade:g}"]
    return ",".join(chain)
