"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the whole HTTP API.

The document is a static file of the package (``streamlab/api/openapi.json``), kept
true by ``tests/test_ops_openapi.py``: every Klein route the daemon serves, the
``/go-live`` origin paths and the other root resources are described, and nothing else.
:func:`klein_routes` is the enumeration that test uses.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

OPENAPI_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")
_PARAM = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")


def klein_routes(api_root: Any) -> dict[str, set[str]]:
    """``{"/api/sessions/{sid}": {"get", "delete", ...}}`` of every Klein app mounted on
    *api_root* (a :class:`streamlab.api.root.ApiRoot`); HEAD and OPTIONS are left out."""
    out: dict[str, set[str]] = {}
    for resource in api_root._groups.values():
        app = getattr(resource, "_app", None)
        if app is None:
            continue
        for rule in app.url_map.iter_rules():
            path = "/api" + _PARAM.sub(r"{\1}", rule.rule)
            methods = {m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
            out.setdefault(path, set()).update(methods)
    return out


class OpenApiResource(Resource):
    """Serves the OpenAPI document (read once, at start)."""

    isLeaf = True

    def __init__(self, path: str = OPENAPI_FILE) -> None:
        super().__init__()
        with open(path, "rb") as fh:
            self.body = fh.read()

    def render_GET(self, request: IRequest) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        return self.body
