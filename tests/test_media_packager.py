"""The packager on real (tiny) ffmpeg encodes: layout, index, loop rule, failures, rebuild."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer, task

from streamlab.ffmpeg import FFmpegExitError, FFmpegKilled, wrap_argv
from streamlab.media import mp4
from streamlab.media.index import index_to_json, load_item, parse_index
from streamlab.media.indexer import rebuild_index
from streamlab.media.packager import PackagingError, RungInput, ffmpeg_argv, fragment_target, package
from streamlab.testing.fakeprocess import FakeProcessReactor
from streamlab.testing.fixtures import RungSpec, encode_argv


def _files(item: str) -> set[str]:
    out = set()
    for root, _dirs, files in os.walk(item):
        for f in files:
            out.add(os.path.relpath(os.path.join(root, f), item))
    return out


# --------------------------------------------------------------------------- the shared test item


def test_item_layout_is_exactly_the_spec(test_item: str) -> None:
    expected = {"content.json"}
    for track in ("video/360p", "video/180p", "audio/audio"):
        expected.add(f"{track}/init.mp4")
        expected.update(f"{track}/seg_{n:05d}.m4s" for n in range(1, 5))
    assert _files(test_item) == expected
    assert not [d for d in os.listdir(os.path.dirname(test_item)) if d.startswith(".")]


def test_item_index_is_consistent_with_the_files(test_item: str) -> None:
    index = load_item(test_item)  # parses and checks every size against the disk
    assert (index.name, index.codec, index.segment_count, index.duration) == ("testclip", "h264", 4, 24.0)
    assert (index.segment_duration, index.part_duration, index.gop_duration) == (6.0, 0.2, 1.0)
    assert [t.id for t in index.tracks] == ["360p", "180p", "audio"]
    for track in index.tracks:
        init = mp4.read_init(os.path.join(test_item, track.init))
        assert track.timescale == init.track().timescale
        assert track.codecs == init.track().codecs
        for n, seg in enumerate(track.segments, start=1):
            path = os.path.join(test_item, track.segment_path(n))
            assert seg.size == os.path.getsize(path)
            frags = mp4.read_fragments(path, init)
            if track.type == "video":
                assert [(p.offset, p.size, p.independent) for p in seg.parts] == [
                    (f.offset, f.size, f.independent) for f in frags]
            else:
                # audio parts tile the file at fragment boundaries, 8-9 AAC frames each,
                # never past the part target and with no tiny tail part
                starts = {f.offset for f in frags}
                assert all(p.offset in starts for p in seg.parts)
                assert [p.offset + p.size for p in seg.parts[:-1]] == [p.offset for p in seg.parts[1:]]
                assert seg.parts[-1].offset + seg.parts[-1].size == seg.size
                frames = [round(p.duration * 48000 / 1024) for p in seg.parts]
                assert set(frames) <= {8, 9}, frames
            assert abs(seg.duration - sum(p.duration for p in seg.parts)) < 1e-4
        sizes = [s.size * 8 / s.duration for s in track.segments]
        assert track.bandwidth == pytest.approx(max(sizes), abs=1)
        assert track.average_bandwidth <= track.bandwidth
    v360, v180 = index.video[0], index.video[1]
    assert (v360.id, v360.width, v360.height, v360.frame_rate) == ("360p", 640, 360, 30.0)
    assert (v180.id, v180.width, v180.height) == ("180p", 320, 180)
    assert all(s.duration == 6.0 and len(s.parts) == 30 for s in v360.segments)
    assert 400_000 < v360.average_bandwidth < 900_000
    assert v180.average_bandwidth < v360.average_bandwidth
    audio = index.audio[0]
    assert (audio.codecs, audio.channels, audio.sample_rate) == ("mp4a.40.2", 2, 48000)
    assert all(abs(s.duration - 6.0) < 0.03 for s in audio.segments)
    assert 100_000 < audio.average_bandwidth < 180_000  # 128k AAC + one moof per AAC frame


def test_content_json_round_trips(test_item: str) -> None:
    with open(os.path.join(test_item, "content.json"), encoding="utf-8") as fh:
        doc = json.load(fh)
    assert doc["format"] == 1 and doc["created_at"].endswith("Z")
    assert index_to_json(parse_index(doc)) == doc


def test_rebuild_index_is_idempotent(test_item: str, tmp_path) -> None:
    item = str(tmp_path / "copy")
    shutil.copytree(test_item, item)
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        before = json.load(fh)
    first = rebuild_index(item)
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        after = json.load(fh)
    assert after == before
    assert rebuild_index(item) == first
    assert not [f for f in os.listdir(item) if f.endswith(".tmp")]


def test_rebuild_index_without_content_json_infers_the_item(test_item: str, tmp_path) -> None:
    item = str(tmp_path / "lost")
    shutil.copytree(test_item, item)
    original = load_item(item)
    os.unlink(os.path.join(item, "content.json"))
    rebuilt = rebuild_index(item)
    assert rebuilt.name == "lost"
    assert (rebuilt.segment_duration, rebuilt.part_duration, rebuilt.gop_duration, rebuilt.codec) == (
        6.0, 0.2, 1.0, "h264")
    assert rebuilt.tracks == original.tracks
    assert load_item(item) == rebuilt


def test_rebuild_index_notices_a_changed_segment(test_item: str, tmp_path) -> None:
    item = str(tmp_path / "changed")
    shutil.copytree(test_item, item)
    seg = os.path.join(item, "video", "180p", "seg_00002.m4s")
    with open(seg, "ab") as fh:  # a trailing box: the last part grows
        fh.write(b"\0\0\0\x0cfree1234")
    with pytest.raises(ValueError, match="180p.*seg_00002"):
        load_item(item)
    index = rebuild_index(item)
    assert index.track("180p").segments[1].size == os.path.getsize(seg)
    assert load_item(item) == index


# --------------------------------------------------------------------------- packaging runs


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, str]:
    """Two tiny rungs + audio, 7.5 s long (3 whole 2 s segments and a partial one)."""
    work = str(tmp_path_factory.mktemp("encoded"))
    rungs = [RungSpec("90p", 160, 90, 150), RungSpec("72p", 128, 72, 100)]
    argv = encode_argv(ffmpeg="ffmpeg", work_dir=work, duration=7.5, rungs=rungs, font=None)
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return {"90p": os.path.join(work, "video_90p.mp4"), "72p": os.path.join(work, "video_72p.mp4"),
            "audio": os.path.join(work, "audio.mp4")}


def _package(encoded: dict[str, str], out: str, **kw):
    from twisted.internet import reactor

    lines: list[str] = []
    params = dict(ffmpeg="ffmpeg", out_dir=out, name="tiny", source="tiny.mp4", codec="h264",
                  rungs=[RungInput("90p", encoded["90p"], "h264"), RungInput("72p", encoded["72p"], "h264")],
                  audio_path=encoded["audio"], segment_duration=2.0, part_duration=0.2, gop_duration=1.0,
                  log=lines.append)
    params.update(kw)
    return package(reactor, **params), lines


@pytest_twisted.inlineCallbacks
def test_package_trims_to_whole_segments_and_writes_ts(encoded, tmp_path) -> None:
    out = str(tmp_path / "dynamic_content" / "tiny")
    d, lines = _package(encoded, out, ts=True)
    index = yield d
    assert index.segment_count == 3 and index.duration == 6.0
    assert any("Opening" in line for line in lines)  # ffmpeg's stderr reached the log callback
    files = _files(out)
    for track in ("video/90p", "video/72p", "audio/audio"):
        assert f"{track}/seg_00003.m4s" in files
        assert f"{track}/seg_00004.m4s" not in files  # the partial 4th segment is gone
    assert {f for f in files if f.startswith("ts/")} == {
        f"ts/{r}/seg_{n:05d}.ts" for r in ("90p", "72p") for n in (1, 2, 3)}
    assert not [f for f in files if f.endswith((".mpd", ".m3u8", ".tmp"))]
    ts = index.ts_tracks
    assert [t.id for t in ts] == ["90p", "72p"]
    assert ts[0].codecs == "{},mp4a.40.2".format(index.track("90p").codecs)
    assert all(s.duration == 2.0 and s.parts == () for s in ts[0].segments)
    assert load_item(out) == index
    with open(os.path.join(out, "ts", "90p", "seg_00001.ts"), "rb") as fh:
        assert fh.read(1) == b"G"  # MPEG-TS sync byte
    # Packaging again replaces the item atomically (nothing of the old one is left over).
    index2 = yield _package(encoded, out)[0]
    assert not index2.ts_tracks and not os.path.exists(os.path.join(out, "ts"))
    assert os.listdir(os.path.dirname(out)) == ["tiny"]


@pytest_twisted.inlineCallbacks
def test_package_failure_reports_ffmpeg_and_leaves_nothing(encoded, tmp_path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not an mp4 file" * 100)
    out = str(tmp_path / "dc" / "broken")
    d, lines = _package(encoded, out, audio_path=str(bad))
    with pytest.raises(FFmpegExitError) as info:
        yield d
    assert str(info.value).startswith(f"ffmpeg failed (exit code {info.value.exit_code}): ")
    assert any("bad.mp4" in line for line in info.value.stderr_tail)
    assert lines  # the log saw ffmpeg's stderr too
    assert os.listdir(tmp_path / "dc") == []


@pytest_twisted.inlineCallbacks
def test_package_rejects_bad_options_before_running(encoded, tmp_path) -> None:
    out = str(tmp_path / "x")
    with pytest.raises(ValueError, match="whole number of GOPs"):
        yield _package(encoded, out, segment_duration=2.5)[0]
    with pytest.raises(ValueError, match="duplicate"):
        yield _package(encoded, out, rungs=[RungInput("a", encoded["90p"], "h264")] * 2)[0]
    with pytest.raises(PackagingError, match="no such file"):
        yield _package(encoded, out, audio_path=str(tmp_path / "missing.mp4"))[0]
    assert not os.path.exists(out)


def _fake_package(tmp_path, **kw):
    """package() on the fake process reactor (its thread pool runs at once): real input
    and staging files, a recorded ffmpeg child."""
    reactor = FakeProcessReactor()
    tmp_path.mkdir(exist_ok=True)
    for name in ("v.mp4", "a.mp4"):
        (tmp_path / name).write_bytes(b"x")
    lines: list[str] = []
    d = package(reactor, ffmpeg="ffmpeg", out_dir=str(tmp_path / "dc" / "item"), name="item", source="s.mp4",
                codec="h264", rungs=[RungInput("360p", str(tmp_path / "v.mp4"), "h264")],
                audio_path=str(tmp_path / "a.mp4"), frame_rate=30.0, log=lines.append, **kw)
    return reactor, d, lines


def _result(d: defer.Deferred) -> list:
    got: list = []
    d.addBoth(got.append)
    return got


def test_the_packager_ffmpeg_is_niced_dies_with_the_daemon_and_has_its_own_group(tmp_path) -> None:
    reactor, d, _ = _fake_package(tmp_path)
    got = _result(d)
    proc = reactor.running[0]
    assert proc.args[:len(wrap_argv([]))] == wrap_argv([])  # setpriv --pdeathsig KILL, setsid -w, nice -n 10
    assert "nice" in " ".join(proc.args[:len(wrap_argv([]))]) and proc.args[len(wrap_argv([]))] == "ffmpeg"
    assert "-f" in proc.args and "dash" in proc.args and got == []


def test_packager_ffmpeg_failures_read_like_the_encoders(tmp_path) -> None:
    reactor, d, lines = _fake_package(tmp_path / "exit")
    got = _result(d)
    proc = reactor.running[0]
    proc.err(b"a.mp4: Invalid data found when processing input\n")
    proc.exit(1)
    err = got[0].value
    assert type(err) is FFmpegExitError
    assert str(err) == "ffmpeg failed (exit code 1): a.mp4: Invalid data found when processing input"
    assert lines[-1] == "a.mp4: Invalid data found when processing input"
    assert os.listdir(tmp_path / "exit" / "dc") == []  # staging removed
    reactor, d, _ = _fake_package(tmp_path / "killed")
    got = _result(d)
    reactor.running[0].exit(sig=signal.SIGKILL)
    assert type(got[0].value) is FFmpegKilled
    assert str(got[0].value) == "ffmpeg failed (killed by signal 9 SIGKILL)"


def test_cancelling_terminates_the_packager_group_then_kills_it(tmp_path) -> None:
    reactor, d, _ = _fake_package(tmp_path, kill_grace=3.0)
    proc = reactor.running[0]
    got = _result(d)
    d.cancel()
    assert got[0].check(defer.CancelledError)  # the caller is answered at once
    assert reactor.group_signals == [(proc.pid, signal.SIGTERM)]
    reactor.advance(3)
    assert reactor.group_signals[-1] == (proc.pid, signal.SIGKILL)
    proc.exit(sig=signal.SIGKILL)
    assert os.listdir(tmp_path / "dc") == []  # staging removed behind it


def test_packager_timeout_is_the_typed_timeout(tmp_path) -> None:
    reactor, d, _ = _fake_package(tmp_path, timeout=120.0, kill_grace=3.0)
    got = _result(d)
    proc = reactor.running[0]
    reactor.advance(120)
    assert reactor.group_signals == [(proc.pid, signal.SIGTERM)]
    reactor.advance(3)
    assert reactor.group_signals[-1] == (proc.pid, signal.SIGKILL)
    proc.exit(sig=signal.SIGKILL)
    assert str(got[0].value) == "ffmpeg failed (timed out after 120 s)"


def test_ffmpeg_argv_and_fragment_targets() -> None:
    assert fragment_target(0.2, 1 / 30) == pytest.approx(5.5 / 30)
    assert fragment_target(0.2, 1024 / 48000) == pytest.approx(8.5 * 1024 / 48000)
    assert fragment_target(0.2, 1 / 25) == pytest.approx(4.5 / 25)
    argv = ffmpeg_argv(ffmpeg="ffmpeg", stage_dir="/s", rungs=[RungInput("720p", "/in/v.mp4", "hevc")],
                       audio_path="/in/a.mp4", segment_duration=6.0, part_duration=0.2, frame_rate=30.0,
                       ts=True)
    assert argv.count("-i") == 2 and argv.count("copy") == 3
    assert "/s/video/720p/packager.mpd" in argv and "/s/audio/audio/packager.mpd" in argv
    assert argv[argv.index("-tag:v") + 1] == "hvc1"
    assert "/s/ts/720p/seg_%05d.ts" in argv


def _decode(data: bytes, tmp_path, name: str) -> tuple[int, str]:
    path = tmp_path / name
    path.write_bytes(data)
    proc = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "0",
                           "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    return int(proc.stdout.strip().split(",")[0] or 0), proc.stderr


def test_an_independent_part_decodes_on_its_own(test_item: str, tmp_path) -> None:
    index = load_item(test_item)
    for track in (index.track("360p"), index.track("audio")):
        with open(os.path.join(test_item, track.init), "rb") as fh:
            init = fh.read()
        with open(os.path.join(test_item, track.segment_path(2)), "rb") as fh:
            seg = fh.read()
        part = track.segments[1].parts[5]
        assert part.independent
        frames, errors = _decode(init + seg[part.offset:part.offset + part.size], tmp_path, f"{track.id}.mp4")
        assert errors == ""
        assert frames == (6 if track.type == "video" else 9)


def test_every_track_decodes_end_to_end_without_errors(test_item: str, tmp_path) -> None:
    index = load_item(test_item)
    for track in index.tracks:
        data = b""
        for path in [track.init] + [track.segment_path(n) for n in range(1, index.segment_count + 1)]:
            with open(os.path.join(test_item, path), "rb") as fh:
                data += fh.read()
        frames, errors = _decode(data, tmp_path, f"{track.id}.mp4")
        assert errors == ""
        if track.type == "video":
            assert frames == 24 * 30


@pytest_twisted.inlineCallbacks
def test_cancelled_package_leaves_nothing_behind(encoded, tmp_path) -> None:
    from twisted.internet import reactor

    parent = tmp_path / "dc"
    out = str(parent / "cancelled")
    d, _ = _package(encoded, out)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        yield d
    deadline = reactor.seconds() + 20
    while os.path.isdir(parent) and os.listdir(parent):  # staging removed in the background
        assert reactor.seconds() < deadline, os.listdir(parent)
        yield task.deferLater(reactor, 0.05, lambda: None)
    assert not os.path.exists(out)


def test_probe_frame_rate_reads_the_moov(encoded) -> None:
    assert mp4.read_frame_rate(encoded["90p"]) == 30.0
    assert mp4.read_frame_rate(encoded["audio"]) == 30.0  # no video track: the default


# --------------------------------------------------------------------------- the loop seam (issue #11)
#
# Every track of a packaged item must start at decode AND presentation time 0 without an
# edit list and end exactly at the loop length T.  Checked with a box walker written here
# (independent of streamlab.media.mp4 / seam) and with ffprobe -show_packets.

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"mvex", b"moof", b"traf"}


def _walk(data: bytes, start: int = 0, end: int | None = None, path: str = ""):
    """(path, payload) of every box, depth first; path like ``moof/traf/trun``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        name = f"{path}/{kind.decode('latin-1')}" if path else kind.decode("latin-1")
        yield name, data[pos + header:pos + size]
        if kind in _CONTAINERS:
            yield from _walk(data, pos + header, pos + size, name)
        pos += size


def _timeline(item: str, track_dir: str) -> dict:
    """timescale, edit lists, first tfdt and composition offset, end of the last sample."""
    with open(os.path.join(item, track_dir, "init.mp4"), "rb") as fh:
        init = fh.read()
    boxes = list(_walk(init))
    mdhd = next(p for n, p in boxes if n.endswith("/mdhd"))
    timescale = int.from_bytes(mdhd[20:24] if mdhd[0] == 1 else mdhd[12:16], "big")
    trex = next(p for n, p in boxes if n.endswith("/trex"))
    trex_duration = int.from_bytes(trex[12:16], "big")
    segs = sorted(f for f in os.listdir(os.path.join(item, track_dir)) if f.endswith(".m4s"))
    samples: list[tuple[int, int, int]] = []  # (decode time, duration, composition offset)
    for seg in segs:
        with open(os.path.join(item, track_dir, seg), "rb") as fh:
            data = fh.read()
        default = trex_duration
        tfdt = 0
        for name, p in _walk(data):
            if name.endswith("/tfhd"):
                flags = int.from_bytes(p[1:4], "big")
                q = 8 + (8 if flags & 1 else 0) + (4 if flags & 2 else 0)
                default = int.from_bytes(p[q:q + 4], "big") if flags & 8 else trex_duration
            elif name.endswith("/tfdt"):
                tfdt = int.from_bytes(p[4:12] if p[0] == 1 else p[4:8], "big")
            elif name.endswith("/trun"):
                version, flags = p[0], int.from_bytes(p[1:4], "big")
                count = int.from_bytes(p[4:8], "big")
                q = 8 + (4 if flags & 1 else 0) + (4 if flags & 4 else 0)
                t = tfdt
                for _ in range(count):
                    dur, cts = default, 0
                    if flags & 0x100:
                        dur = int.from_bytes(p[q:q + 4], "big")
                        q += 4
                    q += (4 if flags & 0x200 else 0) + (4 if flags & 0x400 else 0)
                    if flags & 0x800:
                        cts = int.from_bytes(p[q:q + 4], "big", signed=version == 1)
                        q += 4
                    samples.append((t, dur, cts))
                    t += dur
    return {"timescale": timescale, "elst": any(n.endswith("/elst") for n, _ in boxes),
            "first": samples[0], "end": samples[-1][0] + samples[-1][1], "last": samples[-1],
            "min_pts": min(t + c for t, _, c in samples), "count": len(samples)}


def _ffprobe_first(path_init: str, segs: list[str], tmp: str) -> tuple[int, int]:
    """(pts, dts) of the first packet ffprobe reads from init + segments."""
    joined = os.path.join(tmp, "joined.mp4")
    with open(joined, "wb") as out:
        for p in [path_init, *segs]:
            with open(p, "rb") as fh:
                out.write(fh.read())
    res = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "0", "-show_entries",
                          "packet=pts,dts", "-read_intervals", "%+#1", "-of", "json", joined],
                         check=True, capture_output=True, text=True, timeout=30)
    first = json.loads(res.stdout)["packets"][0]
    return int(first["pts"]), int(first["dts"])


def _assert_seam(item: str, loop: float, tmp: str) -> dict[str, dict]:
    doc = json.load(open(os.path.join(item, "content.json"), encoding="utf-8"))
    assert doc["duration"] == loop
    seen = {}
    for t in doc["tracks"]:
        if t.get("container", "fmp4") != "fmp4":
            assert t["duration"] == loop and t["duration_ticks"] == round(loop * 90000)
            continue
        track_dir = os.path.dirname(t["init"])
        tl = _timeline(item, track_dir)
        assert not tl["elst"], f"{track_dir}: init.mp4 still has an edit list"
        assert tl["first"][0] == 0 and tl["first"][2] == 0 and tl["min_pts"] == 0, (track_dir, tl)
        assert tl["end"] == round(loop * tl["timescale"]), (track_dir, tl["end"], loop * tl["timescale"])
        assert (t["duration_ticks"], t["duration"], t["timescale"]) == (tl["end"], loop, tl["timescale"])
        segs = [os.path.join(item, track_dir, f"seg_{n:05d}.m4s") for n in range(1, doc["segment_count"] + 1)]
        assert _ffprobe_first(os.path.join(item, t["init"]), segs, tmp) == (0, 0), track_dir
        seen[t["id"]] = tl
    return seen


def test_every_track_starts_at_zero_and_ends_at_t_for_a_whole_aac_frame_loop(test_item, tmp_path):
    # 24 s = 1125 AAC frames: the audio's last frame is whole and ends with the video
    tracks = _assert_seam(test_item, 24.0, str(tmp_path))
    assert tracks["audio"]["last"][1] == 1024 and tracks["audio"]["count"] == 1125
    assert tracks["360p"]["count"] == tracks["180p"]["count"] == 24 * 30


@pytest.fixture(scope="module")
def item_12s(tmp_path_factory) -> str:
    """A 12 s item (562.5 AAC frames), one tiny rung, with TS renditions."""
    from streamlab.testing.fixtures import build_test_item

    return build_test_item(str(tmp_path_factory.mktemp("item12")), name="c12", ts=True,
                           extra_args=["--duration", "12", "--rungs", "90p:160x90:100"])


def test_a_loop_that_is_not_whole_aac_frames_cuts_the_last_frame_at_t(item_12s, tmp_path):
    tracks = _assert_seam(item_12s, 12.0, str(tmp_path))
    audio = tracks["audio"]
    assert audio["count"] == 563 and audio["last"] == (562 * 1024, 512, 0)  # half a frame kept


def test_ts_audio_starts_with_the_video_and_ends_within_one_frame_of_t(item_12s):
    def packets(path):
        res = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time,"
                              "duration_time", "-of", "json", path], check=True, capture_output=True,
                             text=True, timeout=30)
        return json.loads(res.stdout)["packets"]

    streams = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=index,codec_type", "-of", "json",
         os.path.join(item_12s, "ts/90p/seg_00001.ts")], check=True, capture_output=True, text=True,
        timeout=30).stdout)["streams"]
    kind = {s["index"]: s["codec_type"] for s in streams}
    first = packets(os.path.join(item_12s, "ts/90p/seg_00001.ts"))
    last = packets(os.path.join(item_12s, "ts/90p/seg_00002.ts"))
    start = {k: min(float(p["pts_time"]) for p in first if kind[p["stream_index"]] == k)
             for k in ("audio", "video")}
    end = {k: max(float(p["pts_time"]) + float(p["duration_time"]) for p in last
                  if kind[p["stream_index"]] == k) for k in ("audio", "video")}
    assert abs(start["audio"] - start["video"]) < 1e-6
    assert abs(end["video"] - start["video"] - 12.0) < 1e-6
    assert 0 <= end["audio"] - start["video"] - 12.0 < 1024 / 48000  # TS cannot cut a frame


@pytest_twisted.inlineCallbacks
def test_the_job_encode_path_gives_the_same_seam(tmp_path):
    """The ladder's own ffmpeg commands (B-frame free video, delayed + faded audio) on a
    7 s clip with 2 s segments: a 6 s loop (281.25 AAC frames), cut exactly at T."""
    from streamlab.jobs.ladder import SourceFacts, plan_encode, plan_loop
    from streamlab.jobs.options import parse_encode_options

    src = str(tmp_path / "src.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=7",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=7", "-c:v", "libx264",
                    "-preset", "ultrafast", "-c:a", "aac", "-shortest", src],
                   check=True, capture_output=True, timeout=60)
    facts = SourceFacts(path=src, width=320, height=180, fps=30.0, duration=7.0, has_audio=True)
    raw = {"codec_selection": "h264", "segment_duration": "2", "max_resolution": "360p"}
    opts = parse_encode_options(raw, source_name="src.mp4", source_height=180, encoders={"libx264"})
    loop = plan_loop(facts, opts)
    assert (loop.duration, loop.exact, loop.audio_frames) == (6.0, False, 281.25)
    work = str(tmp_path / "work")
    os.makedirs(work)
    steps = plan_encode(ffmpeg="ffmpeg", source=facts, options=opts, codecs=("h264",), encoders={"libx264"},
                        work_dir=work, font=None)
    for step in steps:
        argv = [a for a in step.argv if a not in ("-progress", "pipe:1")]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)
    from twisted.internet import reactor

    out = str(tmp_path / "dynamic_content" / "job")
    yield package(reactor, ffmpeg="ffmpeg", out_dir=out, name="job", source="src.mp4", codec="h264",
                  rungs=[RungInput(s.rung, s.output, "h264") for s in steps if s.kind == "video"],
                  audio_path=steps[0].output, segment_duration=2.0, part_duration=0.2, gop_duration=1.0,
                  frame_rate=30.0, extra={"loop": loop.to_json()})
    tracks = _assert_seam(out, 6.0, str(tmp_path))
    assert tracks["audio"]["last"] == (281 * 1024, 256, 0)
    assert json.load(open(os.path.join(out, "content.json"), encoding="utf-8"))["loop"]["exact"] is False


# --------------------------------------------------------------------------- seam.end_track_at (pure)


def _fragment(decode_time: int, durations: list[int], *, per_sample: bool) -> bytes:
    def box(kind: bytes, payload: bytes) -> bytes:
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    if per_sample:
        tfhd = box(b"tfhd", b"\x00\x02\x00\x00" + (1).to_bytes(4, "big"))
        trun = box(b"trun", b"\x00\x00\x01\x01" + len(durations).to_bytes(4, "big") + (0).to_bytes(4, "big")
                   + b"".join(d.to_bytes(4, "big") for d in durations))
    else:
        assert len(durations) == 1
        tfhd = box(b"tfhd", b"\x00\x02\x00\x08" + (1).to_bytes(4, "big") + durations[0].to_bytes(4, "big"))
        trun = box(b"trun", b"\x00\x00\x00\x01" + (1).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    tfdt = box(b"tfdt", b"\x01\x00\x00\x00" + decode_time.to_bytes(8, "big"))
    moof = box(b"moof", box(b"mfhd", b"\x00" * 8) + box(b"traf", tfhd + tfdt + trun))
    return box(b"styp", b"msdh\x00\x00\x00\x00") + moof + box(b"mdat", b"\x21" * 7)


def test_end_track_at_cuts_drops_and_stretches_only_the_last_sample():
    from streamlab.media.seam import SeamError, end_track_at, fragment_timings

    frags = [_fragment(n * 1024, [1024], per_sample=False) for n in range(4)]
    data = b"".join(frags)
    # 3.5 frames: the 4th frame keeps 512 ticks, nothing else changes
    cut = end_track_at(data, 3 * 1024 + 512)
    assert len(cut) == len(data) and [f.durations for f in fragment_timings(cut)] == [(1024,)] * 3 + [(512,)]
    # 2.25 frames: the 4th fragment is dropped, the 3rd keeps 256 ticks
    cut = end_track_at(data, 2 * 1024 + 256)
    assert len(cut) == 3 * len(frags[0]) and fragment_timings(cut)[-1].end == 2 * 1024 + 256
    assert end_track_at(data, 4 * 1024) == data
    stretched = fragment_timings(end_track_at(data, 4 * 1024 + 100))
    assert stretched[-1].durations == (1124,)
    with pytest.raises(SeamError):
        end_track_at(data, 6 * 1024)  # a whole frame and more missing: not papered over
    # per-sample durations in the trun: only the last entry changes
    multi = _fragment(0, [1024, 1024, 1024], per_sample=True)
    assert fragment_timings(end_track_at(multi, 2 * 1024 + 10))[0].durations == (1024, 1024, 10)
    with pytest.raises(SeamError):
        end_track_at(multi, 1024)  # two samples past the end inside one fragment
