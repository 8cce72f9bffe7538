"""Pure upload logic: where a chunk goes, Content-Range parsing, completion checks.

No I/O and no time here; the service feeds in the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from streamlab.errors import Conflict, Invalid, TooLarge, Unprocessable

CHUNK_SIZE_HINT = 8 * 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ChunkPlan:
    """What to do with a chunk of *length* bytes at *offset*.

    The first ``compare_len`` bytes of the chunk repeat bytes already received (they must
    equal what is on disk at ``offset``); the rest, ``append_len`` bytes starting at
    chunk position ``compare_len``, are new and go at file offset ``offset + compare_len``
    (which is always the current received size).
    """

    offset: int
    length: int
    compare_len: int
    append_len: int

    @property
    def is_repeat(self) -> bool:
        """The whole chunk was received before."""
        return self.append_len == 0


def plan_chunk(received_size: int, expected_size: int, offset: int, length: int) -> ChunkPlan:
    """Classify a chunk against the bytes received so far.

    * ``offset == received_size``: plain append.
    * ``offset < received_size``: a repeat (or a repeat that also extends the file); the
      overlapping bytes must match, which the caller checks against the file.
    * ``offset > received_size``: a gap -> 409 Conflict with ``received_size``.
    * a chunk that would end past ``expected_size`` -> 409 Conflict as well.
    """
    if offset < 0 or length < 0:
        raise Invalid("invalid chunk", detail="offset and length must not be negative")
    if offset > received_size:
        raise Conflict("chunk out of order", detail=f"expected offset {received_size}, got {offset}",
                       received_size=received_size, expected_size=expected_size)
    if offset + length > expected_size:
        raise Conflict("chunk beyond end of file",
                       detail=f"chunk ends at {offset + length}, file_size is {expected_size}",
                       received_size=received_size, expected_size=expected_size)
    compare_len = min(length, received_size - offset)
    return ChunkPlan(offset=offset, length=length, compare_len=compare_len, append_len=length - compare_len)


def mismatch(received_size: int, expected_size: int) -> Conflict:
    """The 409 for a repeated chunk whose bytes differ from what was received."""
    return Conflict("chunk differs from received data",
                    detail="bytes at this offset were already received with different content",
                    received_size=received_size, expected_size=expected_size)


def parse_offset(value: str | None) -> int | None:
    """An ``offset`` query/form value (None when absent)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if not text.isdecimal():
        raise Invalid("invalid offset", detail=value, fields={"offset": "a byte offset (integer >= 0)"})
    return int(text)


def parse_content_range(header: str | None, body_length: int) -> int | None:
    """Offset from ``Content-Range: bytes START-END/TOTAL`` (None when absent).

    The range must match the body length (400 otherwise).
    """
    if header is None or header.strip() == "":
        return None
    match = _CONTENT_RANGE_RE.match(header)
    if not match:
        raise Invalid("invalid Content-Range", detail=header)
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or end - start + 1 != body_length:
        raise Invalid("invalid Content-Range",
                      detail=f"{header} does not match a body of {body_length} bytes")
    return start


def parse_sha256(value: Any, field: str = "sha256") -> str | None:
    """A lower-case hex SHA-256 (None when absent; 400 when malformed)."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    text = str(value).strip().lower()
    if not _SHA256_RE.match(text):
        raise Invalid("invalid sha256", detail="64 hexadecimal characters expected",
                      fields={field: "64 hexadecimal characters"})
    return text


def parse_file_size(value: Any, limit: int) -> int:
    """``file_size`` of an upload: a positive integer not above *limit* (413 when above)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or value is None or value == "":
        raise Invalid("invalid upload", detail="file_size is required", fields={"file_size": "required"})
    try:
        size = int(str(value).strip())
    except ValueError:
        raise Invalid("invalid upload", detail="file_size must be an integer",
                      fields={"file_size": "an integer number of bytes"}) from None
    if size <= 0:
        raise Invalid("invalid upload", detail="file_size must be positive", fields={"file_size": "> 0"})
    if size > limit:
        raise TooLarge("upload too large", detail=f"file_size {size} exceeds max_upload_bytes {limit}",
                       limit=limit, file_size=size)
    return size


def check_complete(expected_size: int, received_size: int, expected_sha256: str | None,
                   actual_sha256: str | None) -> None:
    """422 when the upload is short/long or its hash differs (the upload stays resumable)."""
    if received_size != expected_size:
        raise Unprocessable("size mismatch",
                            detail=f"received {received_size} of {expected_size} bytes",
                            expected_size=expected_size, received_size=received_size)
    if expected_sha256 is not None and actual_sha256 != expected_sha256:
        raise Unprocessable("sha256 mismatch", detail="the received bytes hash differently",
                            expected_sha256=expected_sha256, actual_sha256=actual_sha256,
                            received_size=received_size)


def chunk_size_hint(expected_size: int) -> int:
    """Suggested chunk size for a client (whole file when small)."""
    return max(1, min(CHUNK_SIZE_HINT, expected_size))
