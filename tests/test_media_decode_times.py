"""The continuous timeline's tfdt rewrite (#11 item 4): the decode-time index finds every
``tfdt`` value of a segment once, and :func:`decode_times.patch` overwrites exactly those
bytes.  The results are checked against independent parses: a box walker written for the
tests (tests/mp4_walk.py, not the package's), and ffprobe reading init + rewritten segment."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest

from streamlab.media import decode_times
from streamlab.media.index import load_item
from streamlab.media.mp4 import parse_fragments, read_init
from tests.mp4_walk import walk_tfdt


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def _fragment(seq: int, decode_time: int, version: int, samples: int = 3, dur: int = 512) -> bytes:
    tfdt = _full(b"tfdt", version, 0, struct.pack(">Q" if version else ">I", decode_time))
    tfhd = _full(b"tfhd", 0, 0x020000, struct.pack(">I", 1))  # default-base-is-moof
    trun = _full(b"trun", 0, 0x000101, struct.pack(">Ii", samples, 0) + struct.pack(">I", dur) * samples)
    traf = _box(b"traf", tfhd + tfdt + trun)
    moof = _box(b"moof", _full(b"mfhd", 0, 0, struct.pack(">I", seq)) + traf)
    return moof + _box(b"mdat", bytes(range(40)) * 5)


def _segment(version: int, start: int = 0) -> bytes:
    frags = [_fragment(i + 1, start + i * 1536, version) for i in range(4)]
    return _box(b"styp", b"msdh\0\0\0\0msdhmsix") + b"".join(frags)


@pytest.mark.parametrize("version", [0, 1])
def test_index_finds_every_tfdt_and_patch_raises_them(tmp_path, version):
    data = _segment(version, start=1000)
    path = tmp_path / "seg.m4s"
    path.write_bytes(data)
    times = decode_times.file_fields(str(path))
    assert times.values == tuple(walk_tfdt(data)) == (1000, 2536, 4072, 5608)
    assert times.sizes == ((8,) * 4 if version else (4,) * 4)
    delta = 7 * 6144
    patched = decode_times.patch(data, 0, times, delta)
    assert len(patched) == len(data)
    assert walk_tfdt(patched) == [v + delta for v in walk_tfdt(data)]
    # nothing but the tfdt values changed
    diff = [i for i in range(len(data)) if data[i] != patched[i]]
    spans = [range(o, o + s) for o, s in zip(times.offsets, times.sizes, strict=True)]
    assert diff and all(any(i in r for r in spans) for i in diff)


def test_patch_of_arbitrary_byte_ranges_equals_the_whole_patch(tmp_path):
    """Byte ranges and 128 KiB chunks cut tfdt fields anywhere: every cut gives the same
    bytes as patching the whole file."""
    data = _segment(1, start=123456789)
    path = tmp_path / "seg.m4s"
    path.write_bytes(data)
    times = decode_times.file_fields(str(path))
    delta = 1 << 40
    whole = decode_times.patch(data, 0, times, delta)
    for step in (1, 3, 7, 64, 333):
        pieces = [decode_times.patch(data[i:i + step], i, times, delta) for i in range(0, len(data), step)]
        assert b"".join(pieces) == whole, step
    assert decode_times.patch(data, 0, times, 0) is data


def test_v0_overflow_is_refused_not_wrapped(tmp_path):
    data = _segment(0, start=(1 << 32) - 10_000)
    path = tmp_path / "seg.m4s"
    path.write_bytes(data)
    times = decode_times.file_fields(str(path))
    track = decode_times.TrackTimes(48000, 5000, (times,), max(times.values))
    assert track.fits(0) and track.fits(1) and not track.fits(2)
    with pytest.raises(OverflowError):
        decode_times.patch(data, 0, times, track.delta(2))


def test_real_item_rewrite_matches_the_fragments_and_ffprobe(test_item, tmp_path):
    """The packager's own output: every fragment's decode time rises by k x loop, read back
    by the package's fragment parser and by ffprobe (init + rewritten segment)."""
    index = load_item(test_item)
    times = decode_times.build(test_item, index)
    k = 3
    for track in index.video + index.audio:
        tt = times.track(track)
        assert tt is not None and tt.loop_ticks == round(index.loop_duration * tt.timescale)
        info = read_init(os.path.join(test_item, track.init))
        for number in (1, len(track.segments)):
            with open(os.path.join(test_item, track.segment_path(number)), "rb") as fh:
                data = fh.read()
            fields = tt.files[number - 1]
            patched = decode_times.patch(data, 0, fields, tt.delta(k))
            before = [f.decode_time for f in parse_fragments(data, info)]
            after = [f.decode_time for f in parse_fragments(patched, info)]
            assert after == [b + k * tt.loop_ticks for b in before]
            assert walk_tfdt(patched) == after
    # the loop is continuous: last fragment end of loop k == first decode time of loop k+1
    for track in index.video + index.audio:
        tt = times.track(track)
        info = read_init(os.path.join(test_item, track.init))
        with open(os.path.join(test_item, track.segment_path(len(track.segments))), "rb") as fh:
            last = parse_fragments(fh.read(), info)[-1]
        assert last.decode_time + last.ticks == tt.loop_ticks + tt.files[0].values[0]
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed")
    v = index.video[0]
    tt = times.track(v)
    with open(os.path.join(test_item, v.init), "rb") as fh:
        init = fh.read()
    with open(os.path.join(test_item, v.segment_path(2)), "rb") as fh:
        seg = fh.read()
    out = tmp_path / "probe.mp4"
    out.write_bytes(init + decode_times.patch(seg, 0, tt.files[1], tt.delta(k)))
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(init + seg)
    dts, dts0 = _ffprobe_dts(out), _ffprobe_dts(plain)
    # ffprobe applies the edit list (composition delay) to dts: compare with the same file
    # unrewritten, every packet moved by exactly k loops
    assert len(dts) == len(dts0) > 0
    assert [d - d0 for d, d0 in zip(dts, dts0, strict=True)] == [k * tt.loop_ticks] * len(dts)


def _ffprobe_dts(path) -> list[int]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=dts",
                            "-of", "json", str(path)], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    return [int(p["dts"]) for p in json.loads(probe.stdout)["packets"]]
