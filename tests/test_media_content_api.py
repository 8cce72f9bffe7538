"""Pure parts of /api/content: URL base and the list entry of an item."""

from __future__ import annotations

from twisted.web.test.requesthelper import DummyRequest

from streamlab.api.content import base_url, describe
from streamlab.media.index import load_item


def _request(host: bytes | None, secure: bool = False) -> DummyRequest:
    req = DummyRequest([b"api", b"content"])
    if host is not None:
        req.requestHeaders.setRawHeaders(b"host", [host])
    req.isSecure = lambda: secure  # type: ignore[method-assign]
    return req


def test_base_url_uses_the_host_header_or_the_advertised_host() -> None:
    assert base_url(_request(b"10.0.0.5:30000")) == "http://10.0.0.5:30000"
    assert base_url(_request(b"box.lan"), "") == "http://box.lan"
    assert base_url(_request(b"10.0.0.5:30000", secure=True)) == "https://10.0.0.5:30000"
    assert base_url(_request(b"10.0.0.5:30000"), "lab.example") == "http://lab.example:30000"
    assert base_url(_request(b"10.0.0.5:30000"), "lab.example:8080") == "http://lab.example:8080"
    assert base_url(_request(b"[::1]:30000"), "lab.example") == "http://lab.example:30000"
    assert base_url(_request(b"[::1]:30000")) == "http://[::1]:30000"


def test_describe_lists_variants_best_first_and_every_stream_url(test_item: str) -> None:
    entry = describe(load_item(test_item), "http://h:1")
    assert entry["max_resolution"] == "360p" and entry["max_height"] == 360
    assert [v["id"] for v in entry["variants"]] == ["360p", "180p"]
    assert entry["audio"][0]["codecs"] == "mp4a.40.2"
    assert set(entry["urls"]) == {"hls_ll", "hls_2s", "hls_6s", "dash_ll", "dash_2s", "dash_6s"}
    assert entry["urls"]["dash_2s"] == "http://h:1/go-live/testclip/manifest_2s.mpd"
    assert entry["has_ts"] is False


def test_describe_adds_the_ts_url_for_items_with_ts(test_item_ts: str) -> None:
    entry = describe(load_item(test_item_ts), "http://h:1")
    assert entry["has_ts"] is True
    assert entry["urls"]["hls_6s_ts"] == "http://h:1/go-live/testclip/master_6s.m3u8?format=ts"
