"""A small asyncio HTTP/1.1 client for the player fleet (bench/fleet.py).

Each simulated player owns one :class:`Pool` of keep-alive connections to its session
port, like a browser holding a few connections per origin: a held blocking playlist
reload occupies one connection while parts stream on another.  Bodies are read as they
arrive so a caller can learn *when* each byte landed (``on_bytes``), which is how part
arrival times inside one open-ended preload-hint response are measured.

Only what the origin speaks is supported: ``Content-Length``, ``chunked`` and
read-to-close bodies, no pipelining, no TLS, no redirects (the caller reads the 302 of
the bootstrap listener itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

READ_SIZE = 65536


class HttpError(Exception):
    """A request that did not produce a complete response; ``kind`` names why
    (``connect``, ``reset``, ``timeout``, ``incomplete``, ``protocol``)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class Response:
    """A finished response: status, lower-cased headers, body (when kept) and timings
    (``time.time()`` wall clock, comparable with the origin's live clock)."""

    status: int
    headers: dict[str, str]
    body: bytes
    length: int
    sent_at: float
    done_at: float
    extra: dict[str, float] = field(default_factory=dict)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = True

    def close(self) -> None:
        """Close the socket (never raises)."""
        self.reusable = False
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a broken transport
            pass

    async def request(
        self,
        method: str,
        target: str,
        host: str,
        headers: Mapping[str, str] | None = None,
        keep_body: bool = True,
        on_bytes: Callable[[int, float], None] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request and read the whole response.

        *on_bytes(total_body_bytes_so_far, now)* is called after every read of the body."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: streamlab-fleet/1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        sent_at = time.time()
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HttpError("reset" if not exc.partial else "incomplete", "before headers") from None
        except (ConnectionError, OSError) as exc:
            raise HttpError("reset", type(exc).__name__) from None
        except asyncio.LimitOverrunError:
            raise HttpError("protocol", "header block too large") from None
        status, hdrs = _parse_head(head)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return Response(status, hdrs, b"", 0, sent_at, time.time())
        chunks: list[bytes] = []
        total = 0

        def got(data: bytes) -> None:
            nonlocal total
            total += len(data)
            if keep_body:
                chunks.append(data)
            if on_bytes is not None:
                on_bytes(total, time.time())

        try:
            if "chunked" in hdrs.get("transfer-encoding", "").lower():
                await self._read_chunked(got)
            elif "content-length" in hdrs:
                remaining = int(hdrs["content-length"])
                while remaining > 0:
                    data = await self.reader.read(min(READ_SIZE, remaining))
                    if not data:
                        raise HttpError("incomplete", f"{remaining} body bytes missing")
                    remaining -= len(data)
                    got(data)
            else:
                self.reusable = False
                while data := await self.reader.read(READ_SIZE):
                    got(data)
        except (ConnectionError, OSError) as exc:
            raise HttpError("reset", f"mid-body ({type(exc).__name__})") from None
        except asyncio.IncompleteReadError:
            raise HttpError("incomplete", "chunked body cut") from None
        if hdrs.get("connection", "").lower() == "close":
            self.reusable = False
        return Response(status, hdrs, b"".join(chunks), total, sent_at, time.time())

    async def _read_chunked(self, got: Callable[[bytes], None]) -> None:
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers from the origin
                return
            remaining = size
            while remaining > 0:
                data = await self.reader.read(min(READ_SIZE, remaining))
                if not data:
                    raise HttpError("incomplete", "chunk cut")
                remaining -= len(data)
                got(data)
            await self.reader.readexactly(2)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError("protocol", f"bad status line {lines[0][:60]!r}")
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return int(parts[1]), hdrs


class Pool:
    """Keep-alive connections to one ``host:port``; at most *limit* open at once."""

    def __init__(self, host: str, port: int, limit: int = 4, connect_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.idle: list[Connection] = []
        self.open = 0
        self.slots = asyncio.Semaphore(limit)
        self.connect_timeout = connect_timeout
        self.connections_made = 0

    async def _take(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.close()
            self.open -= 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20), self.connect_timeout
            )
        except TimeoutError:
            raise HttpError("connect", "timeout") from None
        except OSError as exc:
            raise HttpError("connect", exc.strerror or type(exc).__name__) from None
        self.open += 1
        self.connections_made += 1
        return Connection(reader, writer)

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        keep_body: bool = True,
        on_bytes: Callable[[int, float], None] | None = None,
        body: bytes = b"",
    ) -> Response:
        """One request on an idle (or new) connection, within *timeout* seconds."""
        async with self.slots:
            conn = await self._take()
            try:
                resp = await asyncio.wait_for(
                    conn.request(
                        method, target, f"{self.host}:{self.port}", headers, keep_body, on_bytes, body
                    ),
                    timeout,
                )
            except TimeoutError:
                conn.close()
                self.open -= 1
                raise HttpError("timeout", f"{timeout:g}s") from None
            except BaseException:
                conn.close()
                self.open -= 1
                raise
            if conn.reusable:
                self.idle.append(conn)
            else:
                conn.close()
                self.open -= 1
            return resp

    def close(self) -> None:
        """Close every idle connection (busy ones close when their request ends)."""
        for conn in self.idle:
            conn.close()
        self.open -= len(self.idle)
        self.idle.clear()
