"""The sessions' server-side metering ticker: transfer rates, TCP_INFO round trips and
ICMP pings of the players, every 100 ms while any session has a connection or traffic.

The pure parts (``struct tcp_info`` parsing, 1 s RTT windows, ICMP packets) are in
:mod:`streamlab.proxy.tcpinfo`; this module only decides when and what to read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamlab.proxy.session import Session
from streamlab.proxy.sockets import socket_of
from streamlab.proxy.tcpinfo import read_tcp_info

log = Logger()

TICK = 0.1


class Pinger(Protocol):
    """What the ticker asks of the ICMP pinger (:class:`streamlab.proxy.tcpinfo.IcmpPinger`)."""

    @property
    def available(self) -> bool:
        """False when pings cannot be sent (no CAP_NET_RAW)."""

    def ping(self, ip: str) -> None:
        """Send one echo request to *ip*."""

    def rtt_ms(self, ip: str, now: float) -> float | None:
        """The latest round trip to *ip* (None: no recent reply)."""

    def close(self) -> None:
        """Stop reading replies and close the socket."""


class Metering:
    """Runs while any session has an open connection or a moving transfer rate.

    *sessions* returns the live sessions; *watched* says whether someone watches them
    live (then RTT is sampled at the full rate); *changed* gets the ids of the sessions
    whose metrics moved in a tick."""

    def __init__(self, clock: IReactorTime, sessions: Callable[[], Iterable[Session]],
                 watched: Callable[[], bool], changed: Callable[[list[str]], None],
                 pinger: Pinger | None = None) -> None:
        self.clock = clock
        self.pinger = pinger
        self._sessions = sessions
        self._watched = watched
        self._changed = changed
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock
        self._ticks = 0
        #: True once stopped for good (daemon stop): connections no longer start it
        self.stopped = False

    @property
    def running(self) -> bool:
        """Whether the ticker runs now."""
        return bool(self._ticker.running)

    def connection_opened(self) -> None:
        """A client connected to a session port: make sure the ticker runs."""
        if not self._ticker.running and not self.stopped:
            self._ticker.start(TICK, now=False)

    def stop(self) -> None:
        """Stop ticking and close the pinger."""
        self.stopped = True
        if self._ticker.running:
            self._ticker.stop()
        if self.pinger is not None:
            self.pinger.close()

    def _tick(self) -> None:
        """Every 100 ms: transfer rates; RTT samples and 1 s windows; ICMP pings.

        TCP_INFO is read only from sessions with an open connection, and at the full
        100 ms rate only while someone watches the sessions live (SSE): then a second's
        window has ten samples and its max/min mean something.  Unwatched, one sample a
        second is the window (``client_rtt_ms`` stays fresh and exact for a GET).  Each
        player address is pinged once a second however many sessions it has."""
        try:
            self._ticks += 1
            now = self.clock.seconds()
            roll = self._ticks % 10 == 0
            sample_rtt = roll or self._watched()
            pinger = self.pinger if roll and getattr(self.pinger, "available", True) else None
            pinged: set[str] = set()
            any_open = False
            any_moving = False
            moved: list[str] = []
            for session in list(self._sessions()):
                was_moving = session.mbps_transfer_rate
                rtt_before = session.rtt.fields
                ping_before = session.ping_rtt_ms
                if session.channels:
                    any_open = True
                    transport = session.latest_transport
                    if sample_rtt and transport is not None:
                        info = read_tcp_info(socket_of(transport))
                        if info is not None:
                            session.rtt.add(info)
                    session.sample_rate(now)
                elif session.mbps_transfer_rate:
                    session.sample_rate(now)  # falls to 0 within the rate window
                if session.mbps_transfer_rate:
                    any_moving = True
                if roll:
                    stale = rtt_before["client_rtt_stale"]
                    session.rtt.roll()
                    after = session.rtt.fields
                    if after is not rtt_before or after["client_rtt_stale"] != stale:
                        moved.append(session.session_id)
                    if pinger is not None and session.player_ip:
                        ip = session.player_ip
                        session.ping_rtt_ms = pinger.rtt_ms(ip, now)
                        if session.channels and ip not in pinged:
                            pinged.add(ip)
                            pinger.ping(ip)
                if session.channels or was_moving or session.mbps_transfer_rate \
                        or session.ping_rtt_ms != ping_before:
                    moved.append(session.session_id)
            if moved:
                self._changed(moved)
            if roll and not any_open and not any_moving:
                self._ticker.stop()
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("session metrics tick failed")
