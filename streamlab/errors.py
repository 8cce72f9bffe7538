"""Domain exceptions.  The API's one error mapper (streamlab.api.errors) turns them into
JSON ``{"error": ..., "detail": ...}`` responses with the right status."""

from __future__ import annotations

from typing import Any


class StreamlabError(Exception):
    """Base of every error the API maps to a 4xx/5xx JSON answer."""

    status = 500
    error = "internal error"

    def __init__(self, error: str | None = None, detail: Any = None, **extra: Any) -> None:
        super().__init__(error or self.error)
        if error is not None:
            self.error = error
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body for this error."""
        out: dict[str, Any] = {"error": self.error}
        if self.detail is not None:
            out["detail"] = self.detail
        out.update(self.extra)
        return out


class Invalid(StreamlabError):
    """Bad input the caller can fix (400). ``fields`` maps field name -> reason."""

    status = 400
    error = "invalid"


class NotFound(StreamlabError):
    """Unknown thing (404)."""

    status = 404
    error = "not found"


class Conflict(StreamlabError):
    """The state does not allow this now (409)."""

    status = 409
    error = "conflict"


class TooLarge(StreamlabError):
    """Body or upload over a limit (413)."""

    status = 413
    error = "too large"


class Unprocessable(StreamlabError):
    """Well-formed but wrong content, e.g. hash mismatch or corrupt media (422)."""

    status = 422
    error = "unprocessable"


class TooMany(StreamlabError):
    """Rate or count limit (429)."""

    status = 429
    error = "too many requests"


class Unavailable(StreamlabError):
    """Temporarily cannot do it: ports exhausted, backend failure (503)."""

    status = 503
    error = "unavailable"
