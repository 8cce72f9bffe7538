"""RFC 6381 ``codecs`` strings from a sample entry's decoder configuration record (pure).

Its own module because it changes for its own reason (a new codec, a new profile rule),
not when the box walking of :mod:`streamlab.media.mp4` does.  Every function takes the
sample entry's fourcc and the *payload* of its configuration box (``avcC``, ``hvcC``,
``av1C``, ``esds``; None when the entry has none) and falls back to the bare fourcc
when the record is too short to say more.
"""

from __future__ import annotations

import struct


class TruncatedConfig(ValueError):
    """A configuration record ends inside a field it announces."""


def avc(entry: str, config: bytes | None) -> str:
    """``avc1.PPCCLL`` from an ``avcC`` record (profile, compatibility, level)."""
    if config is None or len(config) < 4:
        return entry
    profile, compat, level = config[1], config[2], config[3]
    return f"{entry}.{profile:02x}{compat:02x}{level:02x}"


def _reverse_bits32(value: int) -> int:
    out = 0
    for _ in range(32):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


def hevc(entry: str, config: bytes | None) -> str:
    """``hvc1.<space><profile>.<compat reversed>.<tier><level>[.<constraints>]`` from ``hvcC``."""
    if config is None or len(config) < 13:
        return entry
    b1 = config[1]
    space = (b1 >> 6) & 0x3
    tier = (b1 >> 5) & 0x1
    profile_idc = b1 & 0x1F
    (compat,) = struct.unpack_from(">I", config, 2)
    constraints = bytes(config[6:12])
    level = config[12]
    parts = [entry, f"{['', 'A', 'B', 'C'][space]}{profile_idc}", f"{_reverse_bits32(compat):X}",
             f"{'H' if tier else 'L'}{level}"]
    trimmed = constraints.rstrip(b"\x00")
    parts.extend(f"{b:X}" for b in trimmed)
    return ".".join(parts)


def av1(entry: str, config: bytes | None) -> str:
    """``av01.<profile>.<level><tier>.<depth>`` from ``av1C``."""
    if config is None or len(config) < 3:
        return entry
    b1, b2 = config[1], config[2]
    profile = (b1 >> 5) & 0x7
    level = b1 & 0x1F
    tier = (b2 >> 7) & 1
    high_bitdepth = (b2 >> 6) & 1
    twelve_bit = (b2 >> 5) & 1
    depth = (12 if twelve_bit else 10) if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{'H' if tier else 'M'}.{depth:02d}"


def _descriptor(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of an MPEG-4 descriptor."""
    if pos + 2 > end:
        raise TruncatedConfig("truncated esds descriptor")
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):
        b = data[pos]
        pos += 1
        length = (length << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return tag, pos, min(pos + length, end)


def mp4a(entry: str, esds: bytes | None) -> str:
    """``mp4a.40.<audio object type>`` from an ``esds`` full box's payload (version and
    flags first), through its ES, DecoderConfig and DecoderSpecificInfo descriptors."""
    if esds is None:
        return entry
    if len(esds) < 4:
        raise TruncatedConfig("esds too short")
    try:
        tag, start, end = _descriptor(esds, 4, len(esds))
        if tag != 0x03:
            return entry
        flags = esds[start + 2]
        pos = start + 3
        if flags & 0x80:
            pos += 2
        if flags & 0x40:
            pos += 1 + esds[pos]
        if flags & 0x20:
            pos += 2
        tag, start, end = _descriptor(esds, pos, end)
        if tag != 0x04:
            return entry
        oti = esds[start]
        pos = start + 13
        if oti != 0x40 or pos >= end:
            return f"{entry}.{oti:x}"
        tag, start, _ = _descriptor(esds, pos, end)
        if tag != 0x05:
            return f"{entry}.40"
        aot = esds[start] >> 3
        if aot == 31:
            aot = 32 + (((esds[start] & 0x7) << 3) | (esds[start + 1] >> 5))
        return f"{entry}.40.{aot}"
    except IndexError:
        return entry
