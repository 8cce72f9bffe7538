"""/api/content on the in-memory harness (streamlab.testing.api) with real content items in
its media_dir: the list, unusable items with their reason, the byte-range rebuild and its
404/405/422 answers, and new/removed items noticed by the library's poll on the clock."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from streamlab.testing.api import HOST, ApiHarness
from streamlab.testing.fixtures import install_test_item

POLL_INTERVAL = 2.0  # ContentLibrary's default, as tap.py builds it


@pytest.fixture
def api(tmp_path, test_item):
    """testclip, a corrupt item, an item missing a segment and an item without
    content.json (files intact), installed before the services start."""
    harness = ApiHarness(tmp_path)
    install_test_item(harness.media_dir, "testclip", source=test_item)
    broken = install_test_item(harness.media_dir, "broken", source=test_item)
    with open(os.path.join(broken, "content.json"), "w", encoding="utf-8") as fh:
        fh.write('{"format": 1, "tracks": [')
    holed = install_test_item(harness.media_dir, "holed", source=test_item)
    os.unlink(os.path.join(holed, "video", "180p", "seg_00002.m4s"))
    lost = install_test_item(harness.media_dir, "lost", source=test_item)
    os.unlink(os.path.join(lost, "content.json"))
    with harness:
        yield harness


def names(api: ApiHarness, query: str = "") -> list[str]:
    return [i["name"] for i in api.get(f"/api/content{query}").json()]


def test_list_shows_usable_items_with_absolute_urls(api) -> None:
    r = api.get("/api/content")
    assert r.status == 200 and r.header("content-type") == "application/json"
    body = r.json()
    assert [i["name"] for i in body] == ["testclip"]
    item = body[0]
    assert {k: item[k] for k in ("source", "codec", "segment_duration", "part_duration", "duration",
                                 "max_resolution", "max_height", "has_hls", "has_dash")} == {
        "source": "testclip.synthetic", "codec": "h264", "segment_duration": 6.0, "part_duration": 0.2,
        "duration": 24.0, "max_resolution": "360p", "max_height": 360, "has_hls": True, "has_dash": True}
    variants = [(v["id"], v["resolution"]) for v in item["variants"]]
    assert variants == [("360p", "640x360"), ("180p", "320x180")]
    assert all(v["bandwidth"] > 0 for v in item["variants"])
    base = f"http://{HOST}/go-live/testclip/"
    assert item["urls"] == {
        "hls_ll": base + "master.m3u8", "hls_2s": base + "master_2s.m3u8",
        "hls_6s": base + "master_6s.m3u8", "dash_ll": base + "manifest.mpd",
        "dash_2s": base + "manifest_2s.mpd", "dash_6s": base + "manifest_6s.mpd"}
    assert api.get("/api/content/testclip").json() == item


def test_urls_follow_the_request_host(api) -> None:
    body = api.get("/api/content", host="lab.example:8443").json()
    assert body[0]["urls"]["hls_ll"] == "http://lab.example:8443/go-live/testclip/master.m3u8"


def test_all_lists_unusable_items_with_their_reason(api) -> None:
    body = api.get("/api/content?all=1").json()
    by_name = {i["name"]: i for i in body}
    assert set(by_name) == {"testclip", "broken", "holed", "lost"}
    assert by_name["testclip"]["usable"] is True
    assert by_name["broken"]["usable"] is False and "unreadable" in by_name["broken"]["reason"]
    assert "video/180p/seg_00002.m4s is missing" in by_name["holed"]["reason"]
    assert "content.json is missing" in by_name["lost"]["reason"]
    r = api.get("/api/content/holed")
    assert r.status == 404 and "seg_00002.m4s is missing" in r.json()["reason"]
    log = api.log_text()
    assert "unusable" in log and "holed" in log


def test_generate_byteranges_reindexes_an_item(api) -> None:
    item = os.path.join(api.media_dir, "dynamic_content", "testclip")
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        before = json.load(fh)
    r = api.post("/api/content/testclip/generate-byteranges")
    assert r.status == 200, r.text
    body = r.json()
    assert (body["content"], body["segments"], body["parts"]) == ("testclip", 12, 4 * 30 * 2 + 4 * 32)
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        assert json.load(fh) == before


def test_generate_byteranges_repairs_an_item_without_content_json(api) -> None:
    r = api.post("/api/content/lost/generate-byteranges")
    assert r.status == 200, r.text
    assert r.json()["content"] == "lost"
    assert names(api) == ["lost", "testclip"]  # listed at once: the library was refreshed


def test_generate_byteranges_errors(api) -> None:
    r = api.post("/api/content/nosuch/generate-byteranges")
    assert r.status == 404 and r.json()["error"] == "unknown content"
    r = api.post("/api/content/..%2f..%2fetc/generate-byteranges")
    assert r.status == 404
    r = api.get("/api/content/testclip/generate-byteranges")
    assert r.status == 405 and "POST" in (r.header("allow") or "")
    r = api.post("/api/content/testclip/generate-byteranges", {"force": True})
    assert r.status == 400 and r.json()["fields"] == {"force": "unknown field"}
    os.makedirs(os.path.join(api.media_dir, "dynamic_content", "hollow"))
    r = api.post("/api/content/hollow/generate-byteranges")
    assert r.status == 422 and "init.mp4" in r.json()["detail"]
    assert names(api) == ["testclip"]
    assert not os.path.exists(os.path.join(api.media_dir, "dynamic_content", "hollow", "content.json"))


def test_new_and_removed_items_are_noticed_without_a_restart(api) -> None:
    install_test_item(api.media_dir, "arrived")
    assert "arrived" not in names(api)  # nothing happens between two polls
    api.advance(POLL_INTERVAL)
    assert "arrived" in names(api)
    shutil.rmtree(os.path.join(api.media_dir, "dynamic_content", "arrived"))
    api.advance(POLL_INTERVAL)
    assert "arrived" not in names(api, "?all=1")
