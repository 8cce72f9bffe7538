"""Fixtures shared by every test module (unit and integration)."""

from __future__ import annotations

import pytest

from streamlab.testing.fixtures import cached_test_item


@pytest.fixture(scope="session")
def test_item(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path (str) of a real, read-only content item directory, built ONCE per test run.

    ``<tmp>/fmp4/dynamic_content/testclip/`` made by ``python -m streamlab.media
    make-test-item``: name ``testclip``, codec ``h264``, 24 s loop = 4 segments of 6.0 s,
    parts of 0.2 s (video: exactly 6 frames at 30 fps, 30 parts per segment, every 5th
    independent = 1 s closed GOPs; audio: 0.192 s = 9 AAC frames, 32 parts per segment,
    the last one shorter), tracks in this order: ``360p`` (640x360, ~600 kbps),
    ``180p`` (320x180, ~250 kbps), ``audio`` (AAC-LC 48 kHz stereo, id ``audio``).  Frames
    show a burned-in frame number (0-based, counting from the start of the loop) and a
    rung label.  Do not modify it: copy it into a daemon's media_dir with
    ``streamlab.testing.fixtures.install_test_item(media_dir, name="testclip")``
    (which reuses this same build)."""
    return cached_test_item(base_dir=str(tmp_path_factory.mktemp("test-item")))


@pytest.fixture(scope="session")
def test_item_ts(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like ``test_item`` but also with MPEG-TS renditions (``ts/<rung>/seg_NNNNN.ts``,
    video + audio muxed, listed in content.json as tracks with ``"container": "ts"``);
    install it with ``install_test_item(media_dir, name, ts=True)``."""
    return cached_test_item(ts=True, base_dir=str(tmp_path_factory.mktemp("test-item-ts")))
