"""The origin's byte-range helpers: Range header parsing and the push producer that
writes a file range with back-pressure (pause/resume/stop as a transport drives it)."""

from __future__ import annotations

import io

import pytest

from streamlab.live.media import ByteRange, FileRangeProducer, Unsatisfiable, parse_range


class _Request:
    """Just what a producer uses of a twisted.web request."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer = None
        self.finished = 0

    def registerProducer(self, producer, streaming):  # noqa: N802
        assert streaming is True
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished += 1


class _PausingRequest(_Request):
    """A transport whose buffer fills after every *n* writes."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.written) % self.n == 0:
            self.producer.pauseProducing()


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 100, None),
    ("bytes=0-9", 100, ByteRange(0, 9, 100)),
    ("bytes=90-", 100, ByteRange(90, 99, 100, open_ended=True)),
    ("bytes=-10", 100, ByteRange(90, 99, 100)),
    ("bytes=95-200", 100, ByteRange(95, 99, 100)),
    ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file
    ("items=0-1", 100, None),
    ("bytes=9-3", 100, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_producer_writes_the_range_in_chunks_and_finishes_once():
    fh = io.BytesIO(bytes(range(256)) * 4)
    req = _Request()
    FileRangeProducer(req, fh, 10, 1000, chunk=300).start()
    assert [len(c) for c in req.written] == [300, 300, 300, 100]
    assert b"".join(req.written) == (bytes(range(256)) * 4)[10:1010]
    assert req.finished == 1 and req.producer is None and fh.closed


def test_producer_stops_on_pause_and_continues_on_resume():
    fh = io.BytesIO(b"x" * 1000)
    req = _PausingRequest(2)
    p = FileRangeProducer(req, fh, 0, 1000, chunk=100)
    p.start()
    assert len(req.written) == 2 and not req.finished  # the transport said "full"
    p.resumeProducing()
    assert len(req.written) == 4
    while not req.finished:
        p.resumeProducing()
    assert sum(map(len, req.written)) == 1000 and req.finished == 1 and fh.closed
    p.resumeProducing()  # a late resume after the end writes nothing
    assert sum(map(len, req.written)) == 1000 and req.finished == 1


def test_producer_stopped_by_the_client_leaving_closes_the_file_without_finishing():
    fh = io.BytesIO(b"x" * 1000)
    req = _PausingRequest(1)
    p = FileRangeProducer(req, fh, 0, 1000, chunk=100)
    p.start()
    p.stopProducing()
    assert fh.closed and req.producer is None and req.finished == 0
    p.resumeProducing()
    assert len(req.written) == 1


def test_file_shrinking_under_the_producer_ends_the_response():
    fh = io.BytesIO(b"x" * 150)
    req = _Request()
    FileRangeProducer(req, fh, 0, 1000, chunk=100).start()
    assert sum(map(len, req.written)) == 150 and req.finished == 1 and fh.closed


def test_connection_lost_ends_the_producer_without_touching_the_gone_channel():
    """A real twisted.web Request on a StringTransport: when the connection drops while a
    producer is registered, ``Request.connectionLost`` clears the channel before the
    ``notifyFinish`` errbacks run, so the producer's end path must not unregister."""
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure
    from twisted.web.http import HTTPChannel, Request

    channel = HTTPChannel()
    channel.makeConnection(StringTransport())
    request = Request(channel)
    fh = io.BytesIO(b"x" * 1000)
    p = FileRangeProducer(request, fh, 0, 1000, chunk=100)
    p.pauseProducing()
    p.start()
    errors: list[Failure] = []
    d = request.notifyFinish()
    d.addErrback(p.connection_lost)
    d.addErrback(errors.append)
    request.connectionLost(Failure(ConnectionDone()))
    assert errors == [] and p.done and fh.closed
    p.stopProducing()  # a late stop from the transport is harmless
