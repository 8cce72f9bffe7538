"""The MP4 box reader on real ffmpeg output (the shared test item) and on hand-made boxes."""

from __future__ import annotations

import os
import struct

import pytest

from streamlab.media import mp4


def box(btype: str, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), btype.encode()) + payload


def full(btype: str, version: int, flags: int, payload: bytes = b"") -> bytes:
    return box(btype, struct.pack(">I", (version << 24) | flags) + payload)


# --------------------------------------------------------------------------- real files


def _track_dirs(item: str) -> list[str]:
    return [os.path.join(item, "video", "360p"), os.path.join(item, "video", "180p"),
            os.path.join(item, "audio", "audio")]


def test_init_segments_describe_the_tracks(test_item: str) -> None:
    v360 = mp4.read_init(os.path.join(test_item, "video", "360p", "init.mp4")).track()
    assert (v360.kind, v360.width, v360.height, v360.sample_entry) == ("video", 640, 360, "avc1")
    assert v360.codecs.startswith("avc1.") and len(v360.codecs) == len("avc1.42c01e")
    assert v360.timescale > 0
    v180 = mp4.read_init(os.path.join(test_item, "video", "180p", "init.mp4")).track()
    assert (v180.width, v180.height) == (320, 180)
    audio = mp4.read_init(os.path.join(test_item, "audio", "audio", "init.mp4")).track()
    assert (audio.kind, audio.codecs, audio.channels, audio.sample_rate, audio.timescale) == (
        "audio", "mp4a.40.2", 2, 48000, 48000)


def test_avc_codecs_string_matches_the_sps_bytes(test_item: str) -> None:
    with open(os.path.join(test_item, "video", "360p", "init.mp4"), "rb") as fh:
        data = fh.read()
    at = data.index(b"avcC") + 4  # configurationVersion, profile, compat, level
    expected = "avc1." + data[at + 1:at + 4].hex()
    assert mp4.read_init(os.path.join(test_item, "video", "360p", "init.mp4")).track().codecs == expected


@pytest.mark.parametrize("track", [0, 1, 2])
def test_fragments_tile_every_segment_file(test_item: str, track: int) -> None:
    tdir = _track_dirs(test_item)[track]
    init = mp4.read_init(os.path.join(tdir, "init.mp4"))
    frame = 1 / 30 if init.track().kind == "video" else 1024 / 48000
    for n in range(1, 5):
        path = os.path.join(tdir, f"seg_{n:05d}.m4s")
        frags = mp4.read_fragments(path, init)
        size = os.path.getsize(path)
        assert frags[0].offset == 0
        for a, b in zip(frags, frags[1:], strict=False):
            assert a.offset + a.size == b.offset
        assert sum(f.size for f in frags) == size
        assert abs(sum(f.duration for f in frags) - 6.0) <= frame + 1e-9
        assert frags[0].independent
        assert all(f.duration <= 0.2 + 1e-9 for f in frags)
        # Top-level boxes agree: the last fragment ends with an mdat at the end of the file.
        boxes = mp4.read_top_level(path)
        assert boxes[-1].type == "mdat" and boxes[-1].end == size
        assert sum(1 for b in boxes if b.type == "moof") == len(frags)


def test_video_parts_are_independent_exactly_at_gop_starts(test_item: str) -> None:
    tdir = _track_dirs(test_item)[0]
    init = mp4.read_init(os.path.join(tdir, "init.mp4"))
    frags = mp4.read_fragments(os.path.join(tdir, "seg_00002.m4s"), init)
    assert len(frags) == 30
    assert [i for i, f in enumerate(frags) if f.independent] == [0, 5, 10, 15, 20, 25]
    assert all(f.sample_count == 6 and f.ticks * 5 == init.track().timescale for f in frags)
    # tfdt continues across segments: segment 2 starts at 6 s.
    assert frags[0].decode_time == 6 * init.track().timescale


def test_audio_parts_are_whole_aac_frames_not_longer_than_the_part_target(test_item: str) -> None:
    tdir = _track_dirs(test_item)[2]
    init = mp4.read_init(os.path.join(tdir, "init.mp4"))
    frags = mp4.read_fragments(os.path.join(tdir, "seg_00003.m4s"), init)
    assert all(f.ticks % 1024 == 0 and f.independent for f in frags)
    # one fragment per AAC frame: the indexer groups them into even parts
    assert all(f.sample_count == 1 for f in frags)


def test_wrong_file_is_an_mp4_error(test_item: str, tmp_path) -> None:
    init = mp4.read_init(os.path.join(test_item, "video", "360p", "init.mp4"))
    with pytest.raises(mp4.MP4Error, match="no moov"):
        mp4.read_init(os.path.join(test_item, "video", "360p", "seg_00001.m4s"))
    with open(os.path.join(test_item, "video", "360p", "seg_00001.m4s"), "rb") as fh:
        data = fh.read()
    cut = tmp_path / "cut.m4s"
    cut.write_bytes(data[:-100])
    with pytest.raises(mp4.MP4Error, match="cut.m4s"):
        mp4.read_fragments(str(cut), init)
    with pytest.raises(mp4.MP4Error, match="runs past the end"):
        mp4.read_top_level(str(cut))


# --------------------------------------------------------------------------- hand-made boxes


def _init(track_id: int = 1, timescale: int = 1000, trex: tuple[int, int, int] | None = None,
          entry: bytes | None = None) -> bytes:
    if entry is None:
        entry = _visual_entry("avc1", box("avcC", bytes([1, 0x42, 0xC0, 0x1E, 0xFF])))
    tkhd = full("tkhd", 0, 7, struct.pack(">III", 0, 0, track_id) + b"\0" * 64
                + struct.pack(">II", 1280 << 16, 720 << 16))
    mdhd = full("mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full("hdlr", 0, 0, b"\0" * 4 + b"vide" + b"\0" * 12 + b"v\0")
    stsd = full("stsd", 0, 0, struct.pack(">I", 1) + entry)
    trak = box("trak", tkhd + box("mdia", mdhd + hdlr + box("minf", box("stbl", stsd))))
    mvex = b""
    if trex is not None:
        mvex = box("mvex", full("trex", 0, 0, struct.pack(">5I", track_id, 1, *trex)))
    return box("ftyp", b"iso6\0\0\0\0") + box("moov", trak + mvex)


def _visual_entry(fourcc: str, config: bytes) -> bytes:
    payload = b"\0" * 6 + struct.pack(">H", 1) + b"\0" * 16 + struct.pack(">HH", 1280, 720) + b"\0" * 50
    return box(fourcc, payload + config)


def _fragment(track_id: int, *, tfhd_flags: int = 0, tfhd_fields: bytes = b"", trun_flags: int = 0,
              trun_fields: bytes = b"", samples: bytes = b"", count: int = 1, tfdt: int = 0,
              mdat: bytes = b"x") -> bytes:
    traf = box("traf", full("tfhd", 0, tfhd_flags, struct.pack(">I", track_id) + tfhd_fields)
               + full("tfdt", 1, 0, struct.pack(">Q", tfdt))
               + full("trun", 0, trun_flags, struct.pack(">I", count) + trun_fields + samples))
    return box("moof", full("mfhd", 0, 0, struct.pack(">I", 1)) + traf) + box("mdat", mdat)


NON_SYNC = 0x01010000
SYNC = 0x02000000


def test_trex_defaults_apply_when_fragments_say_nothing() -> None:
    info = mp4.parse_init(_init(trex=(40, 0, NON_SYNC)))
    t = info.track()
    assert (t.timescale, t.language, t.width, t.height) == (1000, "und", 1280, 720)
    assert t.default_sample_duration == 40
    frags = mp4.parse_fragments(_fragment(1, count=5), info)
    assert frags[0].ticks == 200 and frags[0].duration == 0.2
    assert frags[0].independent is False


def test_tfhd_defaults_override_trex_and_first_sample_flags_override_both() -> None:
    info = mp4.parse_init(_init(trex=(40, 0, SYNC)))
    seg = (box("styp", b"msdh\0\0\0\0")
           + _fragment(1, tfhd_flags=0x8 | 0x20, tfhd_fields=struct.pack(">II", 50, NON_SYNC),
                       trun_flags=0x4, trun_fields=struct.pack(">I", SYNC), count=4)
           + _fragment(1, tfhd_flags=0x8 | 0x20, tfhd_fields=struct.pack(">II", 50, NON_SYNC), count=4)
           + _fragment(1, trun_flags=0x100 | 0x400, count=2,
                       samples=struct.pack(">IIII", 30, SYNC, 70, NON_SYNC))
           + box("free", b"12345"))
    frags = mp4.parse_fragments(seg, info)
    assert [f.ticks for f in frags] == [200, 200, 100]
    assert [f.independent for f in frags] == [True, False, True]
    assert frags[0].offset == 0  # styp is counted into the first part
    assert sum(f.size for f in frags) == len(seg)  # trailing 'free' joins the last one
    assert frags[-1].offset + frags[-1].size == len(seg)


def test_64bit_box_sizes_and_other_tracks_are_handled() -> None:
    info = mp4.parse_init(_init(track_id=2))
    big_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 3) + b"abc"
    frag = _fragment(2, trun_flags=0x100, count=1, samples=struct.pack(">I", 1000))
    frag = frag[:frag.index(b"mdat") - 4] + big_mdat
    frags = mp4.parse_fragments(frag, info)
    assert frags[0].duration == 1.0 and frags[0].size == len(frag)
    with pytest.raises(mp4.MP4Error, match="no traf for track 2"):
        mp4.parse_fragments(_fragment(3, count=1), info)


@pytest.mark.parametrize("data,message", [
    (box("mdat", b"x"), "without a moof"),
    (box("free"), "no moof\\+mdat"),
    (b"\0\0\0\x20moof", "bad size"),
    (b"\0\0\0", "truncated"),
])
def test_malformed_segments_raise(data: bytes, message: str) -> None:
    info = mp4.parse_init(_init())
    with pytest.raises(mp4.MP4Error, match=message):
        mp4.parse_fragments(data, info)


def test_hevc_codecs_string_from_hvcc() -> None:
    # Main profile, compat flags 0x60000000 (profiles 1 and 2), constraint byte 0x90, level 93.
    hvcc = box("hvcC", bytes([1, 0x01]) + struct.pack(">I", 0x60000000) + bytes([0x90, 0, 0, 0, 0, 0, 93])
               + b"\0" * 10)
    info = mp4.parse_init(_init(entry=_visual_entry("hvc1", hvcc)))
    assert info.track().codecs == "hvc1.1.6.L93.90"
    hvcc_high = box("hvcC", bytes([1, 0x22]) + struct.pack(">I", 0x20000000)
                    + bytes([0xB0, 0, 0, 0, 0, 0, 120]) + b"\0" * 10)
    assert mp4.parse_init(_init(entry=_visual_entry("hev1", hvcc_high))).track().codecs == "hev1.2.4.H120.B0"


def test_av1_and_avc_codecs_strings() -> None:
    av1c = box("av1C", bytes([0x81, (0 << 5) | 8, 0x0C, 0]))
    assert mp4.parse_init(_init(entry=_visual_entry("av01", av1c))).track().codecs == "av01.0.08M.08"
    avcc = box("avcC", bytes([1, 0x64, 0x00, 0x1F, 0xFF]))
    assert mp4.parse_init(_init(entry=_visual_entry("avc1", avcc))).track().codecs == "avc1.64001f"


def test_sample_flags() -> None:
    assert mp4.sample_is_sync(0)
    assert mp4.sample_is_sync(SYNC)
    assert not mp4.sample_is_sync(NON_SYNC)
    assert not mp4.sample_is_sync(0x00010000)
