"""The userspace shaper's protocol wrapper on a Clock and StringTransport: pacing by the
shared per-port bucket, bounded buffering with producer back-pressure, read delay, loss
stalls (seeded per port), DROP and REJECT."""

from __future__ import annotations

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from streamlab.shaping.userspace import HIGH_WATER, UserspaceBackend


@implementer(IPushProducer)
class Source(Protocol):
    """A wrapped protocol that streams *total* bytes as a push producer (like a file body)."""

    def __init__(self, total=4_000_000):
        self.total = total
        self.sent = 0
        self.paused = False
        self.received = []
        self.lost = False

    def connectionMade(self):
        self.transport.registerProducer(self, True)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.lost = True

    def pump(self, n=65536):
        while not self.paused and self.sent < self.total:
            k = min(n, self.total - self.sent)
            self.sent += k
            self.transport.write(b"x" * k)

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        pass


def connect(backend, port, proto):
    factory = backend.wrap(port, Factory.forProtocol(lambda: proto))
    wrapper = factory.buildProtocol(None)
    transport = StringTransport()
    wrapper.makeConnection(transport)
    return wrapper, transport


def run(clock, seconds, protos, tick=0.005):
    for _ in range(int(seconds / tick)):
        for p in protos:
            p.pump()
        clock.advance(tick)


def test_rate_is_paced_by_the_port_bucket():
    clock = Clock()
    backend = UserspaceBackend(clock)
    shaper = backend.shaper(30181)
    shaper.configure(8.0)  # 1 MB/s
    src = Source()
    _, transport = connect(backend, 30181, src)
    run(clock, 2.0, [src])
    got = len(transport.value())
    assert 0.97 * 2_000_000 <= got <= 1.02 * 2_000_000
    # memory stays bounded: the producer was paused, not everything buffered
    assert src.sent - got <= HIGH_WATER + 65536


def test_connections_of_one_port_share_the_cap():
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(30181).configure(8.0)
    a, b = Source(), Source()
    _, ta = connect(backend, 30181, a)
    _, tb = connect(backend, 30181, b)
    other = Source()
    backend.shaper(30182).configure(16.0)
    _, tc = connect(backend, 30182, other)
    run(clock, 2.0, [a, b, other])
    total = len(ta.value()) + len(tb.value())
    assert 0.97 * 2_000_000 <= total <= 1.02 * 2_000_000
    assert abs(len(ta.value()) - len(tb.value())) < 0.1 * total
    assert 0.97 * 4_000_000 <= len(tc.value()) <= 1.02 * 4_000_000  # another port is not affected


def test_zero_rate_stalls_and_new_rate_resumes():
    clock = Clock()
    backend = UserspaceBackend(clock)
    sh = backend.shaper(1)
    sh.configure(8.0)
    src = Source()
    _, t = connect(backend, 1, src)
    run(clock, 0.5, [src])
    sh.configure(0.0)
    before = len(t.value())
    run(clock, 1.0, [src])
    assert len(t.value()) == before
    sh.configure(4.0)
    run(clock, 1.0, [src])
    assert 0.95 * 500_000 <= len(t.value()) - before <= 1.05 * 500_000


def test_uncapped_passes_through():
    clock = Clock()
    backend = UserspaceBackend(clock)
    src = Source(total=1_000_000)
    _, t = connect(backend, 2, src)
    src.pump()
    assert len(t.value()) == 1_000_000
    assert backend.shaper(2).bytes_out == 1_000_000


def test_reads_are_delayed():
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(3).configure(None, delay_ms=250)
    src = Source(total=0)
    w, _ = connect(backend, 3, src)
    w.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
    clock.advance(0.2)
    assert src.received == []
    clock.advance(0.06)
    assert src.received == [b"GET / HTTP/1.1\r\n\r\n"]
    # the protocol above can see how long the bytes it is given were held (issue 12 item 8)
    assert abs(w.held_for - 0.26) < 1e-6  # delivered at the clock step after 0.25 s
    backend.shaper(3).configure(None, delay_ms=0)
    w.dataReceived(b"x")
    assert w.held_for == 0.0


def loss_trace(port):
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(port).configure(None, loss_pct=30)
    src = Source(total=64 * 65536)
    _, t = connect(backend, port, src)
    trace = []
    for _ in range(1000):
        src.pump()
        clock.advance(0.01)
        trace.append(len(t.value()))
    return trace


def test_loss_stalls_blocks_deterministically_per_port():
    a, b = loss_trace(4), loss_trace(4)
    assert a == b  # same seed, same stalls
    assert a != loss_trace(5)
    # stalls happened: without loss everything would be out at the first tick
    assert a[0] < 64 * 65536 and a[-1] == 64 * 65536


def test_drop_holds_and_release_resumes():
    clock = Clock()
    backend = UserspaceBackend(clock)
    sh = backend.shaper(6)
    sh.configure(8.0)
    src = Source()
    w, t = connect(backend, 6, src)
    run(clock, 0.2, [src])
    sh.set_fault("drop")
    assert t.producerState == "paused"  # not reading
    held = len(t.value())
    run(clock, 0.5, [src])
    assert len(t.value()) == held  # not writing
    w.dataReceived(b"more")
    # a new connection is accepted but hangs
    late = Source(total=0)
    w2, t2 = connect(backend, 6, late)
    assert t2.producerState == "paused"
    assert sh.refused_drop == 2
    sh.set_fault("none")
    run(clock, 0.2, [src])
    assert len(t.value()) > held and t.producerState == "producing"
    assert src.received == [b"more"]


def test_reject_resets_existing_and_new_connections():
    clock = Clock()
    backend = UserspaceBackend(clock)
    sh = backend.shaper(7)
    src = Source(total=0)
    _, t = connect(backend, 7, src)
    sh.set_fault("reject")
    assert t.disconnected  # aborted, not closed (with SO_LINGER 0 on a real socket: RST)
    late = Source(total=0)
    _, t2 = connect(backend, 7, late)
    assert t2.disconnected
    assert late.received == [] and sh.refused_reject == 2


def test_removed_port_starts_clean():
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(8).configure(1.0)
    backend.shaper(8).set_fault("drop")
    backend.remove(8)
    sh = backend.shaper(8)
    assert sh.rate_mbps is None and sh.fault == "none" and sh.passthrough


def test_late_timers_are_caught_up_while_backlogged():
    """A busy reactor wakes the shaper late; the port still gets its rate (never more)."""
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(9).configure(8.0)
    src = Source()
    _, t = connect(backend, 9, src)
    run(clock, 3.0, [src], tick=0.06)  # every wake-up ~50 ms late
    got = len(t.value())
    assert 0.97 * 3_000_000 <= got <= 1.02 * 3_000_000


class Closer(Protocol):
    """Answers the first bytes it reads with *reply* and closes (like an HTTP/1.0 response)."""

    def __init__(self, reply=b"HTTP/1.0 200 OK\r\n\r\nbody"):
        self.reply = reply
        self.lost = False

    def dataReceived(self, data):
        self.transport.write(self.reply)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.lost = True


def _tls_pair(tmp_path, inner, shaped=True, rate=None):
    """The daemon's TLS wrapper (over the shaper) on a StringTransport, and a real
    Python ssl client (memory BIOs) that never answers close_notify."""
    import ssl

    from streamlab import config as configmod
    from streamlab.web import tls

    cfg = configmod.load(None, {"media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s"),
                                "tls": "auto"})
    clock = Clock()
    backend = UserspaceBackend(clock)
    if rate is not None:
        backend.shaper(30181).configure(rate)
    factory = Factory.forProtocol(lambda: inner)
    if shaped:
        factory = backend.wrap(30181, factory)
    server = tls.load(cfg).wrap(factory, allow_h2=False).buildProtocol(None)
    wire = StringTransport()
    server.makeConnection(wire)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing)

    def pump():
        for _ in range(20):
            try:
                client.do_handshake()
            except ssl.SSLWantReadError:
                pass
            moved = False
            if outgoing.pending:
                server.dataReceived(outgoing.read())
                moved = True
            out = wire.value()
            if out:
                wire.clear()
                incoming.write(out)
                moved = True
            if not moved:
                return

    pump()
    return clock, server, wire, client, outgoing, pump


def _read_all(client):
    import ssl

    data, closed = b"", False
    while True:
        try:
            chunk = client.read(65536)
        except ssl.SSLWantReadError:
            break
        except ssl.SSLZeroReturnError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return data, closed


@pytest.mark.parametrize("shaped", [True, False])
def test_close_under_tls_sends_close_notify_and_fin_at_once(tmp_path, shaped):
    """Issue 12 item 2: the shaper's buffer producer kept TLS from ever closing, and TLS
    itself waited for a close_notify reply the client never sends."""
    inner = Closer()
    clock, server, wire, client, _, pump = _tls_pair(tmp_path, inner, shaped=shaped)
    client.write(b"GET / HTTP/1.0\r\n\r\n")
    pump()
    data, closed = _read_all(client)
    assert data == inner.reply
    assert closed  # close_notify arrived
    assert wire.disconnecting  # and the TCP close follows without waiting for the client's reply


def test_close_under_tls_waits_for_the_shaper_queue(tmp_path):
    inner = Closer(b"x" * 300_000)
    clock, server, wire, client, _, pump = _tls_pair(tmp_path, inner, rate=8.0)  # 1 MB/s
    client.write(b"GET / HTTP/1.0\r\n\r\n")
    pump()
    assert not wire.disconnecting  # the queue is still being paced out
    got = b""
    for _ in range(100):
        clock.advance(0.01)
        pump()
        data, closed = _read_all(client)
        got += data
        if closed:
            break
    assert got == inner.reply and closed and wire.disconnecting
