"""Synthetic content indexes for the live renderer tests (no files on disk needed)."""

from __future__ import annotations

from streamlab.media.index import ContentIndex, Part, Segment, Track

EPOCH = 1577836800.0  # 2020-01-01T00:00:00Z


def _video_segments(count: int, nparts: int, part_dur: float, gop_parts: int,
                    base: int) -> tuple[Segment, ...]:
    segs = []
    for f in range(count):
        offset = 24 + f  # a small styp box before the first moof
        parts = []
        for p in range(nparts):
            size = base + 97 * ((f * nparts + p) % 13)
            parts.append(Part(offset, size, part_dur, p % gop_parts == 0))
            offset += size
        segs.append(Segment(round(nparts * part_dur, 6), offset, tuple(parts)))
    return tuple(segs)


def _audio_segments(count: int, seg_dur: float, base: int) -> tuple[Segment, ...]:
    """AAC-like parts: 9 or 10 frames of 1024/48000 s, so durations are irregular."""
    frame = 1024 / 48000
    segs = []
    for f in range(count):
        offset = 24
        parts = []
        t = 0.0
        p = 0
        while t < seg_dur - frame / 2:
            frames = 10 if p % 3 != 2 else 9
            d = frames * frame
            size = base + 13 * (p % 7)
            parts.append(Part(offset, size, d, True))
            offset += size
            t += d
            p += 1
        if f % 2:  # odd files run one AAC frame long (6.016 s), like a real 48 kHz encode
            parts.append(Part(offset, 40, frame, True))
            offset += 40
            t += frame
        segs.append(Segment(round(t, 6), offset, tuple(parts)))
    return tuple(segs)


def make_index(count: int = 4, seg_dur: float = 6.0, part_dur: float = 0.2, gop: float = 1.0,
               with_ts: bool = False) -> ContentIndex:
    """4 files of 6 s, 30 parts of 0.2 s; rungs 720p and 360p plus an audio track."""
    nparts = round(seg_dur / part_dur)
    gop_parts = round(gop / part_dur)
    tracks = [
        Track(id="720p", type="video", codecs="avc1.64001f", bandwidth=2976000, average_bandwidth=2400000,
              timescale=15360, init="video/720p/init.mp4", segment_template="video/720p/seg_{number:05d}.m4s",
              segments=_video_segments(count, nparts, part_dur, gop_parts, 9000), width=1280, height=720,
              frame_rate=30.0),
        Track(id="360p", type="video", codecs="avc1.64001e", bandwidth=744000, average_bandwidth=600000,
              timescale=15360, init="video/360p/init.mp4", segment_template="video/360p/seg_{number:05d}.m4s",
              segments=_video_segments(count, nparts, part_dur, gop_parts, 2500), width=640, height=360,
              frame_rate=30.0),
        Track(id="audio", type="audio", codecs="mp4a.40.2", bandwidth=132000, average_bandwidth=128000,
              timescale=48000, init="audio/audio/init.mp4",
              segment_template="audio/audio/seg_{number:05d}.m4s",
              segments=_audio_segments(count, seg_dur, 500), channels=2, sample_rate=48000),
    ]
    if with_ts:
        for rung, bw in (("720p", 2976000), ("360p", 744000)):
            segs = tuple(Segment(seg_dur, 100000 + f, ()) for f in range(count))
            tracks.append(Track(id=rung, type="video", codecs="avc1.64001f,mp4a.40.2", bandwidth=bw + 132000,
                                average_bandwidth=bw, timescale=90000, init="",
                                segment_template=f"ts/{rung}/seg_{{number:05d}}.ts", segments=segs,
                                container="ts", width=1280, height=720, frame_rate=30.0))
    return ContentIndex(name="synthetic", source="synthetic.mp4", codec="h264", segment_duration=seg_dur,
                        part_duration=part_dur, gop_duration=gop, segment_count=count,
                        duration=count * seg_dur, created_at="2026-11-26T03:00:00Z", tracks=tuple(tracks))
