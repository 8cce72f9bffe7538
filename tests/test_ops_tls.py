"""tls = auto certificate generation/reuse, tls = files, ALPN, and the one wrapper."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from streamlab import config as configmod
from streamlab.web import tls


def _config(tmp_path, **server):
    overrides = {"media-dir": str(tmp_path / "media"), "state-dir": str(tmp_path / "state")}
    overrides.update({k.replace("_", "-"): v for k, v in server.items()})
    return configmod.load(None, overrides)


def test_auto_generates_once_with_the_sans_and_reuses(tmp_path):
    cfg = _config(tmp_path, tls="auto", tls_san="player.lab,10.0.0.5,localhost")
    cert_path, key_path = tls.ensure_auto_certificate(cfg)
    assert cert_path == str(tmp_path / "state" / "tls" / "cert.pem")
    assert oct(os.stat(key_path).st_mode & 0o777) == "0o600"
    pem = open(cert_path, "rb").read()
    assert tls.cert_sans(pem) == {"player.lab", "10.0.0.5", "localhost"}
    cert = x509.load_pem_x509_certificate(pem)
    # naive UTC datetimes: Debian 12's cryptography 38 has no *_utc properties
    assert cert.not_valid_after - cert.not_valid_before > datetime.timedelta(days=365)
    # second start: the same certificate
    tls.ensure_auto_certificate(cfg)
    assert open(cert_path, "rb").read() == pem
    # SANs changed: a new one
    cfg2 = _config(tmp_path, tls="auto", tls_san="other.lab")
    tls.ensure_auto_certificate(cfg2)
    assert tls.cert_sans(open(cert_path, "rb").read()) == {"other.lab"}


def test_auto_regenerates_before_expiry(tmp_path):
    cfg = _config(tmp_path, tls="auto")
    cert_path, _ = tls.ensure_auto_certificate(cfg)
    first = open(cert_path, "rb").read()
    later = datetime.datetime.now(datetime.UTC) + tls.VALIDITY - datetime.timedelta(days=1)
    tls.ensure_auto_certificate(cfg, now=later)
    assert open(cert_path, "rb").read() != first


def test_auto_writes_to_configured_paths(tmp_path):
    cfg = _config(tmp_path, tls="auto", tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    assert tls.ensure_auto_certificate(cfg) == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert (tmp_path / "c.pem").exists() and (tmp_path / "k.pem").exists()


def test_files_mode_and_errors(tmp_path):
    cert_pem, key_pem = tls.generate_self_signed(["localhost"])
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    cfg = _config(tmp_path, tls="files", tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    t = tls.load(cfg)
    assert t is not None and t.cert_path == str(tmp_path / "c.pem")
    # a key that does not belong to the certificate: one config error line at start
    _, other_key = tls.generate_self_signed(["localhost"])
    (tmp_path / "k.pem").write_bytes(other_key)
    with pytest.raises(configmod.ConfigError, match=r"\[server\] tls_cert"):
        tls.load(cfg)
    (tmp_path / "c.pem").write_bytes(b"not a certificate")
    with pytest.raises(configmod.ConfigError):
        tls.load(cfg)


def test_off_is_none(tmp_path):
    assert tls.load(_config(tmp_path)) is None


def test_wrap_and_alpn(tmp_path):
    t = tls.load(_config(tmp_path, tls="auto"))
    inner = Factory.forProtocol(Protocol)
    wrapped = t.wrap(inner)
    assert isinstance(wrapped, TLSMemoryBIOFactory) and wrapped.wrappedFactory is inner
    main = t.context_factory(allow_h2=True)
    session = t.context_factory(allow_h2=False)
    expected = [b"h2", b"http/1.1", b"http/1.0"] if tls.h2_available() else [b"http/1.1", b"http/1.0"]
    assert main._acceptableProtocols == expected
    assert session._acceptableProtocols == [b"http/1.1", b"http/1.0"]


def _handshake(t, offered, allow_h2=False):
    """A real TLS handshake in memory: Python's ssl client offering *offered* by ALPN,
    against the daemon's TLS wrapper around a twisted.web Site (which, like every
    listener's, takes part in protocol negotiation).  Returns (selected protocol, client
    error, server protocol)."""
    import ssl

    from twisted.internet.testing import StringTransport
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    server = t.wrap(Site(Resource()), allow_h2).buildProtocol(None)
    wire = StringTransport()
    wire.setTcpNoDelay = lambda on: None
    server.makeConnection(wire)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(offered)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing)
    for _ in range(10):
        try:
            client.do_handshake()
            return client.selected_alpn_protocol(), None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return None, exc
        server.dataReceived(outgoing.read())  # a refused handshake must not raise here
        incoming.write(wire.value())
        wire.clear()
    raise AssertionError("handshake did not finish")


def test_alpn_http10_only_client_is_served_and_unknown_gets_no_application_protocol(tmp_path):
    t = tls.load(_config(tmp_path, tls="auto"))
    # RFC 7301: the server picks one of the client's protocols it speaks; HTTP/1.0 is
    # HTTP/1.x, which every listener serves
    assert _handshake(t, ["http/1.0"]) == ("http/1.0", None)
    assert _handshake(t, ["http/1.0", "http/1.1"]) == ("http/1.1", None)
    assert _handshake(t, ["http/1.1"], allow_h2=True) == ("http/1.1", None)
    if tls.h2_available():
        assert _handshake(t, ["http/1.1", "h2"], allow_h2=True) == ("h2", None)
        assert _handshake(t, ["h2"])[1] is not None  # session ports never speak h2
    # no overlap: a no_application_protocol alert (was internal_error), on both kinds
    for allow_h2 in (False, True):
        selected, err = _handshake(t, ["spdy/3", "h3"], allow_h2)
        assert selected is None and "NO_APPLICATION_PROTOCOL" in str(err).upper().replace(" ", "_"), err
        assert _handshake(t, ["http/1.0"], allow_h2) == ("http/1.0", None)
    # no ALPN at all: served, nothing negotiated
    assert _handshake(t, []) == (None, None)
