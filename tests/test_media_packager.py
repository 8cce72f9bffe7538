"""The packager on real (tiny) ffmpeg encodes: layout, index, loop rule, failures, rebuild."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer, task

from streamlab.media import mp4
from streamlab.media.index import index_to_json, load_item, parse_index
from streamlab.media.packager import (
    FFmpegRun,
    PackagingError,
    RungInput,
    ffmpeg_argv,
    fragment_target,
    package,
    rebuild_index,
    run_ffmpeg,
)
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
    with pytest.raises(PackagingError) as info:
        yield d
    assert "ffmpeg exited with status" in str(info.value)
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


@pytest_twisted.inlineCallbacks
def test_cancelling_kills_the_ffmpeg_process_group() -> None:
    from twisted.internet import reactor

    argv = ["ffmpeg", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=60",
            "-f", "null", "-"]
    d = run_ffmpeg(reactor, argv, kill_grace=2.0)
    waited = defer.Deferred()
    reactor.callLater(0.3, waited.callback, None)
    yield waited
    assert not d.called
    d.cancel()
    with pytest.raises(defer.CancelledError):
        yield d
    run = FFmpegRun(reactor, argv, kill_grace=2.0)
    pid = run.pid
    deadline = reactor.seconds() + 10
    while os.getpgid(pid) != pid:  # its own process group, once setsid has run
        assert reactor.seconds() < deadline
        yield task.deferLater(reactor, 0.02, lambda: None)
    run.kill()
    code = yield run.ended
    assert code != 0
    with pytest.raises(PackagingError, match="status"):
        yield run.result
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


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
    from streamlab.media.packager import probe_frame_rate

    assert probe_frame_rate(encoded["90p"]) == 30.0
    assert probe_frame_rate(encoded["audio"]) == 30.0  # no video track: the default
