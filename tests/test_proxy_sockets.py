"""What the fault layer counts as "not yet with the client" (streamlab.proxy.sockets):
the userspace shaper's queue is part of it (issue 12 item 3), on a real TCP socket too."""

from __future__ import annotations

import socket
import time

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from streamlab.proxy import sockets
from streamlab.shaping.userspace import UserspaceBackend


def test_shaper_queue_counts_as_pending_until_paced_out():
    clock = Clock()
    backend = UserspaceBackend(clock)
    backend.shaper(1).configure(8.0)  # 1 MB/s
    inner = Protocol()
    wrapper = backend.wrap(1, Factory.forProtocol(lambda: inner)).buildProtocol(None)
    wire = StringTransport()
    wrapper.makeConnection(wire)
    inner.transport.write(b"x" * 300_000)
    queued = sockets.pending_user_bytes(inner.transport)
    assert queued == wrapper.buffered > 250_000  # written, but still in the shaper
    for _ in range(40):
        clock.advance(0.01)
    later = sockets.pending_user_bytes(inner.transport)
    assert later < queued and later == 300_000 - len(wire.value())


def test_acked_bytes_of_a_real_socket_pair():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    try:
        conn.sendall(b"y" * 10_000)
        got = b""
        while len(got) < 10_000:
            got += client.recv(65536)

        class Tcp:  # the shape of a Twisted TCP transport, as far as sockets needs it
            def getHandle(self):
                return conn

        deadline = time.monotonic() + 2.0  # the ACK arrives within a few ms: poll for it
        while True:
            acked = sockets.acked_bytes(Tcp())
            if (acked and acked >= 10_000) or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        assert acked is not None and acked >= 10_000
        assert sockets.acked_bytes(StringTransport()) is None
    finally:
        for s in (client, conn, server):
            s.close()
