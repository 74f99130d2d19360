"""The TLS client side shared by every prober that speaks TLS: the options a path may set,
the client contexts built from them, and the facts of the certificate a server presents."""

from __future__ import annotations

import _ssl
import ssl
import warnings
from functools import lru_cache

from cryptography import x509

from .base import ProberOptions, TlsFacts


class TlsOptions(ProberOptions):
    """TLS settings a path may set (``tls``, ``http``, ``ldap`` and others embed these)."""

    ca_file: str | None = None  # PEM bundle to trust instead of the system store
    server_name: str | None = None  # SNI and the name to verify; defaults to the host
    insecure_skip_verify: bool = False  # still reports expiry; verification failures do not fail
    cert_file: str | None = None  # client certificate, for servers that want one
    key_file: str | None = None


@lru_cache(maxsize=64)
def _context(
    ca_file: str | None,
    verify: bool,
    cert_file: str | None,
    key_file: str | None,
    legacy: bool = False,
    alpn: tuple[str, ...] = (),
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.sslobject_class = KeepsPresentedChain
    if legacy:
        # To *see* a server stuck on TLS 1.0/1.1 (and report it) the probe must be able to
        # negotiate it: OpenSSL 3 refuses those versions above security level 0.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def client_context(options: TlsOptions, *, legacy: bool = False, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A cached client context for these options: verification on unless switched off.
    ``legacy`` also accepts TLS 1.0 and 1.1, for probers that report such servers; ``alpn``
    names the protocols to offer (TDS 8.0 offers ``tds/8.0``)."""
    return _context(
        options.ca_file, not options.insecure_skip_verify, options.cert_file, options.key_file, legacy, alpn
    )


def _chain_der(ssl_object: ssl.SSLObject) -> list[bytes]:
    # Python 3.13 made the chain public; 3.11/3.12 have it on the private _sslobj.
    for holder in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        for name in ("get_verified_chain", "get_unverified_chain"):
            method = getattr(holder, name, None)
            if method is None:
                continue
            try:
                chain = method()
            except (ssl.SSLError, ValueError):
                continue
            if chain:
                return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class KeepsPresentedChain(ssl.SSLObject):
    """An SSLObject that, when the chain fails verification, hangs what the server presented
    on the error as ``presented`` (TlsFacts): a failed handshake leaves nothing else to read
    it from, and its issuer is what tells an intercepting proxy (a private CA) from a
    server's own certificate problem. No second connection, so the verdict stays that of
    the one real try."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except ssl.SSLCertVerificationError as exc:
            try:
                # ssl's own exception, which has no such field: added here, read with getattr by net.py
                exc.presented = tls_facts(self, verified=False)  # type: ignore[attr-defined]
            except (ValueError, ssl.SSLError):  # nothing presented to read
                pass
            raise


def tls_facts(ssl_object: ssl.SSLObject, *, verified: bool) -> TlsFacts | None:
    chain = [x509.load_der_x509_certificate(der) for der in _chain_der(ssl_object)]
    if not chain:
        return None
    earliest = min(cert.not_valid_after_utc.timestamp() for cert in chain)
    leaf = chain[0]
    return TlsFacts(
        version=ssl_object.version() or "unknown",
        cert_not_after=earliest,
        verified=verified,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
    )
