"""The composition root, and the only wiring: twistd Options mirroring the config,
:func:`build` and makeService.

``twistd -n streamlab --config etc/streamlab.dev.conf [--listen tcp:30000 ...]``.
Every config key is also an option (CLI wins).  Parsing the options loads and checks
the config (``Options.postOptions``): a bad one stops the run with one line naming the
key (status 1); ``--check-config`` prints the effective config with secrets redacted and
exits 0.  :func:`build` only constructs: every service is a named child of
:class:`StreamlabService` and opens its sockets and files in ``startService``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TypeVar, cast

from twisted.application.service import IService, MultiService, Service
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
from streamlab.interfaces import IDaemonReactor
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

S = TypeVar("S", bound=Service)


class ConfigOptions(usage.Options):
    """``--config`` plus one option per config key; parsing loads and checks the config.

    :meth:`postOptions` is where a run ends before any service exists: a bad config is a
    :class:`usage.UsageError` naming the key, and ``--check-config`` prints the effective
    config (secrets redacted) and exits 0.  ``streamlab --check-config`` uses this class;
    twistd uses :class:`Options`."""

    synopsis = "[--config PATH] [--check-config] [--<key> VALUE ...]"
    optFlags = [["check-config", None, "validate, print the effective config and exit"]]
    optParameters = [["config", "c", None, "path of the INI config file"]] + [
        [key.flag, None, None, f"[{key.section}] {key.name}: {key.doc}"] for key in configmod.SCHEMA
    ]
    #: the loaded, checked config (set by :meth:`postOptions`)
    checked_config: configmod.Config | None = None

    def overrides(self) -> dict[str, str]:
        """Config keys given on the command line."""
        return {k.flag: self[k.flag] for k in configmod.SCHEMA if self.get(k.flag) is not None}

    def postOptions(self) -> None:
        """Load the config (file + overrides) and check its paths; with ``--check-config``
        print it and exit 0."""
        try:
            self.checked_config = load_config(self)
        except configmod.ConfigError as exc:
            raise usage.UsageError(f"config error: {exc}") from None
        if self["check-config"]:
            print_config(self.checked_config)
            raise SystemExit(0)


class Options(ConfigOptions):
    """twistd's options: :class:`ConfigOptions`, but a bad config ends the process with
    one line and status 1.  (twistd answers a plugin's UsageError with its whole help
    text and status 0; a daemon that cannot start must fail, for systemd and the spec.)"""

    def postOptions(self) -> None:
        """See :meth:`ConfigOptions.postOptions`; a UsageError becomes SystemExit."""
        try:
            super().postOptions()
        except usage.UsageError as exc:
            raise SystemExit(f"streamlab: {exc}") from None


def load_config(options: ConfigOptions) -> configmod.Config:
    """Config from *options* (file + overrides), with paths checked."""
    cfg = configmod.load(options["config"], options.overrides())
    configmod.check_paths(cfg)
    return cfg


def print_config(cfg: configmod.Config) -> None:
    """The effective config as JSON on stdout, secrets redacted."""
    print(json.dumps(cfg.redacted(), indent=2))


class StreamlabService(MultiService):
    """The daemon: every subsystem is a named child service (``getServiceNamed``) and,
    for the ones the daemon itself reads, an attribute set by :func:`build`."""

    def __init__(self, config: configmod.Config, reactor: IDaemonReactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.bus = EventBus()
        self.api = ApiRoot()
        self.root = MainRoot()
        self.root.mount("api", self.api)
        self.origin: OriginService | None = None
        self.jobs: JobService | None = None
        self.shaping: ShapingService | None = None
        self.sessions: SessionService | None = None
        self.main_listener: IService | None = None
        self.graceful_stop: GracefulStop | None = None

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        """SIGTERM: stop accepting on the main listener and let in-flight responses finish
        (``shutdown_grace_seconds``, see streamlab.shutdown), then stop every subsystem."""
        stop = self.graceful_stop
        if stop is None or not self.running:
            return super().stopService()
        stoppers = []
        if self.main_listener is not None:
            stoppers.append(self.main_listener.stopService)
        if self.sessions is not None:
            stoppers.append(self.sessions.stop_accepting)
        d = stop.drain(*stoppers)
        d.addBoth(lambda _: super(StreamlabService, self).stopService())
        return d

    def add(self, child: S) -> S:
        """Make *child* (a service with its ``name``) start and stop with the daemon, in
        the order added (stopped in reverse)."""
        child.setServiceParent(self)
        return child


def build(config: configmod.Config, reactor: IDaemonReactor) -> StreamlabService:
    """Wire every subsystem for *config* on *reactor*.  Nothing here touches the network
    or the disk: services open what they need in ``startService``."""
    svc = StreamlabService(config, reactor)
    tls = tlsmod.load(config)  # None for tls = off; main, bootstrap and session ports share it
    inflight = InFlight()  # main-port and session-port requests: the graceful stop waits for them
    metrics = Metrics(reactor, inflight)
    db = svc.add(Database(path=os.path.join(config.paths.state_dir, "streamlab.db"), reactor=reactor))
    library = svc.add(ContentLibrary(config.paths.media_dir, reactor))
    content_api = ContentApi(library, reactor, config.server.advertised_host)
    svc.api.mount("content", content_api.app.resource())
    origin = svc.origin = svc.add(OriginService(OriginResource.from_config(library, config, reactor)))
    svc.root.mount("go-live", origin.resource)
    upstreams = svc.add(UpstreamService.from_config(config, reactor, lambda n: library.get(n) is not None))
    origin.resource.upstreams = content_api.upstreams = upstreams
    svc.api.mount("upstreams", UpstreamsApi(upstreams, config.server.advertised_host).app.resource())
    jobs = lambda: svc.jobs  # noqa: E731 - sources and uploads come first; the job service needs them
    sources = svc.add(SourceService(config, db, reactor, jobs=jobs))
    svc.api.mount("sources", SourcesApi(sources, jobs).app.resource())
    uploads = svc.add(UploadService(config, db, sources, reactor, jobs=jobs))
    svc.api.mount("upload", UploadsApi(uploads, reactor).app.resource())
    discovery_api = DiscoveryApi(svc.add(DiscoveryService(config, reactor))).app.resource()
    svc.api.mount("rendezvous", discovery_api)
    svc.api.mount("announce-now", discovery_api)
    job_service = svc.jobs = svc.add(JobService(config, reactor, SqliteJobStore(db), bus=svc.bus,
                                                sources=sources, library=library))
    jobs_feed = svc.add(JobsFeed(reactor, svc.bus, job_service))
    svc.api.mount("jobs", JobsApi(job_service, svc.bus, jobs_feed).app.resource())
    setup = svc.add(SetupService(config, reactor, jobs=job_service, sources=sources, db=db))
    svc.api.mount("setup", SetupApi(setup).app.resource())
    server_api = ServerApi(reactor)
    svc.api.mount("health", server_api.app.resource())
    svc.api.mount("version", server_api.app.resource())

    # Shaping is added before sessions so it stops after them (release hooks run first).
    shaping = svc.shaping = svc.add(ShapingService(config, reactor))
    sessions = svc.sessions = svc.add(SessionService(config, reactor, svc.bus, origin=origin.resource,
                                                     tls=tls, inflight=inflight))
    sessions_api = SessionsApi(sessions.registry).app.resource()
    for name in SESSION_MOUNTS:
        svc.api.mount(name, sessions_api)
    sessions.registry.shaping = shaping.attach(sessions.registry)
    svc.api.mount("nftables", ShapingApi(shaping).app.resource())
    scenarios = svc.add(ScenarioService(sessions.registry, reactor, origin=origin.resource))
    mount_scenarios(svc.api, scenarios, sessions_api)  # /api/scenarios, /api/session(s)/{id}/scenario
    svc.root.mount("debug", DebugPage(svc))
    svc.root.mount("dashboard", dashboard_resource(reactor))
    metrics.attach_sessions(sessions.registry)
    metrics.shaping = shaping
    metrics.attach_jobs(lambda: job_service)
    svc.root.mount("metrics", MetricsResource(metrics))
    svc.api.mount("openapi.json", OpenApiResource())

    site = build_site(authmod.protect(svc.root, config, reactor), reactor,
                      head_timeout=config.server.request_head_timeout,
                      max_connections_per_client=config.server.max_connections_per_client_ip,
                      uncapped=tuple(config.server.trusted_proxies))
    install_body_rules(site, api_body_rules(config.jobs.max_upload_bytes,
                                           spool_dir=os.path.join(config.paths.state_dir, "uploads")))
    site.requestFactory = counting_request_factory(site.requestFactory, metrics, inflight)
    main = svc.main_listener = svc.add(tlsmod.listener_service(reactor, config.server.listen, site, tls,
                                                               "main-listener"))
    svc.add(DashboardAnnouncer(main, config, tls is not None))
    svc.graceful_stop = svc.add(GracefulStop(reactor, inflight, config.server.shutdown_grace_seconds))
    return svc


def makeService(options: Options, reactor: IDaemonReactor | None = None) -> StreamlabService:  # noqa: N802
    """twistd entry point: *options* are parsed (the config is loaded and checked)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = cast(IDaemonReactor, default_reactor)  # the one twistd runs provides them all
    cfg = options.checked_config if options.checked_config is not None else load_config(options)
    try:
        return build(cfg, reactor)
    except configmod.ConfigError as exc:  # e.g. an unusable TLS certificate
        raise SystemExit(f"streamlab: config error: {exc}") from None


def check_config_main(argv: list[str] | None = None) -> int:
    """``streamlab [--check-config] [--config PATH]`` console entry point: the checks
    twistd makes, then the effective config on stdout; 1 with one line on stderr when the
    config is bad.  ``streamlab scenario ...`` is the scenario runner (streamlab.scenario.cli)."""
    argv = argv if argv is not None else sys.argv[1:]
    if argv[:1] == ["scenario"]:
        from streamlab.scenario.cli import main as scenario_main

        return scenario_main(argv[1:])
    opts = ConfigOptions()
    try:
        opts.parseOptions(argv)  # --check-config: prints, exits 0
    except usage.UsageError as exc:
        print(f"streamlab: {exc}", file=sys.stderr)
        return 1
    assert opts.checked_config is not None
    print_config(opts.checked_config)
    return 0
