"""/api/content against the real daemon with real content items in its media_dir."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item


@pytest.fixture(scope="module")
def content_daemon(tmp_path_factory, test_item):
    """A daemon whose media_dir holds testclip, a corrupt item, an item missing a segment
    and an item without content.json (files intact)."""
    d = Daemon(str(tmp_path_factory.mktemp("content-daemon")))
    install_test_item(d.media_dir, "testclip", source=test_item)
    broken = install_test_item(d.media_dir, "broken", source=test_item)
    with open(os.path.join(broken, "content.json"), "w", encoding="utf-8") as fh:
        fh.write('{"format": 1, "tracks": [')
    holed = install_test_item(d.media_dir, "holed", source=test_item)
    os.unlink(os.path.join(holed, "video", "180p", "seg_00002.m4s"))
    lost = install_test_item(d.media_dir, "lost", source=test_item)
    os.unlink(os.path.join(lost, "content.json"))
    d.start()
    yield d
    d.stop()


def _poll(fn, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_list_shows_usable_items_with_absolute_urls(content_daemon) -> None:
    r = content_daemon.get("/api/content")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
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
    base = f"http://127.0.0.1:{content_daemon.port}/go-live/testclip/"
    assert item["urls"] == {
        "hls_ll": base + "master.m3u8", "hls_2s": base + "master_2s.m3u8",
        "hls_6s": base + "master_6s.m3u8", "dash_ll": base + "manifest.mpd",
        "dash_2s": base + "manifest_2s.mpd", "dash_6s": base + "manifest_6s.mpd"}


def test_urls_follow_the_request_host(content_daemon) -> None:
    body = content_daemon.get("/api/content", headers={"Host": "lab.example:8443"}).json()
    assert body[0]["urls"]["hls_ll"] == "http://lab.example:8443/go-live/testclip/master.m3u8"


def test_all_lists_unusable_items_with_their_reason(content_daemon) -> None:
    body = content_daemon.get("/api/content?all=1").json()
    by_name = {i["name"]: i for i in body}
    assert by_name["testclip"]["usable"] is True
    assert by_name["broken"]["usable"] is False and "unreadable" in by_name["broken"]["reason"]
    assert "video/180p/seg_00002.m4s is missing" in by_name["holed"]["reason"]
    assert "content.json is missing" in by_name["lost"]["reason"]
    assert content_daemon.get("/api/content/holed").status == 404
    assert "unusable" in content_daemon.log() and "holed" in content_daemon.log()


def test_generate_byteranges_reindexes_an_item(content_daemon) -> None:
    item = os.path.join(content_daemon.media_dir, "dynamic_content", "testclip")
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        before = json.load(fh)
    r = content_daemon.request("POST", "/api/content/testclip/generate-byteranges")
    assert r.status == 200, r.text
    body = r.json()
    assert (body["content"], body["segments"], body["parts"]) == ("testclip", 12, 4 * 30 * 2 + 4 * 32)
    with open(os.path.join(item, "content.json"), encoding="utf-8") as fh:
        assert json.load(fh) == before


def test_generate_byteranges_repairs_an_item_without_content_json(content_daemon) -> None:
    r = content_daemon.request("POST", "/api/content/lost/generate-byteranges")
    assert r.status == 200, r.text
    assert r.json()["content"] == "lost"
    names = [i["name"] for i in content_daemon.get("/api/content").json()]
    assert names == ["lost", "testclip"]  # listed at once: the library was refreshed


def test_generate_byteranges_errors(content_daemon) -> None:
    r = content_daemon.request("POST", "/api/content/nosuch/generate-byteranges")
    assert r.status == 404 and r.json()["error"] == "unknown content"
    r = content_daemon.request("POST", "/api/content/..%2f..%2fetc/generate-byteranges")
    assert r.status == 404
    assert content_daemon.get("/api/content/testclip/generate-byteranges").status == 405
    empty = os.path.join(content_daemon.media_dir, "dynamic_content", "hollow")
    os.makedirs(empty)
    try:
        r = content_daemon.request("POST", "/api/content/hollow/generate-byteranges")
        assert r.status == 422 and "init.mp4" in r.json()["detail"]
    finally:
        shutil.rmtree(empty)


def test_new_and_removed_items_are_noticed_without_a_restart(content_daemon) -> None:
    install_test_item(content_daemon.media_dir, "arrived")
    _poll(lambda: "arrived" in [i["name"] for i in content_daemon.get("/api/content").json()])
    shutil.rmtree(os.path.join(content_daemon.media_dir, "dynamic_content", "arrived"))
    _poll(lambda: "arrived" not in [i["name"] for i in content_daemon.get("/api/content?all=1").json()])
