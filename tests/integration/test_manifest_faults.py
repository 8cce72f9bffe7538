"""Manifest faults end to end: a real daemon, the test item, GETs through a session port.

Checks what a player fetching through its session port sees (parsed with ``m3u8`` / XML)
and that each answer's network-log entry names the manifest fault."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import m3u8
import pytest

from streamlab.testing.daemon import Daemon
from tests.integration.sessions_helpers import (
    create_session,
    get,
    network,
    patch,
    serving,
    wait_for,
)

PLAYLIST = "/go-live/testclip/playlist_2s_360p.m3u8"
MASTER = "/go-live/testclip/master.m3u8"
MPD = "/go-live/testclip/manifest_2s.mpd"


@pytest.fixture(scope="module")
def d(tmp_path_factory, test_item):
    daemon = Daemon(str(tmp_path_factory.mktemp("manifest-faults")), session_ports=10,
                    config={"sessions": {"session_idle_timeout": 300}})
    with serving(daemon):
        yield daemon


def _port(s: dict) -> int:
    return int(s["x_forwarded_port"])


def _entries(d, sid, path):
    return [e for e in network(d, sid) if e["path"] == path]


def _last_uri(text: str) -> str:
    return m3u8.loads(text).segments[-1].uri


def test_stale_playlist_answers_200_with_a_frozen_live_edge(d):
    s = create_session(d, "mf-stale", {"manifest_fault_type": "stale_playlist", "manifest_fault_value": 8})
    assert s["manifest_fault_type"] == "stale_playlist" and s["manifest_fault_value"] == 8
    port = _port(s)
    first = get(port, PLAYLIST)
    assert first.status == 200
    frozen = _last_uri(first.text)
    t0 = time.monotonic()
    wait_for(lambda: _last_uri(d.get(PLAYLIST).text) != frozen, timeout=8)   # the origin moved on
    again = get(port, PLAYLIST)
    assert time.monotonic() - t0 < 8
    assert again.status == 200 and again.text == first.text
    entries = _entries(d, s["session_id"], PLAYLIST)
    assert [e["fault_type"] for e in entries] == ["stale_playlist", "stale_playlist"]
    assert all(e["fault_category"] == "manifest" and e["faulted"] and e["status"] == 200 for e in entries)
    # after the window the live edge moves again, and the answers are no longer faulted
    wait_for(lambda: _last_uri(get(port, PLAYLIST).text) != frozen, timeout=20, interval=0.5)
    assert _entries(d, s["session_id"], PLAYLIST)[-1]["fault_type"] == ""


def test_gap_segments_only_on_that_session(d):
    s = create_session(d, "mf-gap", {"manifest_fault_type": "gap_segments", "manifest_fault_value": 2})
    other = create_session(d, "mf-clean")
    body = get(_port(s), PLAYLIST)
    assert body.status == 200
    assert int(body.headers.get("content-length")) == len(body.body)
    gaps = [seg.uri for seg in m3u8.loads(body.text).segments if seg.gap_tag]
    assert len(gaps) == 2
    assert not any(seg.gap_tag for seg in m3u8.loads(get(_port(other), PLAYLIST).text).segments)
    entry = _entries(d, s["session_id"], PLAYLIST)[-1]
    assert (entry["fault_type"], entry["fault_category"], entry["request_kind"]) == \
        ("gap_segments", "manifest", "manifest")
    assert d.get(f"/api/session/{s['session_id']}").json()["fault_count_gap_segments"] == 1
    # cleared by PATCH: the playlist is the origin's again
    patch(d, s["session_id"], {"manifest_fault_type": "none"})
    assert not any(seg.gap_tag for seg in m3u8.loads(get(_port(s), PLAYLIST).text).segments)


def test_variant_disappears_from_the_master(d):
    s = create_session(d, "mf-variant", {"manifest_fault_type": "variant_removed",
                                         "manifest_fault_variants": ["360p"]})
    full = [p.uri for p in m3u8.loads(d.get(MASTER).text).playlists]
    seen = [p.uri for p in m3u8.loads(get(_port(s), MASTER).text).playlists]
    assert len(full) >= 2 and not any("360p" in u for u in seen)
    assert seen == [u for u in full if "360p" not in u]
    entry = _entries(d, s["session_id"], MASTER)[-1]
    assert (entry["fault_type"], entry["request_kind"]) == ("variant_removed", "master_manifest")
    # the session still knows the whole ladder (recorded from the unmodified master)
    ladder = d.get(f"/api/session/{s['session_id']}").json()["manifest_variants"]
    assert len(ladder) == len(full)


def _publish(text: str) -> str:
    return ET.fromstring(text.encode()).get("publishTime")


def test_mpd_publish_time_does_not_advance(d):
    s = create_session(d, "mf-mpd", {"manifest_fault_type": "mpd_publish_time_frozen"})
    port = _port(s)
    first = get(port, MPD)
    assert first.status == 200
    frozen = _publish(first.text)
    wait_for(lambda: _publish(d.get(MPD).text) != frozen, timeout=10, interval=0.2)
    later = get(port, MPD)
    assert _publish(later.text) == frozen
    entries = _entries(d, s["session_id"], MPD)
    assert entries[0]["fault_type"] == ""                # the first answer is the real one
    assert entries[-1]["fault_type"] == "mpd_publish_time_frozen"
    assert entries[-1]["fault_category"] == "manifest"
