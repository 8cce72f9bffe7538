"""The upstream relay with fake collaborators: back-pressure, honest endings, timeouts and
failures (a Clock drives time; the upstream client is a stub returning Deferreds)."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from streamlab.upstream import paths
from streamlab.upstream.detect import ManifestInfo
from streamlab.upstream.resource import BLOCKING_ALLOWANCE, BodyRelay, UpstreamFetch
from streamlab.upstream.service import Upstream


class FakeTransport:
    """The upstream connection as the relay sees it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:  # noqa: N802
        self.calls.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802
        self.calls.append("resume")

    def stopProducing(self) -> None:  # noqa: N802
        self.calls.append("stop")


class ClientTransport:
    aborted = False

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True


class Req(DummyRequest):
    """DummyRequest with what the relay reads: uri, startedWriting, a channel transport."""

    def __init__(self, path: bytes) -> None:
        super().__init__(path.lstrip(b"/").split(b"/"))
        self.uri = path
        self.startedWriting = False
        self.channel = type("C", (), {"transport": ClientTransport()})()

    def write(self, data: bytes) -> None:
        self.startedWriting = True
        super().write(data)

    def registerProducer(self, producer, streaming) -> None:  # noqa: N802
        self.producer, self.streamingProducer = producer, streaming

    def unregisterProducer(self) -> None:  # noqa: N802
        self.producer = None


class FakeResponse:
    def __init__(self, code: int, headers: dict[bytes, bytes], body: list[bytes], length: int | None) -> None:
        self.code = code
        self.headers = Headers({k: [v] for k, v in headers.items()})
        self.body = body
        self.length = length
        self.transport = FakeTransport()
        self.protocol = None

    def deliverBody(self, protocol) -> None:  # noqa: N802
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        for chunk in self.body:
            protocol.dataReceived(chunk)


class StubClient:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, str, dict]] = []
        self.pending: list[defer.Deferred] = []

    def request(self, method: bytes, url: str, extra=None) -> defer.Deferred:
        self.requests.append((method, url, dict(extra or {})))
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


def _upstream(client: StubClient) -> Upstream:
    return Upstream("up", "http://cdn.test/live/master.m3u8", {}, True,
                    ManifestInfo("hls", False, True, 1), 0.0, client)


def _fetch(path: str, timeout: float = 5.0) -> tuple[UpstreamFetch, Req, StubClient, Clock]:
    clock, client = Clock(), StubClient()
    req = Req(path.encode())
    rest = path.split("?", 1)[0].removeprefix("/go-live/up/")
    fetch = UpstreamFetch(_upstream(client), req, rest, clock, timeout, 1 << 20)
    fetch.start()
    return fetch, req, client, clock


def test_segment_streams_with_backpressure_and_its_length():
    fetch, req, client, clock = _fetch("/go-live/up/live/v/seg_1.m4s")
    assert client.requests[0][1] == "http://cdn.test/live/v/seg_1.m4s"
    clock.advance(0.25)
    resp = FakeResponse(200, {b"content-type": b"video/mp4"}, [b"a" * 10], length=20)
    client.pending[0].callback(resp)
    relay = resp.protocol
    assert isinstance(relay, BodyRelay) and req.producer is relay and req.streamingProducer
    assert req.responseHeaders.getRawHeaders(b"content-length") == [b"20"]
    assert req.written == [b"a" * 10] and fetch.info["ttfb_ms"] == 250.0
    relay.pauseProducing()  # the player's socket is full
    relay.resumeProducing()
    assert resp.transport.calls == ["pause", "resume"]
    relay.dataReceived(b"b" * 10)
    relay.connectionLost(Failure(ResponseDone()))
    assert req.finished == 1 and b"".join(req.written) == b"a" * 10 + b"b" * 10
    assert not req.channel.transport.aborted and fetch.info["failure"] == ""


def test_upstream_breaking_mid_body_aborts_the_player_connection():
    fetch, req, client, _clock = _fetch("/go-live/up/live/v/seg_1.m4s")
    resp = FakeResponse(200, {}, [b"x" * 5], length=100)
    client.pending[0].callback(resp)
    resp.protocol.connectionLost(Failure(ResponseFailed([Failure(ConnectionRefusedError())])))
    assert req.channel.transport.aborted and req.finished == 0


def test_client_leaving_stops_the_upstream_body():
    fetch, req, client, _clock = _fetch("/go-live/up/live/v/seg_1.m4s")
    resp = FakeResponse(200, {}, [b"x"], length=10)
    client.pending[0].callback(resp)
    req.processingFailed(Failure(ConnectionRefusedError()))  # notifyFinish errback: client gone
    assert resp.transport.calls == ["stop"]


def test_no_answer_is_a_504_and_refused_a_502_logged_as_upstream():
    fetch, req, client, clock = _fetch("/go-live/up/live/v/seg_1.m4s", timeout=2.0)
    clock.advance(1.9)
    assert not req.written
    clock.advance(0.2)  # the Deferred is cancelled
    assert req.responseCode == 504
    body = json.loads(b"".join(req.written))
    assert body["error"] == "upstream timeout" and body["upstream"] == "up"
    assert fetch.info["failure"] == "upstream_timeout"
    fetch, req, client, clock = _fetch("/go-live/up/live/v/seg_1.m4s")
    client.pending[0].errback(Failure(ConnectionRefusedError()))
    assert req.responseCode == 502 and json.loads(b"".join(req.written))["error"] == "upstream refused"
    assert fetch.info["failure"] == "upstream_refused" and not clock.getDelayedCalls()


def test_upstream_status_passes_through_and_is_marked():
    fetch, req, client, _clock = _fetch("/go-live/up/live/v/seg_9.m4s")
    client.pending[0].callback(FakeResponse(404, {b"content-type": b"text/html"}, [b"nope"], length=4))
    assert req.responseCode == 404 and req.written == [b"nope"]
    assert fetch.info["failure"] == "upstream_404" and fetch.info["status"] == 404


def test_playlist_is_rewritten_and_blocking_reload_passes_through_with_more_time():
    fetch, req, client, clock = _fetch("/go-live/up/playlist_live~v~index.m3u8?_HLS_msn=9&_HLS_part=1",
                                       timeout=2.0)
    assert client.requests[0][1] == "http://cdn.test/live/v/index.m3u8?_HLS_msn=9&_HLS_part=1"
    assert fetch.timeout == 2.0 + BLOCKING_ALLOWANCE
    clock.advance(5.0)  # held by the upstream: not a timeout
    assert not req.written
    playlist = b'#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2,\nseg_9.m4s\n'
    resp = FakeResponse(200, {}, [playlist], length=None)
    client.pending[0].callback(resp)
    resp.protocol.connectionLost(Failure(ResponseDone()))
    text = b"".join(req.written).decode()
    assert 'URI="/go-live/up/live/v/init.mp4"' in text and "\n/go-live/up/live/v/seg_9.m4s\n" in text
    assert req.responseHeaders.getRawHeaders(b"content-length") == [str(len(text)).encode()]
    assert not clock.getDelayedCalls()


def test_origin_path_mapping_is_the_same_one_the_relay_uses():
    origin = paths.Origin("http://cdn.test/live/master.m3u8")
    assert paths.upstream_url(origin, "master.m3u8") == "http://cdn.test/live/master.m3u8"
