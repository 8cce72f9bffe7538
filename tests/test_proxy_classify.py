"""Request kinds, variants and the scope table (streamlab.proxy.classify)."""

import pytest

from streamlab.proxy.classify import classify, is_audio, scope_matches, variant_of


@pytest.mark.parametrize("path,kind,variant", [
    ("/go-live/clip/master.m3u8", "master_manifest", None),
    ("/go-live/clip/master_6s.m3u8?x=1", "master_manifest", None),
    ("/go-live/clip/master_2s.m3u8", "master_manifest", None),
    ("/go-live/clip/manifest.mpd", "master_manifest", None),
    ("/go-live/clip/manifest_2s.mpd", "master_manifest", None),
    ("/go-live/clip/playlist_720p.m3u8", "manifest", "720p"),
    ("/go-live/clip/playlist_6s_720p.m3u8?_HLS_msn=4&_HLS_part=2", "manifest", "720p"),
    ("/go-live/clip/playlist_2s_audio.m3u8", "manifest", "audio"),
    ("/go-live/clip/video/720p/seg_00001.m4s", "segment", "720p"),
    ("/go-live/clip/video/720p/init.mp4", "segment", "720p"),
    ("/go-live/clip/audio/audio/seg_00003.m4s", "segment", "audio"),
    ("/go-live/clip/ts/360p/seg_00003.ts", "segment", "360p"),
    ("/go-live/clip/subs/en/seg_1.vtt", "segment", "en"),
    ("/go-live/clip/video/1080p/chunk.cmfv", "segment", "1080p"),
    ("/go-live/my%20clip/video/720p/seg_00001.m4s", "segment", "720p"),
    ("http://host:30181/go-live/clip/video/720p/seg_00001.m4s", "segment", "720p"),
    ("/go-live/time", "other", None),
    ("/go-live/healthz", "other", None),
    ("/go-live/api/status", "other", None),
    ("/go-live/clip/content.json", "other", None),
    ("/favicon.ico", "other", None),
    ("/api/sessions", "other", None),
    ("/go-live/clip/video/720p/master.m3u8", "other", None),
])
def test_classify_and_variant(path, kind, variant):
    assert classify(path) == kind
    assert variant_of(path) == variant


@pytest.mark.parametrize("path,audio", [
    ("/go-live/c/audio/audio/seg_00001.m4s", True),
    ("/go-live/c/audio/en/init.mp4", True),
    ("/go-live/c/playlist_6s_audio.m3u8", True),
    ("/go-live/c/x/y/seg.aac", True),
    ("/go-live/c/video/720p/seg_00001.m4s", False),
    ("/go-live/c/playlist_6s_720p.m3u8", False),
])
def test_is_audio(path, audio):
    assert is_audio(path) is audio


SEG720 = "/go-live/clip/video/720p/seg_00007.m4s"
SEG360 = "/go-live/clip/video/360p/seg_00007.m4s"
AUD = "/go-live/clip/audio/audio/seg_00007.m4s"
PL720 = "/go-live/clip/playlist_6s_720p.m3u8"
PL360 = "/go-live/clip/playlist_6s_360p.m3u8"
SPACED = "/go-live/my%20clip/video/720p/seg_00007.m4s"


@pytest.mark.parametrize("urls,path,kind,hit", [
    ([], SEG720, "segment", True),
    (["All"], SEG360, "segment", True),
    (["all"], AUD, "segment", True),
    (["720p"], SEG720, "segment", True),             # variant id (parent directory)
    (["720p"], SEG360, "segment", False),
    (["720p"], PL720, "manifest", True),             # variant of a media playlist
    (["seg_00007.m4s"], SEG360, "segment", True),    # file name
    (["seg_00008.m4s"], SEG360, "segment", False),
    (["video/360p/seg_0000"], SEG360, "segment", True),   # substring of the path
    (["my clip"], SPACED, "segment", True),               # substring of the decoded path
    (["audio"], AUD, "segment", True),
    (["audio"], SEG720, "segment", False),
    (["audio"], "/go-live/clip/playlist_6s_audio.m3u8", "manifest", True),
    (["playlist_6s_720p.m3u8"], SEG720, "segment", True),   # playlist entry -> its segments
    (["playlist_6s_720p.m3u8"], SEG360, "segment", False),
    (["playlist_6s_720p.m3u8"], PL720, "manifest", True),
    (["playlist_6s_720p.m3u8"], PL360, "manifest", False),
    (["playlist_720p.m3u8"], SEG720, "segment", True),
    (["http://h:30181/go-live/clip/playlist_6s_720p.m3u8"], PL720, "manifest", True),
    (["360p", "720p"], SEG720, "segment", True),
    (["1080p"], SEG720, "segment", False),
])
def test_scope_table(urls, path, kind, hit):
    assert scope_matches(urls, path, kind) is hit
