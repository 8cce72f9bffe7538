"""The registry of upstreams (a Service): validation on creation, persistence, serving.

Upstreams are kept in ``<state_dir>/upstreams.json`` (mode 0600: extra headers may carry
credentials) and reloaded at start without contacting the upstreams again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from streamlab.config import Config
from streamlab.errors import Conflict, NotFound, Unprocessable
from streamlab.fsutil import atomic_write
from streamlab.interfaces import IDaemonReactor
from streamlab.upstream import detect, paths
from streamlab.upstream.client import TooBig, UpstreamClient, collect, final_url
from streamlab.upstream.resource import UpstreamFetch

log = Logger()

MANIFEST_LIMIT = 16 * 1024 * 1024


@dataclass
class Upstream:
    """One registered upstream."""

    name: str
    url: str
    headers: dict[str, str]
    verify_tls: bool
    info: detect.ManifestInfo
    created_at: float
    client: UpstreamClient | None = field(default=None, repr=False)

    @property
    def origin(self) -> paths.Origin:
        """The URL mapping of this upstream."""
        return paths.Origin(self.url, dash=self.info.format == "dash")

    def describe(self, base: str = "") -> dict[str, Any]:
        """The API view (header values hidden: they may be credentials)."""
        local = paths.MASTER_DASH if self.info.format == "dash" else paths.MASTER_HLS
        key = ("dash" if self.info.format == "dash" else "hls") + ("_ll" if self.info.low_latency else "")
        return {
            "name": self.name, "url": self.url, "upstream": True, "usable": True,
            "headers": sorted(self.headers), "verify_tls": self.verify_tls,
            "format": self.info.format, "low_latency": self.info.low_latency, "live": self.info.live,
            "variant_count": self.info.variants, "created_at": self.created_at,
            "has_hls": self.info.format == "hls", "has_dash": self.info.format == "dash",
            "urls": {key: f"{base}/go-live/{self.name}/{local}"},
        }

    def record(self) -> dict[str, Any]:
        """The persisted form."""
        return {"name": self.name, "url": self.url, "headers": self.headers, "verify_tls": self.verify_tls,
                "format": self.info.format, "low_latency": self.info.low_latency, "live": self.info.live,
                "variants": self.info.variants, "created_at": self.created_at}


class UpstreamService(Service):
    """Owns the upstreams.  *local_exists(name)* tells whether a local item has the name;
    *timeout* bounds every upstream request until its headers (and a manifest's body)."""

    name = "upstreams"

    def __init__(self, reactor: IDaemonReactor, state_dir: str, *, timeout: float = 20.0, per_host: int = 8,
                 local_exists: Callable[[str], bool] | None = None) -> None:
        self.reactor = reactor
        self.path = os.path.join(state_dir, "upstreams.json")
        self.timeout = timeout
        self.per_host = per_host
        self.local_exists = local_exists or (lambda _name: False)
        self._items: dict[str, Upstream] = {}
        self._creating: set[str] = set()

    @classmethod
    def from_config(cls, config: Config, reactor: IDaemonReactor,
                    local_exists: Callable[[str], bool]) -> UpstreamService:
        """Built from ``[live] upstream_*`` keys."""
        live = config.live
        return cls(reactor, config.paths.state_dir, timeout=getattr(live, "upstream_timeout_seconds", 20.0),
                   per_host=getattr(live, "upstream_connections_per_host", 8), local_exists=local_exists)

    # -- lifecycle -------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 - twisted API
        super().startService()
        try:
            with open(self.path, encoding="utf-8") as fh:
                records = json.load(fh)
        except FileNotFoundError:
            records = []
        except (OSError, ValueError) as exc:
            log.warn("ignoring unreadable {path}: {exc}", path=self.path, exc=exc)
            records = []
        for r in records if isinstance(records, list) else []:
            try:
                info = detect.ManifestInfo(r["format"], bool(r["low_latency"]), bool(r["live"]),
                                           int(r["variants"]))
                up = Upstream(r["name"], r["url"], dict(r.get("headers") or {}), bool(r["verify_tls"]), info,
                              float(r["created_at"]))
            except (KeyError, TypeError, ValueError):
                continue
            up.client = self._client(up.headers, up.verify_tls)
            self._items[up.name] = up

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        super().stopService()
        return defer.DeferredList([u.client.close() for u in self._items.values() if u.client is not None])

    # -- registry ----------------------------------------------------------------

    def get(self, name: str) -> Upstream | None:
        """The upstream called *name*, or None."""
        return self._items.get(name)

    def items(self) -> list[Upstream]:
        """All upstreams by name."""
        return [self._items[k] for k in sorted(self._items)]

    def show(self, name: str) -> Upstream:
        """The upstream (404 when unknown)."""
        up = self._items.get(name)
        if up is None:
            raise NotFound("unknown upstream", detail=name)
        return up

    @defer.inlineCallbacks
    def create(self, body: Any) -> Any:
        """Validate *body*, fetch and inspect the manifest, register (see the API)."""
        reg = detect.check_registration(body)
        if reg.name in self._items or reg.name in self._creating or self.local_exists(reg.name):
            raise Conflict("duplicate name", detail=f"{reg.name} is already an upstream or a local item",
                           fields={"name": "already used"})
        self._creating.add(reg.name)
        client = self._client(reg.headers, reg.verify_tls)
        try:
            info = yield self._inspect(client, reg.url)
        except BaseException:
            self._creating.discard(reg.name)
            yield client.close()
            raise
        self._creating.discard(reg.name)
        up = Upstream(reg.name, reg.url, reg.headers, reg.verify_tls, info, self.reactor.seconds(), client)
        self._items[up.name] = up
        yield self._save()
        return up

    @defer.inlineCallbacks
    def delete(self, name: str) -> Any:
        """Forget *name* (404 when unknown); its idle connections are closed."""
        up = self.show(name)
        del self._items[name]
        yield self._save()
        if up.client is not None:
            yield up.client.close()
        return up

    def _client(self, headers: dict[str, str], verify_tls: bool) -> UpstreamClient:
        return UpstreamClient(self.reactor, headers, verify_tls, per_host=self.per_host,
                              connect_timeout=self.timeout)

    def _save(self) -> defer.Deferred[None]:
        data = json.dumps([u.record() for u in self.items()], indent=1).encode()
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         atomic_write, self.path, data, 0o600)

    # -- validation ----------------------------------------------------------------

    @defer.inlineCallbacks
    def _fetch(self, client: UpstreamClient, url: str) -> Any:
        d = client.request(b"GET", url)
        timer = self.reactor.callLater(self.timeout, d.cancel)
        try:
            response = yield d
            if response.code != 200:
                response.deliverBody(_Discard())
                raise Unprocessable("upstream error", detail=f"{url} answered HTTP {response.code}",
                                    upstream_status=response.code)
            body = yield collect(response, MANIFEST_LIMIT)
        except defer.CancelledError:
            raise Unprocessable("upstream unreachable",
                                detail=f"{url}: no answer within {self.timeout:g} s") from None
        except TooBig:
            raise Unprocessable("not a manifest",
                                detail=f"{url} is larger than {MANIFEST_LIMIT} bytes") from None
        except Unprocessable:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport failure is "unreachable"
            reasons = getattr(exc, "reasons", None)
            text = "; ".join(r.getErrorMessage() for r in reasons) if reasons else str(exc)
            text = text or type(exc).__name__
            raise Unprocessable("upstream unreachable", detail=f"{url}: {text}") from None
        finally:
            if timer.active():
                timer.cancel()
        return final_url(response, url), body

    @defer.inlineCallbacks
    def _inspect(self, client: UpstreamClient, url: str) -> Any:
        base, body = yield self._fetch(client, url)
        fmt = detect.sniff(body)
        if fmt is None:
            raise Unprocessable("not a manifest",
                                detail=f"{url} is neither an HLS playlist (#EXTM3U) nor a DASH MPD")
        text = body.decode("utf-8", "replace")
        if fmt == "dash":
            return detect.dash_info(text)
        variants = detect.hls_master_variants(text)
        media_text = text
        if variants:
            _, media = yield self._fetch(client, paths.absolute(base, variants[0]))
            media_text = media.decode("utf-8", "replace")
            if detect.sniff(media) != "hls":
                raise Unprocessable("not a manifest", detail=f"variant {variants[0]} is not an HLS playlist")
        ll, live = detect.hls_media_info(media_text)
        return detect.ManifestInfo("hls", ll, live, len(variants))

    # -- serving -------------------------------------------------------------------

    def serve(self, request: IRequest, up: Upstream, segs: list[str]) -> Any:
        """Answer ``/go-live/{name}/{segs...}`` from the upstream (origin dispatch)."""
        # The Site hands every resource a server.Request (the relay needs its producer API).
        relayed = cast(Request, request)
        return UpstreamFetch(up, relayed, "/".join(segs), self.reactor, self.timeout, MANIFEST_LIMIT).start()


class _Discard:
    """Body sink for an answer we do not read (the connection is then reusable)."""

    def makeConnection(self, transport: ITransport) -> None:  # noqa: N802
        pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        pass
