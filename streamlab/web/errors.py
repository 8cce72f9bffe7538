"""The one error mapper: domain exceptions -> JSON error responses ``{"error", "detail"}``.

Every twisted.web resource (API, origin, session ports, dashboard, uploads) answers an
error through :func:`write_error`; Klein apps reach it through
``streamlab.api.errors.install``.  Unexpected exceptions become a 500 whose body names
no internals.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from streamlab.errors import StreamlabError


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and JSON body for *exc*."""
    if isinstance(exc, StreamlabError):
        return exc.status, exc.body()
    if isinstance(exc, HTTPException) and exc.code is not None:
        # Klein's router: unknown route (404) or wrong method (405).
        return exc.code, {"error": (exc.name or "error").lower()}
    return 500, {"error": "internal error"}


DEFAULT_ALLOW = "GET, HEAD, OPTIONS"


def allowed_methods(exc: BaseException) -> str:
    """The ``Allow`` header of a 405 for *exc*: its ``allow`` (domain errors), Werkzeug's
    ``valid_methods`` (Klein's router) or the read-only default."""
    allow = getattr(exc, "extra", {}).get("allow") if isinstance(exc, StreamlabError) else None
    if not allow:
        valid = getattr(exc, "valid_methods", None)
        if valid:
            names = {m.upper() for m in valid} | {"OPTIONS"}
            allow = ", ".join(sorted(names))
    return str(allow or DEFAULT_ALLOW)


def write_error(request: IRequest, exc: BaseException) -> bytes:
    """Set status and headers on *request* for *exc*; return the body bytes (a 405
    always names the allowed methods in ``Allow``)."""
    status, body = error_body(exc)
    if status == 405:
        request.setHeader(b"allow", allowed_methods(exc).encode("ascii"))
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
    if status == 429 and "retry_after" in body:
        request.setHeader(b"retry-after", str(body["retry_after"]).encode())
    return json.dumps(body).encode()
