"""TLS for every listener (``[server] tls = off | auto | files``).

* ``off``: plain HTTP everywhere.
* ``auto``: a self-signed certificate (RSA 2048, SHA-256, subjectAltNames from
  ``tls_san``) is generated on first start and reused after; it is written to
  ``tls_cert``/``tls_key`` when those are set, else to ``<state_dir>/tls/cert.pem`` and
  ``key.pem`` (key mode 0600).  It is generated again when it expires within a week or
  when ``tls_san`` no longer matches it.  Clients trust it by importing ``cert.pem``.
* ``files``: the PEM certificate (chain) and key named by ``tls_cert``/``tls_key``.

:func:`load` builds one :class:`TLS` for the daemon; :meth:`TLS.wrap` is the one function
every listener goes through (main, bootstrap and each session port), so they all speak
the same TLS.  HTTP/2 is offered by ALPN on the main and bootstrap listeners when the h2
extra is installed; session ports offer HTTP/1.1 only, because their socket faults
(reset, hang, partial body) act on one TCP connection = one request.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from OpenSSL.SSL import Error as SSLError
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore, IStreamServerEndpoint
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from streamlab.config import Config
from streamlab.fsutil import atomic_write

log = Logger()

RENEW_BEFORE = datetime.timedelta(days=7)
VALIDITY = datetime.timedelta(days=825)


def h2_available() -> bool:
    """True when Twisted can speak HTTP/2 (the ``h2`` extra is installed)."""
    try:
        from twisted.web._http2 import H2Connection  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- certificates


def _san_entries(sans: Sequence[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for name in sans:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate_self_signed(sans: Sequence[str], now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)`` of a new self-signed server certificate for *sans*."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or datetime.datetime.now(datetime.UTC)
    sans = list(sans) or ["localhost"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0][:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "streamlab (self-signed)")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
        # its own trust anchor: clients import this one file
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def cert_sans(cert_pem: bytes) -> set[str]:
    """The DNS names and IP addresses a PEM certificate is valid for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | \
        {str(v) for v in ext.get_values_for_type(x509.IPAddress)}


def _not_valid_after(cert: Any) -> datetime.datetime:
    """The certificate's expiry as an aware UTC datetime (cryptography 38, Debian 12's,
    only has the naive ``not_valid_after``; 42+ adds ``not_valid_after_utc``)."""
    aware: datetime.datetime | None = getattr(cert, "not_valid_after_utc", None)
    if aware is not None:
        return aware
    naive: datetime.datetime = cert.not_valid_after
    return naive.replace(tzinfo=datetime.UTC)


def _needs_new(cert_path: str, key_path: str, sans: Sequence[str], now: datetime.datetime) -> str | None:
    """Why the certificate at *cert_path* must be generated again (None: reuse it)."""
    from cryptography import x509

    if not (os.path.isfile(cert_path) and os.path.isfile(key_path)):
        return "none yet"
    try:
        with open(cert_path, "rb") as fh:
            pem = fh.read()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if _not_valid_after(cert) - now < RENEW_BEFORE:
        return "expires soon"
    wanted = {str(ipaddress.ip_address(s.strip("[]"))) if _is_ip(s) else s for s in sans}
    if cert_sans(pem) != wanted:
        return "tls_san changed"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def auto_paths(config: Config) -> tuple[str, str]:
    """Where ``tls = auto`` keeps its certificate and key."""
    server = config.server
    if server.tls_cert and server.tls_key:
        return server.tls_cert, server.tls_key
    base = os.path.join(config.paths.state_dir, "tls")
    return os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")


def ensure_auto_certificate(config: Config, now: datetime.datetime | None = None) -> tuple[str, str]:
    """Generate (first start) or reuse the ``tls = auto`` certificate; its paths."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = auto_paths(config)
    sans = list(config.server.tls_san)
    why = _needs_new(cert_path, key_path, sans, now)
    if why is not None:
        cert_pem, key_pem = generate_self_signed(sans, now)
        atomic_write(key_path, key_pem, 0o600)
        atomic_write(cert_path, cert_pem, 0o644)
        log.info("tls: generated a self-signed certificate for {sans} in {path} ({why})",
                 sans=",".join(sans), path=cert_path, why=why)
    return cert_path, key_path


# --------------------------------------------------------------------------- ALPN

#: What every listener speaks over TLS besides h2: HTTP/1.x (Twisted's HTTPChannel
#: serves HTTP/1.0 requests as well as HTTP/1.1 ones, so a client offering only
#: ``http/1.0`` gets it).
HTTP1_PROTOCOLS = [b"http/1.1", b"http/1.0"]


class NoApplicationProtocol(SSLError):  # noqa: N818 - named after the TLS alert
    """Raised in the ALPN callback: OpenSSL answers with a ``no_application_protocol``
    alert (RFC 7301 section 3.2).  An ``OpenSSL.SSL.Error``, so Twisted's TLS layer
    treats it as the failed handshake it is (sends the alert, closes, logs nothing)."""


def alpn_selector(acceptable: Sequence[bytes]) -> Any:
    """The server's ALPN select callback: our most preferred protocol the client offers.

    Twisted's own callback returns ``b""`` when nothing overlaps, which OpenSSL turns into
    an ``internal_error`` alert; RFC 7301 asks for ``no_application_protocol``, which
    OpenSSL sends when the callback fails (pyOpenSSL: ``SSL_TLSEXT_ERR_ALERT_FATAL``).
    """
    ours = list(acceptable)

    def select(conn: Any, offered: list[bytes]) -> bytes:
        for proto in ours:
            if proto in offered:
                return proto
        # args shaped like OpenSSL's error queue, which Twisted's TLS layer reads
        offered_text = b",".join(offered).decode("latin-1", "replace")
        reason = f"no application protocol in {offered_text}"
        raise NoApplicationProtocol([("SSL routines", "alpn_select", reason)])

    return select


class ALPNCertificateOptions(CertificateOptions):
    """Twisted's certificate options with :func:`alpn_selector` as the ALPN callback of
    every context they build (Twisted may build a new one, e.g. after pickling)."""

    _alpn_context_id: int | None = None

    def __init__(self, alpn: Sequence[bytes], **kw: Any) -> None:
        super().__init__(acceptableProtocols=list(alpn), **kw)
        self.alpn = list(alpn)

    def getContext(self) -> Any:  # noqa: N802 - Twisted's interface
        ctx = super().getContext()
        if self._alpn_context_id != id(ctx):
            ctx.set_alpn_select_callback(alpn_selector(self.alpn))
            self._alpn_context_id = id(ctx)
        return ctx


# --------------------------------------------------------------------------- listeners


class PromptCloseTLSProtocol(BufferingTLSTransport):
    """TLS that closes the TCP connection right after sending its close_notify.

    Twisted's TLS layer sends close_notify and then waits for the peer's close_notify
    before closing TCP.  A client that never answers — or whose answer is never read,
    because a socket fault stopped reading — would keep the connection (and the player
    waiting for a FIN) open until the session expires.  TLS 1.2/1.3 only require the
    close_notify before closing our write side, so the FIN follows it at once.
    """

    @property
    def negotiatedProtocol(self) -> bytes | None:  # noqa: N802 - Twisted's interface
        """The ALPN protocol as the HTTP layer sees it: ``http/1.0`` is served by the same
        HTTP/1.x channel as ``http/1.1`` (the request line carries the real version, and
        the answer uses it), and Twisted's channel only knows the name ``http/1.1``."""
        proto = super().negotiatedProtocol
        return b"http/1.1" if proto == b"http/1.0" else proto

    def _shutdownTLS(self) -> None:  # noqa: N802 - Twisted's method
        super()._shutdownTLS()
        transport = self.transport
        if self.disconnecting and not self._aborted and transport is not None:
            transport.loseConnection()  # after the close_notify (and anything before it)


class PromptCloseTLSFactory(TLSMemoryBIOFactory):
    """``TLSMemoryBIOFactory`` building :class:`PromptCloseTLSProtocol`."""

    protocol = PromptCloseTLSProtocol

    def _applyProtocolNegotiation(self, connection: Any) -> None:  # noqa: N802 - Twisted's method
        """Keep our ALPN callback.  Twisted would install its own on the shared context
        for every connection whose site offers protocols (``IProtocolNegotiationFactory``),
        answering ``internal_error`` where nothing overlaps; :class:`ALPNCertificateOptions`
        already offers the same list (h2 only where the site can speak it)."""



class TLS:
    """The daemon's TLS settings: certificate options and the listener wrapper."""

    def __init__(self, cert_path: str, key_path: str, h2: bool | None = None) -> None:
        from OpenSSL import crypto
        from twisted.internet import ssl

        self.cert_path = cert_path
        self.key_path = key_path
        with open(cert_path, "rb") as fh:
            pems = fh.read()
        with open(key_path, "rb") as fh:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, fh.read())
        marker = b"-----BEGIN CERTIFICATE-----"
        blocks = [marker + part for part in pems.split(marker)[1:]]
        if not blocks:
            raise ValueError(f"{cert_path}: no PEM certificate")
        certs = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
        self.h2 = h2_available() if h2 is None else h2
        common = dict(privateKey=key, certificate=certs[0], extraCertChain=certs[1:] or None,
                      raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        protocols = [b"h2", *HTTP1_PROTOCOLS] if self.h2 else list(HTTP1_PROTOCOLS)
        self._options = {
            True: ALPNCertificateOptions(protocols, **common),
            False: ALPNCertificateOptions(HTTP1_PROTOCOLS, **common),
        }
        for options in self._options.values():
            options.getContext()  # fails now (at start) when the key does not match the certificate

    def context_factory(self, allow_h2: bool = True) -> Any:
        """The ``IOpenSSLServerConnectionCreator`` (ALPN: h2 when allowed and installed)."""
        return self._options[bool(allow_h2)]

    def wrap(self, factory: IProtocolFactory, allow_h2: bool = True) -> IProtocolFactory:
        """*factory* behind TLS: the one function main, bootstrap and session listeners use."""
        return PromptCloseTLSFactory(self.context_factory(allow_h2), False, factory)


def load(config: Config) -> TLS | None:
    """The daemon's :class:`TLS` for *config* (None when ``tls = off``)."""
    from streamlab.config import ConfigError

    mode = config.server.tls
    if mode == "off":
        return None
    try:
        if mode == "auto":
            cert_path, key_path = ensure_auto_certificate(config)
        else:
            cert_path, key_path = config.server.tls_cert, config.server.tls_key
        return TLS(cert_path, key_path)
    except OSError as exc:
        raise ConfigError(f"[server] tls: {exc.filename or ''}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - bad PEM, key not matching the certificate, ...
        key = "tls_san" if mode == "auto" else "tls_cert"
        raise ConfigError(f"[server] {key}: unusable certificate or key: {exc}") from None


@implementer(IStreamServerEndpoint)
class _WrappedEndpoint:
    """An endpoint listening with a wrapped factory."""

    def __init__(self, inner: IStreamServerEndpoint, tls: TLS, allow_h2: bool) -> None:
        self.inner = inner
        self.tls = tls
        self.allow_h2 = allow_h2

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.inner.listen(self.tls.wrap(factory, self.allow_h2))


def server_endpoint(reactor: IReactorCore, description: str, tls: TLS | None,
                    allow_h2: bool = True) -> IStreamServerEndpoint:
    """The endpoint for a listener string (``tcp:30000:interface=...``), behind *tls*."""
    inner: IStreamServerEndpoint = endpoints.serverFromString(reactor, description)
    if tls is None or description.startswith(("ssl:", "ssl6:")):
        return inner  # an explicit ssl: endpoint string carries its own certificate
    return _WrappedEndpoint(inner, tls, allow_h2)


def listener_service(reactor: IReactorCore, description: str, factory: IProtocolFactory, tls: TLS | None,
                     name: str) -> StreamServerEndpointService:
    """A service listening on *description* (replaces ``strports.service``)."""
    svc = StreamServerEndpointService(server_endpoint(reactor, description, tls), factory)
    svc.setName(name)
    svc._raiseSynchronously = True  # like strports.service: a port in use stops the start
    return svc
