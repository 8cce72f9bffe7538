"""Streaming multipart/form-data parsing of a request body that is already on disk.

twisted.web's own form parsing reads the whole body into memory on the reactor thread,
so upload paths switch it off (:mod:`streamlab.uploads.request`) and parse here, in a
thread, block by block with :class:`multipart.PushMultipartParser`: the ``file`` part
streams straight into its destination file, other fields are small strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import IO, Any

import multipart

from streamlab.errors import Invalid, TooLarge

BLOCK = 1024 * 1024
FIELD_LIMIT = 64 * 1024
MAX_FIELDS = 200


@dataclass
class FormResult:
    """Fields (name -> values) and what was seen of the file part."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    has_file: bool = False
    filename: str = ""
    file_size: int = 0
    sha256: str = ""


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type (400 when missing)."""
    ctype, options = multipart.parse_options_header(content_type)
    if ctype != "multipart/form-data" or not options.get("boundary"):
        raise Invalid("invalid form", detail="multipart/form-data with a boundary expected")
    return str(options["boundary"])


def parse_multipart(content: IO[bytes], content_type: str, *, file_field: str = "file",
                    file_dest: IO[bytes] | None = None, file_limit: int | None = None) -> FormResult:
    """Parse the whole body in *content* (blocking; run in a thread).

    The bytes of the *file_field* part are written to *file_dest* (or only counted when
    it is None) and hashed.  Other parts become text fields.  Malformed input is 400;
    a file part above *file_limit* is 413.
    """
    parser = multipart.PushMultipartParser(boundary_of(content_type), max_header_size=8192,
                                           max_header_count=16)
    result = FormResult()
    hasher = hashlib.sha256()
    current: Any = None
    is_file = False
    buf: list[bytes] = []
    buf_size = 0
    content.seek(0)
    try:
        while not parser.closed:
            block = content.read(BLOCK)
            for event in parser.parse(block):
                if isinstance(event, multipart.MultipartSegment):
                    current = event
                    is_file = event.name == file_field and (event.filename is not None)
                    if is_file:
                        if result.has_file:
                            raise Invalid("invalid form", detail=f"more than one {file_field!r} part")
                        result.has_file = True
                        result.filename = event.filename or ""
                    buf, buf_size = [], 0
                elif event is None:
                    if current is not None and not is_file:
                        if len(result.fields) >= MAX_FIELDS:
                            raise Invalid("invalid form", detail="too many fields")
                        text = b"".join(buf).decode("utf-8", "replace")
                        result.fields.setdefault(current.name, []).append(text)
                    current = None
                elif is_file:
                    result.file_size += len(event)
                    if file_limit is not None and result.file_size > file_limit:
                        raise TooLarge("upload too large", detail=f"over max_upload_bytes {file_limit}",
                                       limit=file_limit)
                    hasher.update(event)
                    if file_dest is not None:
                        file_dest.write(event)
                else:
                    buf_size += len(event)
                    if buf_size > FIELD_LIMIT:
                        raise Invalid("invalid form", detail=f"field {current.name!r} is too long")
                    buf.append(event)
            if not block:
                break
        if not parser.closed:
            raise Invalid("invalid form", detail="multipart body ends early")
    except multipart.MultipartError as exc:
        raise Invalid("invalid form", detail=f"malformed multipart body: {exc}") from None
    finally:
        parser.close(check_complete=False)
    result.sha256 = hasher.hexdigest()
    return result


def flatten(fields: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields as the option parsers expect: one value -> str, ``x[]``/repeats -> list."""
    out: dict[str, Any] = {}
    for name, values in fields.items():
        out[name] = values if name.endswith("[]") or len(values) > 1 else values[0]
    return out
