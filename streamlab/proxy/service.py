"""The sessions subsystem as one IService: the registry, the bootstrap listener, and
orderly release of every session port on stop."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from twisted.application.service import MultiService
from twisted.internet import defer

from streamlab.proxy.bootstrap import bootstrap_site
from streamlab.proxy.ports import listen_session_port
from streamlab.proxy.registry import OriginRef, SessionRegistry
from streamlab.proxy.tcpinfo import IcmpPinger
from streamlab.web.tls import TLS, listener_service

if TYPE_CHECKING:
    from streamlab.config import Config
    from streamlab.interfaces import IDaemonReactor, IEventBus
    from streamlab.shutdown import InFlight


class SessionService(MultiService):
    """Owns :class:`SessionRegistry` and the bootstrap listener."""

    def __init__(self, config: Config, reactor: IDaemonReactor, bus: IEventBus, origin: OriginRef = None,
                 tls: TLS | None = None, inflight: InFlight | None = None) -> None:
        """*tls*: the daemon's :class:`streamlab.web.tls.TLS` (None = plain HTTP) for the
        bootstrap listener and every session port; *inflight*: the daemon's
        :class:`streamlab.shutdown.InFlight` (session-port requests count in it)."""
        super().__init__()
        self.setName("sessions")
        self.config = config
        self.pinger = IcmpPinger(reactor)  # its raw socket opens in startService
        self.registry = SessionRegistry(config, reactor, bus, origin, pinger=self.pinger,
                                        listen=functools.partial(listen_session_port, tls=tls))
        self.registry.inflight = inflight
        scheme = "https" if config.server.tls != "off" else "http"
        self.bootstrap = listener_service(reactor, config.server.bootstrap_listen,
                                          bootstrap_site(self.registry, config, reactor, scheme),
                                          tls, "bootstrap-listener")
        self.bootstrap.setServiceParent(self)

    def startService(self) -> None:  # noqa: N802 - twisted API
        self.registry.stopped = False
        self.registry.accepting = True
        self.pinger.start()
        super().startService()

    def stop_accepting(self) -> defer.Deferred:
        """Graceful stop, first phase: the bootstrap listener and every session port stop
        accepting; open connections keep being served (see streamlab.shutdown)."""
        return defer.DeferredList([defer.maybeDeferred(self.bootstrap.stopService),
                                   self.registry.stop_accepting()], consumeErrors=True)

    def stopService(self) -> defer.Deferred:  # noqa: N802 - twisted API
        d1 = defer.maybeDeferred(super().stopService)
        d2 = self.registry.stop()
        return defer.DeferredList([d1, d2])
