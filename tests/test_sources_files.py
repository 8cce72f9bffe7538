"""Moving files into originals/: unique names, never overwriting, listing."""

from __future__ import annotations

import os

from streamlab.sources import files


def test_move_into_picks_a_free_name_and_never_overwrites(tmp_path):
    dest = tmp_path / "originals"
    dest.mkdir()
    (dest / "clip.mp4").write_bytes(b"old")
    moved = []
    for i in range(3):
        src = tmp_path / f"u{i}.part"
        src.write_bytes(b"new%d" % i)
        moved.append(files.move_into(str(src), str(dest), "clip.mp4"))
        assert not src.exists()
    assert [os.path.basename(p) for p in moved] == ["clip_1.mp4", "clip_2.mp4", "clip_3.mp4"]
    assert (dest / "clip.mp4").read_bytes() == b"old"
    assert (dest / "clip_2.mp4").read_bytes() == b"new1"


def test_move_into_without_extension(tmp_path):
    dest = tmp_path / "o"
    src = tmp_path / "a"
    src.write_bytes(b"1")
    assert files.move_into(str(src), str(dest), "passwd") == str(dest / "passwd")
    src.write_bytes(b"2")
    assert files.move_into(str(src), str(dest), "passwd") == str(dest / "passwd_1")


def test_list_originals_skips_hidden_files_and_directories(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"12345")
    (tmp_path / ".incoming-1-x").write_bytes(b"partial")
    (tmp_path / "sub").mkdir()
    os.symlink("/etc/passwd", tmp_path / "link.mp4")
    assert files.list_originals(str(tmp_path)) == [("a.mp4", 5)]
    assert files.list_originals(str(tmp_path / "missing")) == []
