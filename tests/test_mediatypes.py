"""One Content-Type table: the origin and the session port agree on every media path."""

from __future__ import annotations

import pytest

from streamlab import mediatypes
from streamlab.live.media import content_type as origin_content_type


@pytest.mark.parametrize(("rel", "expected"), [
    ("video/720p/n5.m4s", "video/mp4"),
    ("audio/en/n5.m4s", "audio/mp4"),
    ("audio/en/init.mp4", "audio/mp4"),
    ("video/720p/init.mp4", "video/mp4"),
    ("audio/en/seg_00001.m4a", "audio/mp4"),
    ("video/720p/seg.cmfv", "video/mp4"),
    ("audio/seg.cmfa", "audio/mp4"),
    ("ts/seg_1.ts", "video/mp2t"),
    ("master.m3u8", "application/vnd.apple.mpegurl"),
    ("manifest.mpd", "application/dash+xml"),
    ("subs/en.vtt", "text/vtt"),
    ("readme.txt", "application/octet-stream"),
])
def test_session_port_type_matches_the_origin(rel, expected):
    assert mediatypes.content_type(rel) == expected
    assert origin_content_type(rel) == expected
    # what a session port sends for the same file (used before the origin answers, e.g. a
    # first_byte socket fault): the old listener said video/mp4 for audio .m4s
    assert mediatypes.url_content_type(f"/go-live/item_1/{rel}") == expected.encode()


def test_an_item_named_audio_is_not_an_audio_directory():
    assert mediatypes.url_content_type("/go-live/audio/video/720p/n1.m4s") == b"video/mp4"
    assert mediatypes.url_content_type("/go-live/audio/audio/en/n1.m4s") == b"audio/mp4"
