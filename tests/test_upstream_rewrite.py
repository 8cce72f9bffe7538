"""Pure core of upstream origins: URL mapping, playlist/MPD rewriting, detection."""

import pytest

from streamlab.errors import Invalid
from streamlab.proxy.classify import classify, variant_of
from streamlab.upstream import detect, paths
from streamlab.upstream.rewrite import rewrite_hls, rewrite_mpd

HLS = paths.Origin("https://cdn.example.com/live/ch1/master.m3u8?tok=1")
DASH = paths.Origin("http://origin.example.com/vod/x/manifest.mpd", dash=True)

MASTER = """#EXTM3U
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key1",KEYFORMAT="com.apple.streamingkeydelivery"
#EXT-X-SESSION-KEY:METHOD=AES-128,URI="keys/session.key"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="audio/en/index.m3u8"
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1000,URI="720p/iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=3000000,AUDIO="a"
720p/index.m3u8?sig=abc
#EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO="a"
https://other.example.net/edge/360p/index.m3u8
"""

MEDIA_LL = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0
#EXT-X-PART-INF:PART-TARGET=0.33
#EXT-X-MAP:URI="init.mp4"
#EXT-X-KEY:METHOD=AES-128,URI="/keys/k1.key",IV=0x1
#EXTINF:4.0,
seg_100.m4s
#EXT-X-PART:DURATION=0.33,URI="seg_101.part0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg_101.part1.m4s"
#EXT-X-RENDITION-REPORT:URI="../360p/index.m3u8",LAST-MSN=101,LAST-PART=0
"""


def test_master_urls_stay_on_the_serving_port_and_classify():
    out = rewrite_hls(MASTER, HLS.url, HLS, "up")
    assert 'URI="skd://key1"' in out  # not http: untouched
    assert 'URI="/go-live/up/live/ch1/keys/session.key"' in out
    assert 'URI="/go-live/up/playlist_live~ch1~audio~en~index.m3u8"' in out
    assert 'URI="/go-live/up/playlist_live~ch1~720p~iframes.m3u8"' in out
    lines = out.splitlines()
    assert "/go-live/up/playlist_live~ch1~720p~index.m3u8?sig=abc" in lines
    assert "/go-live/up/playlist__o~https~other.example.net~edge~360p~index.m3u8" in lines
    assert classify("/go-live/up/playlist_live~ch1~720p~index.m3u8") == "manifest"
    # and back to the upstream, query included
    assert paths.upstream_url(HLS, "playlist_live~ch1~720p~index.m3u8", "sig=abc") == \
        "https://cdn.example.com/live/ch1/720p/index.m3u8?sig=abc"
    assert paths.upstream_url(HLS, "playlist__o~https~other.example.net~edge~360p~index.m3u8") == \
        "https://other.example.net/edge/360p/index.m3u8"
    assert paths.upstream_url(HLS, "master.m3u8", "_HLS_msn=3") == \
        "https://cdn.example.com/live/ch1/master.m3u8?tok=1&_HLS_msn=3"
    assert paths.upstream_url(HLS, "manifest.mpd") is None


def test_media_playlist_rewrites_map_key_parts_hints_and_reports():
    base = "https://cdn.example.com/live/ch1/720p/index.m3u8"
    out = rewrite_hls(MEDIA_LL, base, HLS, "up")
    assert 'URI="/go-live/up/live/ch1/720p/init.mp4"' in out
    assert 'URI="/keys/k1.key"' not in out and 'URI="/go-live/up/keys/k1.key"' in out
    assert "\n/go-live/up/live/ch1/720p/seg_100.m4s\n" in out
    assert 'URI="/go-live/up/live/ch1/720p/seg_101.part0.m4s"' in out
    assert 'URI="/go-live/up/live/ch1/720p/seg_101.part1.m4s"' in out
    assert 'URI="/go-live/up/playlist_live~ch1~360p~index.m3u8"' in out
    seg = "/go-live/up/live/ch1/720p/seg_100.m4s"
    assert classify(seg) == "segment" and variant_of(seg) == "720p"
    assert paths.upstream_url(HLS, "live/ch1/720p/seg_100.m4s") == \
        "https://cdn.example.com/live/ch1/720p/seg_100.m4s"


def test_odd_playlist_names_round_trip():
    for path in ("a~b/c.m3u8", "x/y.m3u", "b64.foo.m3u8"):
        local = paths.local_url(HLS, "up", f"https://cdn.example.com/{path}", playlist=True)
        rest = local.removeprefix("/go-live/up/")
        assert classify(local) == "manifest"
        assert paths.upstream_url(HLS, rest) == f"https://cdn.example.com/{path}"
    assert paths.upstream_url(HLS, "playlist_b64.!!.m3u8") is None


MPD_NUMBER = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z">
  <Period id="p0">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s"
        startNumber="1" duration="2" availabilityTimeOffset="1.5"/>
      <Representation id="v1" bandwidth="1000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""

MPD_TIME = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <BaseURL>https://cdn2.example.com/media/</BaseURL>
  <Location>http://origin.example.com/vod/x/manifest.mpd</Location>
  <Period>
    <AdaptationSet>
      <BaseURL>video/</BaseURL>
      <SegmentTemplate timescale="1000" media="http://origin.example.com/abs/$RepresentationID$/t$Time$.m4s?a=1&amp;b=2"
        initialization="init-$RepresentationID$.mp4">
        <SegmentTimeline><S t="0" d="2000" r="3"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="v1" bandwidth="1"/>
    </AdaptationSet>
  </Period>
</MPD>
"""


def test_mpd_number_template_gets_a_local_base():
    out = rewrite_mpd(MPD_NUMBER, DASH.url, DASH, "d")
    assert '<BaseURL>/go-live/d/vod/x/</BaseURL>' in out
    assert 'media="$RepresentationID$/$Number$.m4s"' in out  # relative: resolves through the base
    info = detect.dash_info(MPD_NUMBER)
    assert info.live and info.low_latency and info.variants == 1
    seg = "/go-live/d/vod/x/v1/17.m4s"
    assert classify(seg) == "segment" and variant_of(seg) == "v1"
    assert paths.upstream_url(DASH, "vod/x/v1/17.m4s") == "http://origin.example.com/vod/x/v1/17.m4s"


def test_mpd_time_template_absolute_urls_are_rewritten():
    out = rewrite_mpd(MPD_TIME, DASH.url, DASH, "d")
    assert "<BaseURL>/go-live/d/_o/https/cdn2.example.com/media/</BaseURL>" in out
    assert "<BaseURL>video/</BaseURL>" in out
    assert "<Location>/go-live/d/manifest.mpd</Location>" in out
    assert 'media="/go-live/d/abs/$RepresentationID$/t$Time$.m4s?a=1&amp;b=2"' in out
    assert 'initialization="init-$RepresentationID$.mp4"' in out
    assert out.count("<BaseURL>") == 2
    assert not detect.dash_info(MPD_TIME).live


def test_detection_and_registration_checks():
    assert detect.sniff(b"\xef\xbb\xbf#EXTM3U\n") == "hls"
    assert detect.sniff(b"<?xml?><MPD>") == "dash"
    assert detect.sniff(b"<html>") is None
    assert detect.hls_media_info(MEDIA_LL) == (True, True)
    assert detect.hls_media_info("#EXTM3U\n#EXTINF:1,\na.ts\n#EXT-X-ENDLIST\n") == (False, False)
    assert detect.hls_master_variants(MASTER) == ["720p/index.m3u8?sig=abc",
                                                  "https://other.example.net/edge/360p/index.m3u8"]
    ok = detect.check_registration({"name": "my-cdn", "url": "https://x/y.m3u8",
                                    "headers": {"Authorization": "Bearer t"}, "verify_tls": False})
    assert ok.headers == {"Authorization": "Bearer t"} and not ok.verify_tls
    for bad, field in [({"name": "a b", "url": "http://x/"}, "name"),
                       ({"name": "api", "url": "http://x/"}, "name"),
                       ({"name": "a", "url": "ftp://x/"}, "url"),
                       ({"name": "a", "url": "http://x/", "headers": {"Host": "y"}}, "headers"),
                       ({"name": "a", "url": "http://x/", "verify_tls": "no"}, "verify_tls")]:
        with pytest.raises(Invalid) as exc:
            detect.check_registration(bad)
        assert field in exc.value.extra["fields"]
