"""An independent ISO-BMFF reader for tests: walks boxes by hand (not the package's parser),
so tests that check the origin's rewritten bytes do not trust the code under test."""

from __future__ import annotations

import struct
from collections.abc import Iterator


def _boxes(buf: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos < end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        yield kind, pos + 8, pos + size
        pos += size


def walk_tfdt(data: bytes) -> list[int]:
    """Every moof/traf/tfdt baseMediaDecodeTime of *data*, in file order."""
    out = []
    for kind, a, b in _boxes(data, 0, len(data)):
        if kind != b"moof":
            continue
        for k2, a2, b2 in _boxes(data, a, b):
            if k2 != b"traf":
                continue
            for k3, a3, _b3 in _boxes(data, a2, b2):
                if k3 == b"tfdt":
                    fmt = ">Q" if data[a3] == 1 else ">I"
                    out.append(struct.unpack_from(fmt, data, a3 + 4)[0])
    return out
