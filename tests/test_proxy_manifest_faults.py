"""Manifest faults over the origin's real rendered playlists/MPDs (streamlab.proxy.manifest_faults).

Every output is parsed by ``m3u8`` (HLS) or an XML parser (MPD), as a player would."""

import datetime
import xml.etree.ElementTree as ET

import m3u8
import pytest

from streamlab.live import dash, hls
from streamlab.proxy import manifest_faults as mf
from streamlab.proxy.fields import MANIFEST_FAULT_TYPES, control_defaults, validate
from tests.live_helpers import EPOCH, make_index

IDX = make_index()
NOW = EPOCH + 90001 * 6 + 3
PATH = "/go-live/clip/playlist_6s_720p.m3u8"
NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def media(now=NOW, kind="6s", track="720p"):
    return hls.render_media(IDX, track, kind, now, EPOCH, 36)


def ctl(fault, value=0, variants=()):
    controls = control_defaults()
    controls.update(validate({"manifest_fault_type": fault, "manifest_fault_value": value,
                              "manifest_fault_variants": list(variants)}, None, controls))
    return controls


def run(text, fault, value=0, *, kind="manifest", now=NOW, state=None, variants=()):
    return mf.apply(text, kind, PATH, ctl(fault, value, variants), now, state or mf.ManifestFaultState())


def uris(pl):
    return [s.uri for s in pl.segments]


def test_every_type_is_a_valid_control_and_none_is_a_no_op():
    assert set(MANIFEST_FAULT_TYPES) == {"none", *mf.HLS_MEDIA_FAULTS, "variant_removed", *mf.MPD_FAULTS}
    text = media()
    assert run(text, "none") == (text, "")


def test_stale_playlist_freezes_the_live_edge_then_resumes():
    state = mf.ManifestFaultState()
    first = media()
    assert run(first, "stale_playlist", 10, state=state) == (first, "stale_playlist")
    later = media(NOW + 7)                                   # the origin moved on by one segment
    assert uris(m3u8.loads(later)) != uris(m3u8.loads(first))
    body, applied = run(later, "stale_playlist", 10, now=NOW + 7, state=state)
    assert (body, applied) == (first, "stale_playlist")
    assert m3u8.loads(body).media_sequence == m3u8.loads(first).media_sequence
    after = media(NOW + 11)
    assert run(after, "stale_playlist", 10, now=NOW + 11, state=state) == (after, "")


@pytest.mark.parametrize("fault,delta", [("sequence_jump", 10), ("sequence_regression", -3)])
def test_media_sequence_jump_and_regression(fault, delta):
    text = media()
    body, applied = run(text, fault)
    assert applied == fault
    assert m3u8.loads(body).media_sequence == m3u8.loads(text).media_sequence + delta
    assert uris(m3u8.loads(body)) == uris(m3u8.loads(text))


def test_removed_segment_stays_removed_across_reloads():
    state = mf.ManifestFaultState()
    text = media()
    orig = uris(m3u8.loads(text))
    body, applied = run(text, "remove_segment", state=state)
    assert applied == "remove_segment"
    got = uris(m3u8.loads(body))
    gone = orig[-2]
    assert gone not in got and len(got) == len(orig) - 1
    body2, _ = run(media(NOW + 6), "remove_segment", now=NOW + 6, state=state)
    assert gone not in uris(m3u8.loads(body2))                # same segment on the next reload
    # discontinuity/map tags of a removed segment move to the next one
    assert body.count("#EXT-X-DISCONTINUITY\n") == text.count("#EXT-X-DISCONTINUITY\n")


def test_duplicated_segment():
    text = media()
    body, applied = run(text, "duplicate_segment")
    got = uris(m3u8.loads(body))
    target = uris(m3u8.loads(text))[-2]
    assert applied == "duplicate_segment" and got.count(target) == 2
    assert got.index(target) + 1 == len(got) - 2


def test_gap_segments_and_ll_hls_parts():
    text = media(kind="ll")
    body, applied = run(text, "gap_segments", 2)
    pl = m3u8.loads(body)
    gaps = [s.uri for s in pl.segments if s.gap_tag]
    assert applied == "gap_segments" and len(gaps) == 2
    assert pl.version >= 8
    orig = m3u8.loads(text)
    assert [s.uri for s in orig.segments] == [s.uri for s in pl.segments]


def test_wrong_and_missing_extinf():
    text = media()
    body, applied = run(text, "wrong_extinf")
    durations = [s.duration for s in m3u8.loads(body).segments]
    assert applied == "wrong_extinf" and durations[-2] == pytest.approx(12.0) and durations[-1] == 6.0
    body, _ = run(text, "wrong_extinf", 1.5)
    assert [s.duration for s in m3u8.loads(body).segments][-2] == 1.5
    body, applied = run(text, "missing_extinf")
    assert applied == "missing_extinf"
    assert body.count("#EXTINF:") == text.count("#EXTINF:") - 1
    assert len(m3u8.loads(body).segments) >= len(m3u8.loads(text).segments) - 1


def test_wrong_targetduration():
    text = media()
    assert m3u8.loads(run(text, "wrong_targetduration")[0]).target_duration == 3
    assert m3u8.loads(run(text, "wrong_targetduration", 2)[0]).target_duration == 2


def test_discontinuity_without_its_tag():
    text = media()
    assert sum(1 for s in m3u8.loads(text).segments if s.discontinuity) >= 1
    body, applied = run(text, "missing_discontinuity")
    assert applied == "missing_discontinuity"
    assert not any(s.discontinuity for s in m3u8.loads(body).segments)
    assert m3u8.loads(body).discontinuity_sequence == m3u8.loads(text).discontinuity_sequence


def test_program_date_time_drifts_with_time():
    state = mf.ManifestFaultState()
    text = media()
    assert run(text, "pdt_drift", 30, state=state) == (text, "")      # armed now: no drift yet
    later = media(NOW + 60)
    body, applied = run(later, "pdt_drift", 30, now=NOW + 60, state=state)
    assert applied == "pdt_drift"
    real = [s.current_program_date_time for s in m3u8.loads(later).segments]
    drifted = [s.current_program_date_time for s in m3u8.loads(body).segments]
    assert all((d - r) == datetime.timedelta(seconds=30) for d, r in zip(drifted, real, strict=True))


def test_variant_removed_from_the_hls_master():
    text = hls.render_master(IDX, "6s")
    body, applied = run(text, "variant_removed", kind="master_manifest")
    pl = m3u8.loads(body)
    assert applied == "variant_removed"
    assert [p.uri for p in pl.playlists] == ["playlist_6s_360p.m3u8"]   # the top rung went
    body, _ = run(text, "variant_removed", kind="master_manifest", variants=["360p"])
    assert [p.uri for p in m3u8.loads(body).playlists] == ["playlist_6s_720p.m3u8"]
    assert len(m3u8.loads(body).media) == len(m3u8.loads(text).media)   # audio kept


def _mpd(now=NOW):
    return dash.render_mpd(IDX, "6s", now, EPOCH, 36)


def test_variant_removed_from_the_mpd():
    body, applied = run(_mpd(), "variant_removed", kind="master_manifest")
    root = ET.fromstring(body)
    reps = {r.get("id") for r in root.iterfind(".//d:Representation", NS)}
    assert applied == "variant_removed" and "720p" not in reps and {"360p", "audio"} <= reps


def test_mpd_publish_time_does_not_advance():
    state = mf.ManifestFaultState()
    first = _mpd()
    assert run(first, "mpd_publish_time_frozen", kind="master_manifest", state=state) == (first, "")
    later = _mpd(NOW + 8)
    body, applied = run(later, "mpd_publish_time_frozen", kind="master_manifest", now=NOW + 8, state=state)
    assert applied == "mpd_publish_time_frozen"
    def publish(t):
        return ET.fromstring(t.encode()).get("publishTime")
    assert publish(later) != publish(first)
    assert publish(body) == publish(first)


def test_mpd_availability_start_time_jumps():
    text = _mpd()
    body, applied = run(text, "mpd_ast_jump", 30, kind="master_manifest")
    def ast(t):
        return datetime.datetime.fromisoformat(ET.fromstring(t.encode()).get("availabilityStartTime")
                                               .replace("Z", "+00:00"))
    assert applied == "mpd_ast_jump" and ast(body) - ast(text) == datetime.timedelta(seconds=30)


def test_faults_that_do_not_fit_the_body_pass_it_through():
    text = media()
    assert run(text, "mpd_ast_jump") == (text, "")
    assert run(_mpd(), "gap_segments", kind="master_manifest") == (_mpd(), "")
    master = hls.render_master(IDX, "6s")
    assert run(master, "sequence_jump", kind="master_manifest") == (master, "")


def test_marker_text_for_manifest_faults():
    from streamlab.proxy import markers
    assert markers.describe(["manifest_fault_type"], ctl("gap_segments")) == \
        ("fault", "manifest fault: gap_segments armed")
    assert markers.describe(["manifest_fault_type"], ctl("none")) == ("fault", "manifest fault: disarmed")


def test_registry_applies_per_session_and_rearms_on_patch():
    from streamlab.proxy.exchange import Plan
    from tests.test_sessions_registry import _registry
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("mf")
    other, _ = reg.get_or_create("mf-other")
    reg.patch(s.session_id, {"manifest_fault_type": "stale_playlist", "manifest_fault_value": 5})
    first, later = media().encode(), media(NOW + 7).encode()
    plan = Plan("manifest", buffer_body=True)

    def manifest_fault(session, body):  # what the session's port does to a buffered playlist
        return reg.exchange(session).rewrite(plan, PATH, body, reactor.seconds())

    assert manifest_fault(s, first) == (first, "stale_playlist")
    reactor.advance(3)
    assert manifest_fault(s, later) == (first, "stale_playlist")
    assert manifest_fault(other, later) == (later, "")   # not a group field
    reactor.advance(3)                                                          # window over
    assert manifest_fault(s, later) == (later, "")
    reg.patch(s.session_id, {"manifest_fault_value": 5})                        # same value: re-armed
    assert manifest_fault(s, later) == (later, "stale_playlist")
    snapshot = reg.to_json(s)
    assert snapshot["manifest_fault_type"] == "stale_playlist" and isinstance(snapshot["seed"], int)
