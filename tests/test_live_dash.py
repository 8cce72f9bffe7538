"""DASH renderer: dynamic MPDs for LL, 2 s and 6 s, periods per loop."""

import xml.etree.ElementTree as ET

import pytest
from mpegdash.parser import MPEGDASHParser

from streamlab.live import dash, hls
from streamlab.live.timeline import LiveTimeline
from streamlab.media.index import index_to_json, parse_index
from tests.live_helpers import EPOCH, make_index

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
IDX = make_index()
TL = LiveTimeline(IDX, EPOCH)


@pytest.mark.parametrize("kind", dash.KINDS)
def test_mpd_parses_and_carries_the_live_attributes(kind):
    now = EPOCH + 24 * 5000 + 13.37
    text = dash.render_mpd(IDX, kind, now, EPOCH, 36)
    mpd = MPEGDASHParser.parse(text)
    assert mpd.type == "dynamic"
    assert mpd.availability_start_time == "2020-01-01T00:00:00Z"
    root = ET.fromstring(text)
    assert root.get("publishTime") == hls.format_pdt(round(now * 1000))
    assert root.get("timeShiftBufferDepth") == "PT36S"
    for attr in ("minimumUpdatePeriod", "suggestedPresentationDelay", "maxSegmentDuration", "minBufferTime"):
        assert root.get(attr).startswith("PT")
    utc = root.find("d:UTCTiming", NS)
    assert utc.get("schemeIdUri") == "urn:mpeg:dash:utc:http-iso:2014" and utc.get("value") == "/go-live/time"
    periods = mpd.periods
    assert periods
    for p in periods:
        assert [a.content_type for a in p.adaptation_sets] == ["video", "audio"]
        assert [r.id for r in p.adaptation_sets[0].representations] == ["720p", "360p"]
        assert [r.id for r in p.adaptation_sets[1].representations] == ["audio"]
    assert dash.render_mpd(IDX, kind, now, EPOCH, 36, utc_timing_url="http://x/go-live/time") != text


def test_periods_across_a_loop_boundary():
    # 9 s into loop 5001 with a 30 s window: loops 5000 and 5001 are touched
    now = EPOCH + 24 * 5001 + 9.0
    root = ET.fromstring(dash.render_mpd(IDX, "6s", now, EPOCH, 30))
    periods = root.findall("d:Period", NS)
    assert [p.get("id") for p in periods] == ["loop-5000", "loop-5001"]
    assert [p.get("start") for p in periods] == [f"PT{24 * 5000}S", f"PT{24 * 5001}S"]
    # every Period knows its end, so no file number past segment_count is ever addressed
    assert [p.get("duration") for p in periods] == ["PT24S", "PT24S"]
    st = periods[1].find("d:AdaptationSet/d:Representation/d:SegmentTemplate", NS)
    # $Number$ is the absolute segment number n: loop 5001's first segment is 5001 x 4
    assert st.get("startNumber") == str(5001 * 4) and st.get("media") == "video/720p/n$Number$.m4s"
    assert st.get("initialization") == "video/720p/init.mp4"
    assert int(st.get("duration")) == 6 * int(st.get("timescale"))
    # window inside one loop
    now = EPOCH + 24 * 5002 + 14.0
    root = ET.fromstring(dash.render_mpd(IDX, "6s", now, EPOCH, 12))
    assert [p.get("id") for p in root.findall("d:Period", NS)] == ["loop-5002"]
    # the next loop is not announced before it starts (dash.js would move the chunked last
    # segment of the loop into the next Period's timeline)
    now = EPOCH + 24 * 5002 + 23.9
    root = ET.fromstring(dash.render_mpd(IDX, "ll", now, EPOCH, 12))
    assert [p.get("id") for p in root.findall("d:Period", NS)] == ["loop-5002"]
    root = ET.fromstring(dash.render_mpd(IDX, "ll", now + 0.1, EPOCH, 12))
    assert [p.get("id") for p in root.findall("d:Period", NS)] == ["loop-5002", "loop-5003"]
    assert root.get("minimumUpdatePeriod") == "PT1S"


def test_ll_dash_attributes():
    text = dash.render_mpd(IDX, "ll", EPOCH + 1e6, EPOCH, 36)
    root = ET.fromstring(text)
    assert "low-latency" in root.get("profiles")
    for st in root.iter("{urn:mpeg:dash:schema:mpd:2011}SegmentTemplate"):
        assert float(st.get("availabilityTimeOffset")) == pytest.approx(6.0 - 0.2)
        assert st.get("availabilityTimeComplete") == "false"
    lat = root.find("d:ServiceDescription/d:Latency", NS)
    assert int(lat.get("min")) <= int(lat.get("target")) <= int(lat.get("max"))
    six = ET.fromstring(dash.render_mpd(IDX, "6s", EPOCH + 1e6, EPOCH, 36))
    assert six.find("d:ServiceDescription", NS) is None
    assert all(st.get("availabilityTimeOffset") is None
               for st in six.iter("{urn:mpeg:dash:schema:mpd:2011}SegmentTemplate"))


def test_2s_segment_list_matches_the_hls_pieces():
    n = 5000 * 4 + 1
    now = EPOCH + n * 6 + 4.5  # two pieces of n complete; window 12 s: 6 pieces back to loop 4999
    text = dash.render_mpd(IDX, "2s", now, EPOCH, 12)
    MPEGDASHParser.parse(text)
    root = ET.fromstring(text)
    periods = root.findall("d:Period", NS)
    assert [p.get("id") for p in periods] == ["loop-4999", "loop-5000"]
    hls_text = hls.render_media(IDX, "720p", "2s", now, EPOCH, 12)
    ranges = [line.split(":", 1)[1] for line in hls_text.splitlines() if line.startswith("#EXT-X-BYTERANGE")]
    got = []
    for p in periods:
        rep = p.find("d:AdaptationSet/d:Representation", NS)
        sl = rep.find("d:SegmentList", NS)
        urls = sl.findall("d:SegmentURL", NS)
        ss = sl.findall("d:SegmentTimeline/d:S", NS)
        # one S per SegmentURL (dash.js pairs them by S element, @r would break that)
        assert len(ss) == len(urls) and all(s.get("r") is None for s in ss)
        assert ss[0].get("t") is not None
        for u in urls:
            a, b = map(int, u.get("mediaRange").split("-"))
            got.append(f"{b - a + 1}@{a}")
    assert got == ranges
    # the new loop's timeline starts at media time 0 with 2 s pieces
    s0 = periods[1].find("d:AdaptationSet/d:Representation/d:SegmentList/d:SegmentTimeline/d:S", NS)
    assert s0.get("t") == "0" and int(s0.get("d")) == 2 * 15360


def test_mpd_is_deterministic():
    again = parse_index(index_to_json(IDX))
    for kind in dash.KINDS:
        for now in (EPOCH + 123456.789, EPOCH + 24 * 77):
            a = dash.render_mpd(IDX, kind, now, EPOCH, 36)
            assert a == dash.render_mpd(IDX, kind, now, EPOCH, 36)
            assert a == dash.render_mpd(again, kind, now, EPOCH, 36)


def test_unknown_kind():
    with pytest.raises(KeyError):
        dash.render_mpd(IDX, "1s", EPOCH + 100, EPOCH, 36)


def test_dash_template_conversion():
    assert dash.dash_template("video/720p/seg_{number:05d}.m4s") == "video/720p/seg_$Number%05d$.m4s"
    assert dash.dash_template("a/{number}.m4s") == "a/$Number$.m4s"


@pytest.mark.parametrize("kind", dash.KINDS)
def test_window_longer_than_the_loop_lists_every_touched_loop_and_no_older_one(kind):
    # the default 36 s window over a 24 s loop: 2 or 3 Periods, each overlapping the window
    for into, want in ((5.0, [5000, 5001, 5002]), (13.0, [5001, 5002]), (23.9, [5001, 5002])):
        now = EPOCH + 24 * 5002 + into
        text = dash.render_mpd(IDX, kind, now, EPOCH, 36)
        MPEGDASHParser.parse(text)
        periods = ET.fromstring(text).findall("d:Period", NS)
        assert [p.get("id") for p in periods] == [f"loop-{k}" for k in want]
        assert [p.get("start") for p in periods] == [f"PT{24 * k}S" for k in want]
        assert all(p.get("duration") == "PT24S" for p in periods)
        if kind == "2s":  # 36 s of complete 2 s pieces, the oldest one inside the window
            sl = [p.find("d:AdaptationSet/d:Representation/d:SegmentList", NS) for p in periods]
            ts = int(sl[0].get("timescale"))
            ds = [int(s.get("d")) for x in sl for s in x.findall("d:SegmentTimeline/d:S", NS)]
            assert sum(ds) == pytest.approx(36 * ts, rel=0.01)
            t0 = int(sl[0].find("d:SegmentTimeline/d:S", NS).get("t"))
            assert 24 * want[0] + t0 / ts >= now - EPOCH - 36 - 2
