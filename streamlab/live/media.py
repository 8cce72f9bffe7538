"""Serving media files of a content item from disk (streams.md §5).

* :func:`resolve` maps URL path segments to a file inside the item directory, refusing
  ``..``/``.``/empty segments, NUL bytes, separators smuggled in a segment (``%2f``),
  absolute paths and symlinks that leave the item directory (None -> 404).
* :func:`parse_range` implements single byte ranges (``bytes=a-b``, ``bytes=a-``,
  ``bytes=-n``).  A syntactically invalid header is ignored (200 with the whole file, as
  RFC 9110 allows); a header with **several ranges is also ignored** and the whole file is
  answered with 200 (we never build multipart/byteranges bodies); a range starting at or
  beyond the end of the file is unsatisfiable (416 with ``Content-Range: bytes */size``).
* :class:`FileRangeProducer` writes a byte range with a push producer in 128 KiB chunks,
  so a multi-MB segment is never read in one go and a slow client throttles the reads.
* :func:`content_type` picks the type by extension and by top directory
  (``video/`` -> ``video/mp4``, ``audio/`` -> ``audio/mp4``, ``.ts`` -> ``video/mp2t``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from twisted.internet.interfaces import IPushProducer
from twisted.web.iweb import IRequest
from zope.interface import implementer

from streamlab.live.answers import as_held
from streamlab.mediatypes import MEDIA_EXTS as _MEDIA_EXTS
from streamlab.mediatypes import content_type  # noqa: F401 - re-exported for the origin

CHUNK = 128 * 1024


def _segment_ok(seg: str) -> bool:
    return bool(seg) and seg not in (".", "..") and not any(c in seg for c in "/\\\x00")


def resolve(item_dir: str, segments: list[str]) -> tuple[str, str] | None:
    """``(absolute path, relative path)`` of the media file named by URL path *segments*
    (already percent-decoded, one element per ``/``) inside *item_dir*; None when the path
    is not a regular media file strictly inside the item directory."""
    if not segments or not all(_segment_ok(s) for s in segments):
        return None
    rel = "/".join(segments)
    if os.path.splitext(rel)[1].lower() not in _MEDIA_EXTS:
        return None
    root = os.path.realpath(item_dir)
    full = os.path.realpath(os.path.join(root, *segments))
    if not full.startswith(root + os.sep):
        return None
    if not os.path.isfile(full):
        return None
    return full, rel


@dataclass(frozen=True)
class ByteRange:
    """Inclusive byte range ``first``..``last`` of a file of ``size`` bytes."""

    first: int
    last: int
    size: int
    open_ended: bool = False  # ``bytes=N-``: "from N to whatever the end is"

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.size}"


class Unsatisfiable(ValueError):
    """The Range cannot be served from a file of this size (416)."""


_RANGE_RE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range *header* asks for in a file of *size* bytes.

    None means "answer the whole file with 200" (no header, not a bytes range, malformed,
    or several ranges).  Raises :class:`Unsatisfiable` for a well-formed range that does
    not overlap the file."""
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    m = _RANGE_RE.match(spec)
    if m is None:
        return None
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":  # suffix range: the last n bytes
        n = int(b)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - n), size - 1, size)
    first = int(a)
    last = int(b) if b != "" else size - 1
    if b != "" and last < first:
        return None  # invalid: ignore the header
    if first >= size:
        raise Unsatisfiable(header)
    return ByteRange(first, min(last, size - 1), size, open_ended=b == "")


@implementer(IPushProducer)
class FilePushProducer:
    """The push-producer plumbing the origin's file writers share: ``pauseProducing`` and
    ``resumeProducing`` stop and restart :meth:`_pump` (the subclass's writing loop),
    ``stopProducing`` (the client went away) and the end of the data both go through
    :meth:`_end`, which closes the file, unregisters from the request and, when the body
    is complete, finishes it."""

    request: IRequest
    fh: IO[bytes]
    done = False
    paused = False
    registered = False
    _writing = False

    def _pump(self) -> None:
        raise NotImplementedError

    def _on_end(self) -> None:
        """Subclass hook: release whatever else is held (a timer) when the writer ends."""

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.paused = False
        if not self.done:
            self._pump()

    def stopProducing(self) -> None:  # noqa: N802 - IPushProducer
        self._end(False)

    def connection_lost(self, _reason: object = None) -> None:
        """The request's connection is gone (``notifyFinish`` errback): end without touching
        the request again.  By then ``Request.connectionLost`` has dropped its channel, so
        ``unregisterProducer`` would raise; the channel forgot the producer with it."""
        self.registered = False
        self._end(False)

    def _end(self, complete: bool) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._on_end()
            if not self.fh.closed:
                self.fh.close()
        finally:
            if self.registered:
                self.registered = False
                as_held(self.request).unregisterProducer()
            if complete:
                self.request.finish()


class FileRangeProducer(FilePushProducer):
    """Writes ``length`` bytes of an open file from ``offset`` to a request in ``chunk``-sized
    reads, as a push producer: it keeps writing until the transport pauses it (its buffer
    is full) and continues on ``resumeProducing``; at the end it unregisters, closes the
    file and finishes the request.  A slow client therefore throttles the reads and a big
    file is never read in one go.  *rewrite* ``(file offset, bytes) -> bytes`` may patch
    each chunk before it is written (the continuous timeline's decode times)."""

    def __init__(self, request: IRequest, fh: IO[bytes], offset: int, length: int,
                 chunk: int = CHUNK, rewrite: Callable[[int, bytes], bytes] | None = None) -> None:
        self.request = request
        self.fh = fh
        self.remaining = length
        self.chunk = chunk
        self.pos = offset
        self.rewrite = rewrite
        fh.seek(offset)

    def start(self) -> None:
        """Register with the request and write until paused or done."""
        if self.remaining <= 0:
            self._end(True)
            return
        self.registered = True
        as_held(self.request).registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        if self._writing:  # resumeProducing from inside our own write()
            return
        self._writing = True
        try:
            while not self.paused and not self.done:
                data = self.fh.read(min(self.chunk, self.remaining))
                if not data:  # the file shrank under us: end the response
                    self._end(True)
                    return
                self.remaining -= len(data)
                if self.rewrite is not None:
                    data = self.rewrite(self.pos, data)
                self.pos += len(data)
                self.request.write(data)
                if self.remaining <= 0:
                    self._end(True)
        finally:
            self._writing = False
