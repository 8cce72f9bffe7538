"""Klein's side of the one error mapper (``streamlab.web.errors``).

Klein apps call :func:`install` once in their class body.  ``write_error``,
``error_body`` and ``allowed_methods`` are re-exported from ``streamlab.web.errors``
for older imports; new code imports them from there.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from streamlab.errors import StreamlabError
from streamlab.web.errors import DEFAULT_ALLOW, allowed_methods, error_body, write_error

__all__ = ["DEFAULT_ALLOW", "allowed_methods", "error_body", "install", "write_error"]

log = Logger()


def install(app: Klein) -> None:
    """Register the mapper on a (class-level) Klein app: Klein calls each handler with the
    app's instance, the request and the failure."""

    @app.handle_errors(StreamlabError)
    def _domain(self: Any, request: IRequest, failure: Failure) -> bytes:
        return write_error(request, _exception(failure))

    @app.handle_errors(Exception)
    def _unexpected(self: Any, request: IRequest, failure: Failure) -> bytes:
        exc = _exception(failure)
        if not isinstance(exc, HTTPException):
            log.failure("unhandled error serving {uri}", failure, uri=request.uri)
        return write_error(request, exc)


def _exception(failure: Failure) -> BaseException:
    """The exception a failure carries (Failure.value is never None once constructed)."""
    value = failure.value
    return value if value is not None else RuntimeError(failure.getErrorMessage())
