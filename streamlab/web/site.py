"""Building the twisted.web Site for a listener (one Site, one root resource each)."""

from __future__ import annotations

from twisted.web.resource import IResource
from twisted.web.server import Site


class QuietSite(Site):
    """A Site that does not write an access log line per request (the network log and
    /metrics cover that) and hands out no server banner."""

    def log(self, request: object) -> None:  # noqa: D102 - twisted API
        pass


def build_site(root: IResource, reactor: object | None = None) -> Site:
    """A Site serving *root*."""
    site = QuietSite(root, reactor=reactor) if reactor is not None else QuietSite(root)
    site.displayTracebacks = False
    return site
