"""Optional HTTP Basic auth for the operator surface (``[server] auth_htpasswd``).

Protected on the main listener: every state-changing call (any method but GET, HEAD and
the CORS pre-flight OPTIONS, on any path: ``/api/*`` mutations and
``DELETE /go-live/api/stop/{id}`` alike), ``/debug`` and ``/dashboard/``.  Open:
``/go-live/...`` reads, ``/api`` reads, ``/metrics``, and the bootstrap and session ports
(other listeners that never pass through here; session ports serve media only and answer
405/404 to control calls, see streamlab.proxy.listener), so unattended players keep working.

The htpasswd file holds ``user:hash`` lines with bcrypt (``$2y$``, ``$2b$``, ``$2a$``)
or SHA-1 (``{SHA}base64``) hashes, e.g. made by ``htpasswd -B`` or ``htpasswd -s``.
It is read again when it changes (checked at most once a second).  bcrypt checks run in
a thread (they take tens of milliseconds by design); a verified user/password pair is
remembered (by SHA-256, in memory) so the next requests are answered at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections import OrderedDict
from typing import cast

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request

from streamlab.config import Config
from streamlab.interfaces import IDaemonReactor

log = Logger()

REALM = "streamlab"
OPEN_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
CACHE_SIZE = 256


def parse_htpasswd(text: str) -> dict[str, str]:
    """``{user: hash}`` of the supported entries (other lines are skipped)."""
    users: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        hashed = hashed.strip()
        if hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}")):
            users[user] = hashed
        else:
            log.warn("htpasswd: entry for {user} uses an unsupported hash (use bcrypt or SHA)", user=user)
    return users


def check_password(hashed: str, password: str) -> bool:
    """True when *password* matches the htpasswd *hashed* value (blocking for bcrypt)."""
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode("utf-8")).digest()).decode()  # noqa: S324
        return hmac.compare_digest(digest, hashed[5:])
    if hashed.startswith(("$2y$", "$2b$", "$2a$")):
        import bcrypt

        try:
            return bcrypt.checkpw(password.encode("utf-8"), ("$2b$" + hashed[4:]).encode())
        except ValueError:
            return False
    return False


def credentials(request: IRequest) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic ``Authorization`` header, or None."""
    header = request.getHeader(b"authorization")
    if not header or not header[:6].lower() == b"basic ":
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


class Htpasswd:
    """The users of an htpasswd file, reloaded when the file changes.

    *reactor* gives the time (reload checks) and the thread pool the bcrypt checks run on;
    a ``task.Clock`` is enough while no bcrypt check has to run."""

    def __init__(self, path: str, reactor: IDaemonReactor) -> None:
        self.path = path
        self.reactor = reactor
        self._users: dict[str, str] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = -1.0
        self._ok: OrderedDict[bytes, str] = OrderedDict()
        self.reload()

    def reload(self) -> None:
        """Read the file again when its mtime or size changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            log.warn("htpasswd {path}: {err}; nobody can log in", path=self.path, err=exc.strerror)
            self._users, self._stamp = {}, None
            self._ok.clear()
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            self._users = parse_htpasswd(fh.read())
        self._stamp = stamp
        self._ok.clear()

    def _maybe_reload(self) -> None:
        now = self.reactor.seconds()
        if now - self._checked >= 1.0:
            self._checked = now
            self.reload()

    @staticmethod
    def _key(user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\x00{password}".encode()).digest()

    def known(self, user: str, password: str) -> bool | None:
        """True/False when decidable without hashing now; None when bcrypt must run."""
        self._maybe_reload()
        hashed = self._users.get(user)
        if hashed is None:
            return False
        key = self._key(user, password)
        if self._ok.get(key) == hashed:
            self._ok.move_to_end(key)
            return True
        if hashed.startswith("{SHA}"):
            return self._remember(key, hashed, check_password(hashed, password))
        return None

    def verify(self, user: str, password: str) -> Deferred[bool]:
        """The bcrypt check on the reactor's thread pool (cached answers at once)."""
        now = self.known(user, password)
        if now is not None:
            return defer.succeed(now)
        hashed = self._users[user]
        pool = self.reactor.getThreadPool()
        d = threads.deferToThreadPool(self.reactor, pool, check_password, hashed, password)
        return d.addCallback(lambda ok: self._remember(self._key(user, password), hashed, ok))

    def _remember(self, key: bytes, hashed: str, ok: bool) -> bool:
        if ok:
            self._ok[key] = hashed
            while len(self._ok) > CACHE_SIZE:
                self._ok.popitem(last=False)
        return ok


def protected(first_segment: bytes, method: bytes) -> bool:
    """Does a request for ``/<first_segment>/...`` with *method* need a login?"""
    if first_segment in (b"debug", b"dashboard"):
        return True
    return method not in OPEN_METHODS


def _deny(request: IRequest) -> bytes:
    request.setResponseCode(401)
    request.setHeader(b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"access-control-allow-origin", b"*")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps({"error": "authentication required",
                       "detail": "this path needs HTTP Basic credentials (auth_htpasswd)"}).encode()


class _Denied(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return _deny(request)


class _Pending(Resource):
    """Renders once the password check finished: the real resource, or 401."""

    isLeaf = True

    def __init__(self, gate: AuthGate, path: bytes, user: str, password: str) -> None:
        super().__init__()
        self.gate, self.path, self.user, self.password = gate, path, user, password

    def render(self, request: IRequest) -> int:
        d = self.gate.users.verify(self.user, self.password)
        # The Site hands resources a server.Request (IRequest declares neither
        # ``finished`` nor ``render``).
        req = cast(Request, request)

        def decided(ok: bool) -> None:
            if req.finished or getattr(request, "_disconnected", False):
                return
            if not ok:
                request.write(_deny(request))
                request.finish()
                return
            child = getChildForRequest(self.gate.inner.getChildWithDefault(self.path, request), request)
            req.render(child)

        def failed(f: Failure) -> None:
            log.failure("auth check failed", f)
            if not req.finished:
                request.setResponseCode(500)
                request.finish()

        d.addCallbacks(decided, failed)
        return NOT_DONE_YET


class AuthGate(Resource):
    """Wraps the main root resource *inner*; protects the paths of :func:`protected`."""

    def __init__(self, inner: IResource, users: Htpasswd) -> None:
        super().__init__()
        self.inner = inner
        self.users = users

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802
        if not protected(path, request.method):
            return self._inner_child(path, request)
        creds = credentials(request)
        if creds is None:
            return _Denied()
        known = self.users.known(*creds)
        if known is True:
            return self._inner_child(path, request)
        if known is False:
            return _Denied()
        return _Pending(self, path, *creds)

    def _inner_child(self, path: bytes, request: IRequest) -> IResource:
        child: IResource = self.inner.getChildWithDefault(path, request)
        return child

    def render(self, request: IRequest) -> bytes | int:
        body: bytes | int = self.inner.render(request)
        return body


def _loopback_only(description: str) -> bool:
    if description.startswith("unix:"):
        return True
    match = re.search(r"(?:^|:)interface=((?:\\.|[^:])*)", description)
    if match is None:
        return False
    host = re.sub(r"\\(.)", r"\1", match.group(1)).strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def protect(root: IResource, config: Config, reactor: IDaemonReactor) -> IResource:
    """*root* behind Basic auth when ``auth_htpasswd`` is set; otherwise *root* itself and
    a warning when any listener is reachable beyond loopback."""
    path = config.server.auth_htpasswd
    if path:
        log.info("auth: HTTP Basic required for every state-changing call, /debug and /dashboard/ ({path})",
                 path=path)
        return AuthGate(root, Htpasswd(path, reactor))
    exposed = [d for d in (config.server.listen, config.server.bootstrap_listen) if not _loopback_only(d)]
    if exposed:
        log.warn("auth: listening beyond loopback ({listeners}) without auth_htpasswd: anyone who can reach "
                 "this host can change sessions, jobs and content", listeners=", ".join(exposed))
    return root
