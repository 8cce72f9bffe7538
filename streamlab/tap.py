"""The only wiring: twistd Options mirroring the config, and makeService.

``twistd -n streamlab --config etc/streamlab.dev.conf [--listen tcp:30000 ...]``.
Every config key is also an option (CLI wins).  ``--check-config`` validates, prints
the effective config with secrets redacted and exits (non-zero on error).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from streamlab import config as configmod
from streamlab.api.content import ContentApi
from streamlab.api.discovery import DiscoveryApi
from streamlab.api.jobs import JobsApi
from streamlab.api.openapi import OpenApiResource
from streamlab.api.root import ApiRoot
from streamlab.api.scenarios import mount as mount_scenarios
from streamlab.api.server import ServerApi
from streamlab.api.sessions import MOUNTS as SESSION_MOUNTS
from streamlab.api.sessions import SessionsApi
from streamlab.api.setup import SetupApi
from streamlab.api.shaping import ShapingApi
from streamlab.api.sources import SourcesApi
from streamlab.api.uploads import UploadsApi
from streamlab.api.upstreams import UpstreamsApi
from streamlab.discovery.service import DiscoveryService
from streamlab.events import EventBus
from streamlab.jobs.service import JobService
from streamlab.jobs.setup import SetupService
from streamlab.jobs.store import SqliteJobStore
from streamlab.live.origin import OriginResource, OriginService
from streamlab.media.library import ContentLibrary
from streamlab.metrics import Metrics, MetricsResource, counting_request_factory
from streamlab.proxy.service import SessionService
from streamlab.push.jobs_sse import JobsFeed
from streamlab.scenario.service import ScenarioService
from streamlab.shaping.service import ShapingService
from streamlab.shutdown import GracefulStop, InFlight
from streamlab.sources.service import SourceService
from streamlab.storage.db import Database
from streamlab.uploads.request import api_body_rules, install_body_rules
from streamlab.uploads.service import UploadService
from streamlab.upstream.service import UpstreamService
from streamlab.web import auth as authmod
from streamlab.web import tls as tlsmod
from streamlab.web.dashboard import DashboardAnnouncer, dashboard_resource
from streamlab.web.debug import DebugPage
from streamlab.web.root import MainRoot
from streamlab.web.site import build_site

log = Logger()


class Options(usage.Options):
    """Command line of the plugin: ``--config`` plus one option per config key."""

    synopsis = "[--config PATH] [--check-config] [--<key> VALUE ...]"
    optFlags = [["check-config", None, "validate, print the effective config and exit"]]
    optParameters = [["config", "c", None, "path of the INI config file"]] + [
        [key.flag, None, None, f"[{key.section}] {key.name}: {key.doc}"] for key in configmod.SCHEMA
    ]

    def overrides(self) -> dict[str, str]:
        """Config keys given on the command line."""
        return {k.flag: self[k.flag] for k in configmod.SCHEMA if self.get(k.flag) is not None}


def load_config(options: Any) -> configmod.Config:
    """Config from *options* (file + overrides), with paths checked."""
    cfg = configmod.load(options["config"], options.overrides())
    configmod.check_paths(cfg)
    return cfg


class StreamlabService(MultiService):
    """The daemon: owns every subsystem service and listener."""

    def __init__(self, config: configmod.Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.bus = EventBus()
        self.api = ApiRoot()
        self.root = MainRoot()
        self.root.mount("api", self.api)
        self.components: dict[str, Any] = {}

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        """SIGTERM: stop accepting on the main listener and let in-flight responses finish
        (``shutdown_grace_seconds``, see streamlab.shutdown), then stop every subsystem."""
        stop = self.components.get("graceful-stop")
        if stop is None or not self.running:
            return super().stopService()
        stoppers = []
        main = self.namedServices.get("main-listener")
        if main is not None:
            stoppers.append(main.stopService)
        sessions = self.components.get("sessions")
        if sessions is not None:
            stoppers.append(sessions.stop_accepting)
        d = stop.drain(*stoppers)
        d.addBoth(lambda _: super(StreamlabService, self).stopService())
        return d

    def add(self, name: str, component: Any) -> Any:
        """Register a subsystem; services among them start and stop with the daemon."""
        self.components[name] = component
        if IService.providedBy(component):
            component.setServiceParent(self)
        return component


def build(config: configmod.Config, reactor: Any) -> StreamlabService:
    """Wire every subsystem for *config* on *reactor*."""
    svc = StreamlabService(config, reactor)
    tls = tlsmod.load(config)  # None for tls = off; main, bootstrap and session ports share it
    inflight = InFlight()
    metrics = Metrics(reactor, inflight)
    db = svc.add("db", Database(path=os.path.join(config.paths.state_dir, "streamlab.db"), reactor=reactor))
    library = svc.add("library", ContentLibrary(config.paths.media_dir, reactor))
    content_api = ContentApi(library, reactor, config.server.advertised_host)
    svc.api.mount("content", content_api.app.resource())
    origin = svc.add("origin", OriginService(OriginResource.from_config(library, config, reactor)))
    svc.root.mount("go-live", origin.resource)
    upstreams = svc.add("upstreams", UpstreamService.from_config(
        config, reactor, lambda n: library.get(n) is not None))
    origin.resource.upstreams = content_api.upstreams = upstreams
    svc.api.mount("upstreams", UpstreamsApi(upstreams, config.server.advertised_host).app.resource())
    jobs = lambda: svc.components.get("jobs")  # noqa: E731 - the job service is added below
    sources = svc.add("sources", SourceService(config, db, reactor, jobs=jobs))
    svc.api.mount("sources", SourcesApi(sources, jobs).app.resource())
    uploads = svc.add("uploads", UploadService(config, db, sources, reactor, jobs=jobs))
    svc.api.mount("upload", UploadsApi(uploads, reactor).app.resource())
    discovery_api = DiscoveryApi(svc.add("discovery", DiscoveryService(config, reactor))).app.resource()
    svc.api.mount("rendezvous", discovery_api)
    svc.api.mount("announce-now", discovery_api)
    job_service = svc.add("jobs", JobService(config, reactor, SqliteJobStore(db), bus=svc.bus,
                                             sources=sources, library=library))
    jobs_feed = svc.add("jobs-feed", JobsFeed(reactor, svc.bus, job_service))
    svc.api.mount("jobs", JobsApi(job_service, svc.bus, jobs_feed).app.resource())
    setup = svc.add("setup", SetupService(config, reactor, jobs=job_service, sources=sources, db=db))
    svc.api.mount("setup", SetupApi(setup).app.resource())
    server_api = ServerApi(reactor)
    svc.api.mount("health", server_api.app.resource())
    svc.api.mount("version", server_api.app.resource())

    # Shaping is added before sessions so it stops after them (release hooks run first).
    shaping = svc.add("shaping", ShapingService(config, reactor))
    sessions = svc.add("sessions", SessionService(config, reactor, svc.bus,
                                                  origin=lambda: _origin_resource(svc), tls=tls))
    sessions.registry.inflight = inflight  # session-port requests: the graceful stop waits for them
    sessions_api = SessionsApi(sessions.registry).app.resource()
    for name in SESSION_MOUNTS:
        svc.api.mount(name, sessions_api)
    shaping.attach(sessions.registry, svc.bus)
    svc.api.mount("nftables", ShapingApi(shaping, sessions.registry).app.resource())
    scenarios = svc.add("scenarios", ScenarioService(sessions.registry, reactor,
                                                     origin=lambda: _origin_resource(svc)))
    mount_scenarios(svc.api, scenarios, sessions_api)  # /api/scenarios, /api/session(s)/{id}/scenario
    svc.root.mount("debug", DebugPage(svc))
    svc.root.mount("dashboard", dashboard_resource())
    metrics.attach_sessions(sessions.registry)
    metrics.shaping = shaping
    metrics.attach_jobs(lambda: svc.components.get("jobs"))
    svc.root.mount("metrics", MetricsResource(metrics))
    svc.api.mount("openapi.json", OpenApiResource())

    site = build_site(authmod.protect(svc.root, config, reactor), reactor,
                      head_timeout=config.server.request_head_timeout,
                      max_connections_per_client=config.server.max_connections_per_client_ip,
                      uncapped=tuple(config.server.trusted_proxies))
    install_body_rules(site, api_body_rules(config.jobs.max_upload_bytes,
                                           spool_dir=os.path.join(config.paths.state_dir, "uploads")))
    site.requestFactory = counting_request_factory(site.requestFactory, metrics, inflight)
    main = tlsmod.listener_service(reactor, config.server.listen, site, tls, "main-listener")
    main.setServiceParent(svc)
    DashboardAnnouncer(main, config, tls is not None).setServiceParent(svc)
    svc.add("graceful-stop", GracefulStop(reactor, inflight, config.server.shutdown_grace_seconds))
    return svc


def _origin_resource(svc: StreamlabService) -> Any:
    """The origin resource session ports serve at /go-live (None until wired)."""
    comp = svc.components.get("origin")
    return getattr(comp, "resource", comp)


def makeService(options: Any, reactor: Any = None) -> StreamlabService:  # noqa: N802
    """twistd entry point."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        cfg = load_config(options)
    except configmod.ConfigError as exc:
        raise SystemExit(f"streamlab: config error: {exc}") from None
    if options["check-config"]:
        print(json.dumps(cfg.redacted(), indent=2))
        raise SystemExit(0)
    try:
        return build(cfg, reactor)
    except configmod.ConfigError as exc:  # e.g. an unusable TLS certificate
        raise SystemExit(f"streamlab: config error: {exc}") from None


def check_config_main(argv: list[str] | None = None) -> int:
    """``streamlab --check-config [--config PATH]`` console entry point (``streamlab
    scenario ...`` is the scenario runner, streamlab.scenario.cli)."""
    argv = argv if argv is not None else sys.argv[1:]
    if argv[:1] == ["scenario"]:
        from streamlab.scenario.cli import main as scenario_main

        return scenario_main(argv[1:])
    opts = Options()
    try:
        opts.parseOptions(argv)
        cfg = load_config(opts)
    except (usage.UsageError, configmod.ConfigError) as exc:
        print(f"streamlab: config error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(cfg.redacted(), indent=2))
    return 0
