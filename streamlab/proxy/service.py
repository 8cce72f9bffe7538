"""The sessions subsystem as one IService: the registry, the bootstrap listener, and
orderly release of every session port on stop."""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer

from streamlab.proxy.bootstrap import bootstrap_site
from streamlab.proxy.registry import SessionRegistry
from streamlab.proxy.tcpinfo import IcmpPinger


class SessionService(MultiService):
    """Owns :class:`SessionRegistry` and the bootstrap listener."""

    def __init__(self, config: Any, reactor: Any, bus: Any, origin: Any = None) -> None:
        super().__init__()
        self.setName("sessions")
        self.config = config
        self.registry = SessionRegistry(config, reactor, bus, origin, pinger=IcmpPinger(reactor))
        scheme = "https" if config.server.tls != "off" else "http"
        self.bootstrap = strports.service(config.server.bootstrap_listen,
                                          bootstrap_site(self.registry, config, reactor, scheme),
                                          reactor=reactor)
        self.bootstrap.setName("bootstrap-listener")
        self.bootstrap.setServiceParent(self)

    def startService(self) -> None:  # noqa: N802 - twisted API
        self.registry.stopped = False
        super().startService()

    def stopService(self) -> defer.Deferred:  # noqa: N802 - twisted API
        d1 = defer.maybeDeferred(super().stopService)
        d2 = self.registry.stop()
        return defer.DeferredList([d1, d2])
