"""Master playlist / MPD rewriting on the origin's real output (streamlab.proxy.rewrite)."""

import xml.dom.minidom

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from streamlab.live import dash, hls
from streamlab.proxy import rewrite
from streamlab.proxy.fields import control_defaults
from tests.live_helpers import EPOCH, make_index

INDEX = make_index()
MASTER = hls.render_master(INDEX, "6s")
MPD_6S = dash.render_mpd(INDEX, "6s", EPOCH + 100, EPOCH, 36)
MPD_LL = dash.render_mpd(INDEX, "ll", EPOCH + 100, EPOCH, 36)

HAND_MASTER = (
    "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-START:TIME-OFFSET=-2\r\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=1000005,AVERAGE-BANDWIDTH=999,CODECS="avc1.4d401f,mp4a.40.2",'
    "RESOLUTION=960x540\r\n"
    "v/540.m3u8\r\n"
    '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100000,CODECS="avc1.4d401f",URI="v/540_iframes.m3u8"\r\n'
)


def controls(**kw):
    c = control_defaults()
    c.update(kw)
    return c


def variants(text):
    pl = m3u8.loads(text)
    return [(p.uri, p.stream_info.bandwidth, p.stream_info.average_bandwidth, p.stream_info.codecs)
            for p in pl.playlists]


def test_no_edits_returns_the_same_text():
    assert rewrite.rewrite_hls_master(MASTER, controls()) is MASTER
    assert rewrite.rewrite_mpd(MPD_6S, controls()) is MPD_6S
    assert not rewrite.rewrite_needed(controls())


def test_strip_codecs_and_average_bandwidth():
    out = rewrite.rewrite_hls_master(MASTER, controls(content_strip_codecs=True,
                                                      content_strip_average_bandwidth=True))
    assert "CODECS" not in out and "AVERAGE-BANDWIDTH" not in out
    assert variants(out) == [("playlist_6s_720p.m3u8", 3108000, None, None),
                             ("playlist_6s_360p.m3u8", 876000, None, None)]
    # Everything else passes through: audio rendition, resolution, frame rate.
    pl = m3u8.loads(out)
    assert pl.media[0].uri == "playlist_6s_audio.m3u8"
    assert pl.playlists[0].stream_info.resolution == (1280, 720)
    assert pl.playlists[0].stream_info.frame_rate == 30.0


def test_overstate_bandwidth_rounds_to_ints():
    out = rewrite.rewrite_hls_master(MASTER, controls(content_overstate_bandwidth=True))
    assert variants(out) == [
        ("playlist_6s_720p.m3u8", 3418800, 2780800, "avc1.64001f,mp4a.40.2"),
        ("playlist_6s_360p.m3u8", 963600, 800800, "avc1.64001e,mp4a.40.2"),
    ]
    out = rewrite.rewrite_hls_master(HAND_MASTER, controls(content_overstate_bandwidth=True))
    assert "BANDWIDTH=1100006," in out            # 1100005.5 rounds half up
    assert "AVERAGE-BANDWIDTH=1099," in out        # 1098.9
    assert 'BANDWIDTH=110000,CODECS="avc1.4d401f",URI=' in out   # I-frame rung too
    assert rewrite.overstate(10) == 11 and rewrite.overstate(5) == 6


def test_overstate_and_strip_average_compose():
    out = rewrite.rewrite_hls_master(MASTER, controls(content_overstate_bandwidth=True,
                                                      content_strip_average_bandwidth=True,
                                                      content_strip_codecs=True))
    assert variants(out) == [("playlist_6s_720p.m3u8", 3418800, None, None),
                             ("playlist_6s_360p.m3u8", 963600, None, None)]


@pytest.mark.parametrize("allow,kept", [
    (["720p"], ["playlist_6s_720p.m3u8"]),
    (["playlist_6s_360p.m3u8"], ["playlist_6s_360p.m3u8"]),
    (["http://h:30181/go-live/c/playlist_6s_360p.m3u8"], ["playlist_6s_360p.m3u8"]),
    (["360p", "720p"], ["playlist_6s_720p.m3u8", "playlist_6s_360p.m3u8"]),
    ([], ["playlist_6s_720p.m3u8", "playlist_6s_360p.m3u8"]),
])
def test_allowed_variants(allow, kept):
    out = rewrite.rewrite_hls_master(MASTER, controls(content_allowed_variants=allow))
    pl = m3u8.loads(out)
    assert [p.uri for p in pl.playlists] == kept
    assert [m.uri for m in pl.media] == ["playlist_6s_audio.m3u8"]


def test_live_offset_writes_ext_x_start_once():
    out = rewrite.rewrite_hls_master(MASTER, controls(content_live_offset=18))
    assert "#EXT-X-START:TIME-OFFSET=-18,PRECISE=YES" in out
    pl = m3u8.loads(out)
    assert pl.start.time_offset == -18 and pl.start.precise == "YES"
    lines = out.splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-START:TIME-OFFSET=-18,PRECISE=YES"]
    # An existing EXT-X-START is replaced, CRLF endings kept.
    out = rewrite.rewrite_hls_master(HAND_MASTER, controls(content_live_offset=6.5))
    assert out.count("#EXT-X-START") == 1
    assert "#EXT-X-START:TIME-OFFSET=-6.5,PRECISE=YES\r\n" in out
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")


def test_all_edits_compose_on_a_real_master():
    out = rewrite.rewrite_hls_master(MASTER, controls(
        content_strip_codecs=True, content_overstate_bandwidth=True, content_allowed_variants=["360p"],
        content_live_offset=24))
    pl = m3u8.loads(out)
    assert [(p.uri, p.stream_info.bandwidth, p.stream_info.average_bandwidth, p.stream_info.codecs)
            for p in pl.playlists] == [("playlist_6s_360p.m3u8", 963600, 800800, None)]
    assert pl.start.time_offset == -24
    assert len(out.encode()) != len(MASTER.encode())


def test_variants_of_master_and_allowed_matches_any():
    vs = rewrite.variants_of_master(MASTER)
    assert vs == [
        {"url": "playlist_6s_720p.m3u8", "bandwidth": 3108000, "average_bandwidth": 2528000,
         "resolution": "1280x720"},
        {"url": "playlist_6s_360p.m3u8", "bandwidth": 876000, "average_bandwidth": 728000,
         "resolution": "640x360"},
    ]
    assert rewrite.allowed_matches_any(vs, ["720p"])
    assert rewrite.allowed_matches_any(vs, ["playlist_6s_360p.m3u8"])
    assert not rewrite.allowed_matches_any(vs, ["1080p"])
    assert not rewrite.allowed_matches_any(vs, ["playlist_6s_1080p.m3u8"])
    assert rewrite.allowed_matches_any(vs, [])
    assert rewrite.allowed_matches_any([], ["1080p"])
    dvs = rewrite.variants_of_master(MPD_6S)
    assert dvs == [
        {"url": "720p", "bandwidth": 2976000, "average_bandwidth": None, "resolution": "1280x720"},
        {"url": "360p", "bandwidth": 744000, "average_bandwidth": None, "resolution": "640x360"},
    ]
    assert rewrite.allowed_matches_any(dvs, ["playlist_720p.m3u8"])


# --------------------------------------------------------------------------- DASH


def reps(mpd_text):
    mpd = MPEGDASHParser.parse(mpd_text)
    out = []
    for period in mpd.periods:
        for aset in period.adaptation_sets:
            for rep in aset.representations:
                out.append((aset.content_type, rep.id, rep.bandwidth, rep.codecs))
    return mpd, out


def test_mpd_strip_codecs_overstate_and_allowed():
    out = rewrite.rewrite_mpd(MPD_6S, controls(content_strip_codecs=True, content_overstate_bandwidth=True,
                                               content_allowed_variants=["720p"]))
    mpd, got = reps(out)
    assert len(mpd.periods) == 3
    assert got[:2] == [("video", "720p", 3273600, None), ("audio", "audio", 145200, None)]
    assert len(got) == 6
    assert "codecs=" not in out
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<MPD')


def test_mpd_average_bandwidth_only_is_a_no_op():
    assert rewrite.rewrite_mpd(MPD_6S, controls(content_strip_average_bandwidth=True)) is MPD_6S


def test_mpd_live_offset_sets_delay_and_ll_latency_target():
    out = rewrite.rewrite_mpd(MPD_6S, controls(content_live_offset=24))
    assert MPEGDASHParser.parse(out).suggested_presentation_delay == "PT24S"
    out = rewrite.rewrite_mpd(MPD_LL, controls(content_live_offset=12))
    doc = xml.dom.minidom.parseString(out)
    lat = doc.getElementsByTagName("Latency")[0]
    got = (lat.getAttribute("target"), lat.getAttribute("max"), lat.getAttribute("min"))
    assert got == ("12000", "12000", "2000")
    assert doc.documentElement.getAttribute("suggestedPresentationDelay") == "PT12S"


def test_rewrite_master_dispatches_on_body():
    c = controls(content_strip_codecs=True)
    assert "CODECS" not in rewrite.rewrite_master(MASTER, c)
    assert "codecs=" not in rewrite.rewrite_master(MPD_6S, c)
    assert rewrite.rewrite_master("not a playlist", c) == "not a playlist"
