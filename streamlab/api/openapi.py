"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the whole HTTP API.

The paths, parameters and prose are a static file of the package
(``streamlab/api/openapi.json``), kept true by ``tests/test_ops_openapi.py``: every Klein
route the daemon serves, the ``/go-live`` origin paths and the other root resources are
described, and nothing else.  :func:`klein_routes` is the enumeration that test uses.

The body schemas are not in that file: :func:`build_document` fills every JSON request
and success response body in from :mod:`streamlab.api.schemas`, whose schemas come from
the same tables the validators use (control fields from :mod:`streamlab.proxy.fields`,
encode options from :mod:`streamlab.jobs.options`), so the document cannot drift from
what the handlers accept.  Every operation also declares the JSON error body for any
other status (``default``).
"""

from __future__ import annotations

import json
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


_EXTRA_SUCCESS = {"POST /api/sessions": "201", "POST /api/setup/seed": "202"}


def build_document(path: str = OPENAPI_FILE) -> dict[str, Any]:
    """The OpenAPI document: the static file with every body schema filled in."""
    from streamlab.api import schemas

    with open(path, encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    requests = schemas.request_bodies()
    responses = schemas.response_bodies()
    for route, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "parameters" or not isinstance(op, dict):
                continue
            key = f"{method.upper()} {route}"
            body = op.get("requestBody", {}).get("content", {})
            if key in requests:
                body.setdefault("application/json", {})["schema"] = requests[key]
            if "multipart/form-data" in body and " /api/upload" in key:
                body["multipart/form-data"]["schema"] = schemas.multipart_upload(key)
            answers = op.setdefault("responses", {})
            if key in _EXTRA_SUCCESS:
                answers.setdefault(_EXTRA_SUCCESS[key], {"description": "created / accepted",
                                                         "content": {"application/json": {}}})
            if key in responses:
                for code, answer in answers.items():
                    content = answer.get("content", {}) if isinstance(answer, dict) else {}
                    if code.startswith("2") and "application/json" in content:
                        content["application/json"]["schema"] = responses[key]
            answers.setdefault("default", {"$ref": "#/components/responses/Error"})
    return doc


class OpenApiResource(Resource):
    """Serves the OpenAPI document (built once, at start)."""

    isLeaf = True

    def __init__(self, path: str = OPENAPI_FILE) -> None:
        super().__init__()
        self.body = json.dumps(build_document(path), separators=(",", ":")).encode()

    def render_GET(self, request: IRequest) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        return self.body
