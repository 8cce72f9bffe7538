"""Request bodies with limits, and no in-memory form parsing on upload paths.

twisted.web buffers every request body (to a temp file above 100 kB) and, for form
posts, parses multipart bodies completely in memory on the reactor thread.
:class:`LimitedRequest` (installed on a Site by :func:`install_body_rules`) changes two
things for paths with a :class:`BodyRule`:

* a body over the rule's limit is refused with a JSON 413: a too large
  ``Content-Length`` is noticed as soon as the headers arrive, the body is then
  discarded as it comes in instead of being stored; bodies without a length are counted;
* with ``parse_forms=False`` twisted does not parse the body; the handler streams it
  (see :mod:`streamlab.uploads.forms`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.web import server

from streamlab.api.root import CORS_HEADERS, apply_api_headers
from streamlab.errors import TooLarge
from streamlab.web.errors import error_body, write_error


@dataclass(frozen=True)
class BodyRule:
    """Body policy for request paths starting with *prefix*."""

    prefix: bytes
    limit: int | None
    parse_forms: bool = True
    spool_dir: str | None = None  # where big bodies are buffered (default: the system temp dir)


SPOOL_THRESHOLD = 100_000  # twisted.web keeps smaller bodies in memory


class _Discard(io.BytesIO):
    """A content file that forgets what is written to it."""

    def write(self, data: Any) -> int:  # noqa: D102
        return len(data)


def _rule_for(site: Any, path: bytes | None) -> BodyRule | None:
    rules: Iterable[BodyRule] = getattr(site, "body_rules", ())
    if path is None:
        return None
    bare = path.split(b"?", 1)[0]
    best: BodyRule | None = None
    for rule in rules:
        if bare.startswith(rule.prefix) and (best is None or len(rule.prefix) > len(best.prefix)):
            best = rule
    return best


class LimitedRequest(server.Request):
    """A Site request that enforces the site's :class:`BodyRule` list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_limit: int | None = None
        self._body_received = 0
        self._body_too_large = False

    def _site(self) -> Any:
        return getattr(self.channel, "site", None)

    def gotLength(self, length: int | None) -> None:
        site = self._site()
        path = getattr(self.channel, "_path", None)  # HTTP/1.1 knows the path already
        rule = _rule_for(site, path)
        if path is None:
            limits = [r.limit for r in getattr(site, "body_rules", ())]
            known = [limit for limit in limits if limit is not None]
            self._body_limit = None if (not limits or len(known) < len(limits)) else max(known)
        else:
            self._body_limit = rule.limit if rule else None
        if length is not None and self._body_limit is not None and length > self._body_limit:
            self._body_too_large = True
            self.content = _Discard()
            self._refuse_before_body(length)
            return
        if rule is not None and rule.spool_dir and (length is None or length >= SPOOL_THRESHOLD):
            # big upload bodies go to the state disk, not to /tmp (often a RAM-backed tmpfs)
            os.makedirs(rule.spool_dir, exist_ok=True)
            self.content = tempfile.TemporaryFile(dir=rule.spool_dir, prefix=".body-")
            return
        super().gotLength(length)

    def _refuse_before_body(self, length: int) -> bool:
        """A client waiting for ``100 Continue`` gets the 413 instead and sends nothing.

        The connection is closed after the answer (the body will not follow).
        """
        expect = self.requestHeaders.getRawHeaders(b"expect") or []
        transport = getattr(self.channel, "transport", None)
        if not expect or expect[0].lower() != b"100-continue" or transport is None \
                or not hasattr(self.channel, "_send100Continue"):
            return False
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" from twisted
        _status, body = error_body(TooLarge("body too large", detail=f"request bodies here are limited to "
                                             f"{self._body_limit} bytes", limit=self._body_limit,
                                             size=length))
        data = json.dumps(body).encode()
        head = [b"HTTP/1.1 413 Request Entity Too Large", b"Content-Type: application/json",
                b"Content-Length: " + str(len(data)).encode(), b"Connection: close",
                b"Cache-Control: no-cache, no-store, must-revalidate"]
        head += [name + b": " + value for name, value in CORS_HEADERS.items()]
        transport.write(b"\r\n".join(head) + b"\r\n\r\n" + data)
        transport.loseConnection()
        return True

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_too_large:
            return
        self._body_received += len(data)
        if self._body_limit is not None and self._body_received > self._body_limit:
            self._body_too_large = True
            self._discard_body()
            return
        super().handleContentChunk(data)

    def _discard_body(self) -> None:
        """Close the body received so far (a spool file is removed) and drop the rest."""
        if self.content is not None and not isinstance(self.content, _Discard):
            self.content.close()
        self.content = _Discard()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        rule = _rule_for(self._site(), path)
        if rule is not None:
            if not rule.parse_forms:
                self._parsePOSTFormSubmission = False
            if rule.limit is not None and self._body_received > rule.limit:
                self._body_too_large = True
        if self._body_too_large:
            self._parsePOSTFormSubmission = False
            self._discard_body()
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if not self._body_too_large:
            super().process()
            return
        self.site = self._site()
        rule = _rule_for(self.site, self.path)
        limit = rule.limit if rule is not None else self._body_limit
        apply_api_headers(self)
        body = write_error(self, TooLarge("body too large", detail=f"request bodies here are limited to "
                                          f"{limit} bytes", limit=limit))
        self.setHeader(b"content-length", str(len(body)).encode())
        self.write(body)
        self.finish()


def install_body_rules(site: server.Site, rules: Iterable[BodyRule]) -> None:
    """Make *site* use :class:`LimitedRequest` with *rules* (added to any already there)."""
    site.requestFactory = LimitedRequest
    site.body_rules = tuple(getattr(site, "body_rules", ())) + tuple(rules)  # type: ignore[attr-defined]


MULTIPART_OVERHEAD = 1024 * 1024


def upload_body_rules(max_upload_bytes: int, spool_dir: str | None = None) -> list[BodyRule]:
    """``/api/upload...``: bodies up to the upload limit (plus multipart framing), parsed
    by the upload handlers themselves, buffered in *spool_dir* when given."""
    return [BodyRule(b"/api/upload", max_upload_bytes + MULTIPART_OVERHEAD, parse_forms=False,
                     spool_dir=spool_dir)]


def api_body_rules(max_upload_bytes: int, spool_dir: str | None = None) -> list[BodyRule]:
    """Every ``/api/...`` body is JSON or a small form (1 MiB, as :mod:`streamlab.api.jsonio`
    enforces), refused early; ``/api/upload...`` gets :func:`upload_body_rules`."""
    from streamlab.api.jsonio import MAX_JSON_BYTES

    return [BodyRule(b"/api/", MAX_JSON_BYTES)] + upload_body_rules(max_upload_bytes, spool_dir)
