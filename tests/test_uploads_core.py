"""Pure upload logic: chunk placement, Content-Range, size/hash checks, file names."""

from __future__ import annotations

import hashlib
import io

import pytest

from streamlab.errors import Conflict, Invalid, TooLarge, Unprocessable
from streamlab.sources.files import safe_filename, source_name
from streamlab.uploads import core
from streamlab.uploads.partfile import apply_chunk, hash_file


def test_append_at_received_size():
    plan = core.plan_chunk(received_size=100, expected_size=1000, offset=100, length=50)
    assert (plan.compare_len, plan.append_len) == (0, 50)
    assert not plan.is_repeat


def test_repeat_of_known_chunk_is_a_comparison_only():
    plan = core.plan_chunk(received_size=100, expected_size=1000, offset=50, length=50)
    assert (plan.compare_len, plan.append_len) == (50, 0)
    assert plan.is_repeat


def test_overlap_compares_then_appends():
    plan = core.plan_chunk(received_size=100, expected_size=1000, offset=80, length=50)
    assert (plan.compare_len, plan.append_len) == (20, 30)


def test_gap_is_409_with_received_size():
    with pytest.raises(Conflict) as info:
        core.plan_chunk(received_size=100, expected_size=1000, offset=150, length=10)
    assert info.value.body()["received_size"] == 100


def test_chunk_past_the_end_is_409():
    with pytest.raises(Conflict) as info:
        core.plan_chunk(received_size=990, expected_size=1000, offset=990, length=20)
    assert info.value.body()["received_size"] == 990


def test_content_range():
    assert core.parse_content_range("bytes 100-199/1000", 100) == 100
    assert core.parse_content_range("bytes 0-9/*", 10) == 0
    assert core.parse_content_range(None, 5) is None
    for bad in ("bytes 100-199/1000x", "items 0-1/2", "bytes 5-1/10"):
        with pytest.raises(Invalid):
            core.parse_content_range(bad, 100)
    with pytest.raises(Invalid):
        core.parse_content_range("bytes 0-99/1000", 50)  # body shorter than the range


def test_offset_and_sha_and_size_validation():
    assert core.parse_offset("42") == 42
    assert core.parse_offset(None) is None
    with pytest.raises(Invalid):
        core.parse_offset("-1")
    digest = hashlib.sha256(b"x").hexdigest()
    assert core.parse_sha256(digest.upper()) == digest
    with pytest.raises(Invalid):
        core.parse_sha256("abc")
    assert core.parse_file_size("10", 100) == 10
    with pytest.raises(TooLarge):
        core.parse_file_size(101, 100)
    for bad in (None, "", "ten", 0, -5, True):
        with pytest.raises(Invalid):
            core.parse_file_size(bad, 100)


def test_complete_checks_size_then_hash():
    with pytest.raises(Unprocessable) as info:
        core.check_complete(100, 90, None, None)
    assert info.value.body()["received_size"] == 90 and info.value.body()["expected_size"] == 100
    with pytest.raises(Unprocessable) as info:
        core.check_complete(100, 100, "a" * 64, "b" * 64)
    body = info.value.body()
    assert body["expected_sha256"] == "a" * 64 and body["actual_sha256"] == "b" * 64
    core.check_complete(100, 100, None, "b" * 64)
    core.check_complete(100, 100, "b" * 64, "b" * 64)


def _upload(tmp_path, chunks, expected):
    """Drive apply_chunk like the service does; returns (file bytes, hasher, outcomes)."""
    part = tmp_path / "u.part"
    part.write_bytes(b"")
    hasher = hashlib.sha256()
    received = 0
    outcomes = []
    for offset, data in chunks:
        try:
            plan = core.plan_chunk(received, expected, offset, len(data))
        except Conflict:
            outcomes.append("409")
            continue
        new = apply_chunk(str(part), plan, io.BytesIO(data), 0, hasher)
        if new is None:
            outcomes.append("mismatch")
            continue
        hasher = new
        received = max(received, offset + len(data))
        outcomes.append("ok")
    return part.read_bytes(), hasher, outcomes


def test_retried_and_out_of_order_chunks_end_with_the_right_bytes(tmp_path):
    data = bytes(range(256)) * 40
    chunks = [(0, data[:4000]), (4000, data[4000:8000]), (4000, data[4000:8000]),  # retry
              (9000, data[9000:]),  # out of order: gap
              (8000, data[8000:]), (6000, data[6000:7000])]  # late duplicate
    content, hasher, outcomes = _upload(tmp_path, chunks, len(data))
    assert outcomes == ["ok", "ok", "ok", "409", "ok", "ok"]
    assert content == data
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_repeat_with_different_bytes_changes_nothing(tmp_path):
    data = b"a" * 100 + b"b" * 100
    content, hasher, outcomes = _upload(tmp_path, [(0, data[:100]), (50, b"X" * 100)], len(data))
    assert outcomes == ["ok", "mismatch"]
    assert content == data[:100]
    assert hasher.hexdigest() == hashlib.sha256(data[:100]).hexdigest()


def test_restart_rehash_drops_unacknowledged_bytes(tmp_path):
    part = tmp_path / "p.part"
    part.write_bytes(b"0123456789extra")
    hasher, present = hash_file(str(part), 10)
    assert present == 10 and part.read_bytes() == b"0123456789"
    assert hasher.hexdigest() == hashlib.sha256(b"0123456789").hexdigest()
    hasher, present = hash_file(str(part), 50)  # fewer bytes on disk than acknowledged
    assert present == 10


@pytest.mark.parametrize(("raw", "expected"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system.ini", "system.ini"),
    ("My Clip (final).MP4", "My_Clip_final.mp4"),
    ("...", "upload"),
    (".hidden.mov", "hidden.mov"),
    ("", "upload"),
    ("séance.mkv", "seance.mkv"),
])
def test_safe_filename(raw, expected):
    assert safe_filename(raw) == expected


def test_source_name():
    assert source_name("clip.mp4") == "clip"
    assert source_name("noext") == "noext"
