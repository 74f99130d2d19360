"""``--web.config.file``: TLS, mutual TLS and basic auth for every endpoint, in the format of
the Prometheus exporter-toolkit's ``web-config.yml``, so one file serves this exporter and
the node or blackbox exporter beside it. This module reads and checks the file and makes
the server's TLS context; the checks each request passes are in webaccess.py.

What is honoured, as the toolkit does it:

- ``tls_server_config``: ``cert_file``, ``key_file``, ``client_ca_file``, ``client_auth_type``
  (``NoClientCert``, ``VerifyClientCertIfGiven``, ``RequireAndVerifyClientCert``),
  ``min_version``/``max_version`` (``TLS10``..``TLS13``; default TLS12..TLS13),
  ``prefer_server_cipher_suites``, ``client_allowed_sans``; relative paths are relative to
  the web config file.
- ``basic_auth_users``: user -> bcrypt hash, checked on every request to every endpoint,
  health and readiness included (the toolkit wraps the whole handler the same way); a
  401 carries ``WWW-Authenticate: Basic``. A hash's cost must be 4 to 14
  (``BCRYPT_MAX_COST`` says why); Go's bcrypt takes up to 31. How the check runs (bcrypt on a thread of its
  own, its cache, unknown users, 429 when too many wait) is said in webaccess.py.
- ``http_server_config.headers`` (the toolkit's short list of security headers and values)
  and ``rate_limit`` (``interval``, ``burst``: 429 when exceeded).

- ``cipher_suites``: Go's names, mapped to OpenSSL's for ``SSLContext.set_ciphers``. As in
  Go, they choose among TLS 1.2 (and older) suites only: TLS 1.3 always offers its own three.
- ``curve_preferences`` with one curve (``CurveP256``, ``CurveP384``, ``CurveP521``,
  ``X25519``): the only key exchange group offered, TLS 1.2 and 1.3 alike
  (``SSLContext.set_ecdh_curve``).

What is refused with a clear error rather than silently ignored, because Python's ``ssl``
module has no equivalent: ``RequestClientCert`` and ``RequireAnyClientCert`` (a certificate
that is asked for but not verified), a TLS 1.3 suite in ``cipher_suites`` (a server cannot
choose them), a suite the OpenSSL in use lacks (RC4, 3DES), more than one
``curve_preferences`` entry (``ssl`` sets exactly one group), and inline
``cert``/``key``/``client_ca``. ``http_server_config.http2`` is accepted and has no effect
(this server speaks HTTP/1.1).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field

from .config import parse_duration
from .configfile import ConfigError, ConfigIssue, Issues, Loc, StrictModel, compose_yaml, read_text
from .webaccess import BasicAuth, PasswordChecks, RateLimiter, access_middleware

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# The toolkit's list: only these headers, and for some only these values.
_EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# bcrypt's own range starts at 4 (the library refuses a lower cost: such a hash never
# matches). The top is ours: each step doubles the CPU of checking a password (one core of
# the test machine: cost 12 0.24 s, 14 0.93 s, 16 4.8 s), a login waits for it, and one
# check runs at a time. At 14, the 8 logins allowed to wait and the one being checked fit
# in a 10 s scrape timeout, and one check in the container healthcheck's 3 s; the toolkit's
# users make hashes of 10 to 12 (htpasswd -nBC 10; Python's bcrypt.gensalt() is 12). Go's
# bcrypt takes up to 31: a day and a half a check.
BCRYPT_MIN_COST = 4
BCRYPT_MAX_COST = 14
_SECONDS_AT_COST_12 = 0.25  # about, on a server core: for the error that says what a cost costs
_UNSUPPORTED_TEXT = "is not supported by this exporter (Python's ssl module has no equivalent); remove it"
# Go's crypto/tls suite names (what the toolkit's cipher_suites takes) -> OpenSSL's names.
_GO_CIPHER_SUITES = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",  # Go's older spelling
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
# Go's curve names (curve_preferences) -> OpenSSL's group names.
_GO_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}


def _tls_version(value: Any) -> ssl.TLSVersion:
    if value not in _TLS_VERSIONS:
        raise ValueError(f"unknown TLS version {value!r} (one of: {', '.join(_TLS_VERSIONS)})")
    return _TLS_VERSIONS[value]


def _client_auth(value: Any) -> str:
    if value in _UNSUPPORTED_CLIENT_AUTH:
        raise ValueError(f"{value} (a client certificate asked for but not verified) {_UNSUPPORTED_TEXT}; "
                         "use RequireAndVerifyClientCert with client_ca_file")
    if value not in _CLIENT_AUTH:
        raise ValueError(f"invalid client_auth_type {value!r} (one of: NoClientCert, VerifyClientCertIfGiven, "
                         "RequireAndVerifyClientCert)")
    return str(value)


def _unsupported(value: Any) -> Any:
    if value not in (None, [], ""):
        raise ValueError(_UNSUPPORTED_TEXT)
    return value


def _cipher_suite(value: Any) -> str:
    """A Go suite name this process can honour, as OpenSSL's name."""
    if value in _TLS13_SUITES:
        raise ValueError(f"{value} is a TLS 1.3 suite: Python's ssl cannot choose those (Go ignores them in this "
                         "list); remove it, TLS 1.3 always offers its own suites")
    if value not in _GO_CIPHER_SUITES:
        raise ValueError(f"unknown cipher suite {value!r} (Go's crypto/tls names, e.g. "
                         "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)")
    openssl_name = _GO_CIPHER_SUITES[value]
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(openssl_name)
    except ssl.SSLError:
        raise ValueError(f"{value} ({openssl_name}) is not available in {ssl.OPENSSL_VERSION}, "
                         "which this Python uses") from None
    return openssl_name


def _curve(value: Any) -> str:
    if value not in _GO_CURVES:
        raise ValueError(f"unknown or unsupported curve {value!r} (one of: {', '.join(_GO_CURVES)})")
    return _GO_CURVES[value]


def _one_curve(value: Any) -> Any:
    if isinstance(value, list) and len(value) > 1:
        raise ValueError("Python's ssl can offer one curve only (SSLContext.set_ecdh_curve), not a list of "
                         f"{len(value)}; keep the one to use")
    return value


def _bcrypt_hash(value: Any) -> str:
    """A hash bcrypt can check, at a cost a login can wait for; the errors never quote it."""
    found = _BCRYPT.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError("not a bcrypt hash (expected $2y$10$... as made by htpasswd -nB or python -m bcrypt)")
    cost = int(found.group(1))
    if cost < BCRYPT_MIN_COST:
        raise ValueError(f"bcrypt cost {cost} is below {BCRYPT_MIN_COST}, bcrypt's minimum: no password "
                         f"would ever match it; make the hash again (htpasswd -nBC 12)")
    if cost > BCRYPT_MAX_COST:
        takes = _duration(_SECONDS_AT_COST_12 * 2 ** (cost - 12))
        raise ValueError(f"bcrypt cost {cost} is above {BCRYPT_MAX_COST}, the most this exporter accepts: each step "
                         f"doubles the CPU time of checking a password, and a login waits for it (cost 12: about "
                         f"{_SECONDS_AT_COST_12:g} s; {cost}: about {takes}); make the hash with a cost of 10 to 12 "
                         "(htpasswd -nBC 12)")
    if not _bcrypt_parses(value):
        raise ValueError("not a hash bcrypt can check (its salt does not decode); make the hash again "
                         "(htpasswd -nBC 12)")
    return found.string


def _bcrypt_parses(value: str) -> bool:
    """Whether bcrypt itself reads the hash (the salt's last character, for one, has bits
    that must be zero): checked at the cheapest cost, so loading costs a millisecond a user."""
    import bcrypt

    cheapest = f"{value[:4]}{BCRYPT_MIN_COST:02d}{value[6:]}"
    try:
        bcrypt.checkpw(b"", cheapest.encode())
    except ValueError:
        return False
    return True


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


Unsupported = Annotated[Any, BeforeValidator(_unsupported)]


class TlsServerConfig(StrictModel):
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    client_auth_type: Annotated[str, BeforeValidator(_client_auth)] = ""
    min_version: Annotated[ssl.TLSVersion, BeforeValidator(_tls_version)] = ssl.TLSVersion.TLSv1_2
    max_version: Annotated[ssl.TLSVersion, BeforeValidator(_tls_version)] = ssl.TLSVersion.TLSv1_3
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: list[str] | None = None
    # stored as OpenSSL's names (the validators map Go's)
    cipher_suites: list[Annotated[str, BeforeValidator(_cipher_suite)]] | None = None
    curve_preferences: Annotated[list[Annotated[str, BeforeValidator(_curve)]] | None,
                                 BeforeValidator(_one_curve)] = None
    cert: Unsupported = None
    key: Unsupported = None
    client_ca: Unsupported = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file or self.client_ca_file or self.client_auth_type)


class HttpServerConfig(StrictModel):
    http2: bool = True  # accepted for compatibility; this server speaks HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)


class RateLimit(StrictModel):
    burst: Annotated[int, Field(ge=0)] = 0
    interval: Annotated[float, BeforeValidator(parse_duration)] | None = None


class WebConfigModel(StrictModel):
    tls_server_config: TlsServerConfig = Field(default_factory=TlsServerConfig)
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    basic_auth_users: dict[str, Annotated[str, BeforeValidator(_bcrypt_hash)]] = Field(default_factory=dict)


@dataclass
class WebConfig:
    """A loaded web config: the server's TLS context (None: plain HTTP) and the middleware."""

    file: str
    model: WebConfigModel
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth | None = None
    limiter: RateLimiter | None = None
    # the bcrypt checks of every auth this config has had (a reload keeps them): close() ends them
    password_checks: PasswordChecks = field(default_factory=PasswordChecks)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def headers(self) -> dict[str, str]:
        return self.model.http_server_config.headers

    @property
    def client_allowed_sans(self) -> list[str] | None:
        return self.model.tls_server_config.client_allowed_sans

    def reload(self) -> ConfigError | None:
        """Read the file again (SIGHUP, POST /-/reload), as the toolkit re-reads it: new users,
        headers and rate limit, and a new certificate for new connections (a rotated
        certificate needs no restart). A file that fails to load, or changes what only a
        restart can (TLS on or off, client authentication, versions), keeps the running one."""
        try:
            new = load_web_config(self.file, password_checks=self.password_checks)
        except ConfigError as error:
            return error
        old_tls, new_tls = self.model.tls_server_config, new.model.tls_server_config
        fixed = ("client_auth_type", "client_ca_file", "min_version", "max_version", "prefer_server_cipher_suites",
                 "cipher_suites", "curve_preferences")
        changed = [key for key in fixed if getattr(old_tls, key) != getattr(new_tls, key)]
        if (new.ssl_context is None) != (self.ssl_context is None):
            changed.insert(0, "TLS on or off")
        if changed:
            return ConfigError([ConfigIssue(self.file, 0, 0, "tls_server_config",
                                            f"changing {', '.join(changed)} needs a restart")])
        if self.ssl_context is not None:  # the listening socket's context: new handshakes use the new pair
            base = Path(self.file).parent
            try:
                self.ssl_context.load_cert_chain(base / new_tls.cert_file, base / new_tls.key_file)
            except OSError as exc:  # replaced between the check and now: keep the running pair
                return ConfigError([ConfigIssue(self.file, 0, 0, "tls_server_config.cert_file",
                                                f"cannot load the new certificate: {exc}")])
        self.model, self.auth, self.limiter = new.model, new.auth, new.limiter
        return None

    def close(self) -> None:
        """The server stops: logins still waiting for bcrypt are answered 503 at once, so
        shutdown waits for no password check, and none starts."""
        self.password_checks.close()

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Rate limit, client certificate names, basic auth and headers on every request
        (webaccess.py), as this config says at the time of the request."""
        return access_middleware(self)


# --- loading ------------------------------------------------------------------------------


def load_web_config(path: str | Path, *, password_checks: PasswordChecks | None = None) -> WebConfig:
    """Read and check a web config; ConfigError (file:line: key: reason) when it is wrong.
    ``password_checks``: the running config's, on a reload."""
    file = str(path)
    raw, issues = compose_yaml(read_text(path, "web config"), file)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        issues.add((), "the web config must be a mapping (tls_server_config, basic_auth_users, ...)")
        raise ConfigError(issues.issues)
    for section in ("tls_server_config", "http_server_config", "rate_limit", "basic_auth_users"):
        if section in raw and raw[section] is None:
            raw[section] = {}
    model = issues.validate(WebConfigModel, raw)
    if model is None:
        raise ConfigError(issues.sorted())
    base = Path(file).parent
    context = _server_context(model.tls_server_config, base, issues)
    _check_headers(model.http_server_config.headers, issues)
    if model.rate_limit.interval is None and model.rate_limit.burst:
        issues.add(("rate_limit", "interval"), "burst needs an interval")
    issues.raise_if_any()
    limit = model.rate_limit
    checks = password_checks if password_checks is not None else PasswordChecks()
    return WebConfig(
        file=file, model=model, ssl_context=context,
        auth=BasicAuth(dict(model.basic_auth_users), checks=checks) if model.basic_auth_users else None,
        limiter=RateLimiter(limit.interval, limit.burst) if limit.interval else None, password_checks=checks,
    )


def _check_headers(headers: dict[str, str], issues: Issues) -> None:
    for name, value in headers.items():
        if name not in _EXTRA_HEADERS:
            issues.add(("http_server_config", "headers", name), f"HTTP header {name!r} can not be configured")
        elif _EXTRA_HEADERS[name] and value not in _EXTRA_HEADERS[name]:
            issues.add(("http_server_config", "headers", name),
                       f"invalid value {value!r} (one of: {', '.join(_EXTRA_HEADERS[name])})")


def _server_context(tls: TlsServerConfig, base: Path, issues: Issues) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    loc: Loc = ("tls_server_config",)
    if not tls.cert_file:
        issues.add(loc, "missing cert_file")
    if not tls.key_file:
        issues.add(loc, "missing key_file")
    mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file and mode == ssl.CERT_NONE:
        issues.add(loc + ("client_ca_file",), "a client CA is configured without a client_auth_type")
    if mode != ssl.CERT_NONE and not tls.client_ca_file:
        issues.add(loc + ("client_auth_type",), f"{tls.client_auth_type} needs client_ca_file")
    if tls.client_allowed_sans is not None and mode != ssl.CERT_REQUIRED:
        issues.add(loc + ("client_allowed_sans",), "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert")
    if tls.min_version > tls.max_version:
        issues.add(loc + ("min_version",), "min_version is above max_version")
    if issues.issues:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.cipher_suites:  # TLS 1.2 and older; TLS 1.3 keeps its own suites, as in Go
        context.set_ciphers(":".join(tls.cipher_suites))
    if tls.curve_preferences:
        context.set_ecdh_curve(tls.curve_preferences[0])
    cert, key = base / tls.cert_file, base / tls.key_file
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        issues.add(loc + ("cert_file",), f"cannot read {exc.filename or cert}: no such file")
    except ssl.SSLError:
        issues.add(loc + ("cert_file",), f"cannot load the certificate and key ({cert}, {key}): "
                                         "not a PEM certificate chain with its matching private key")
    except OSError as exc:
        issues.add(loc + ("cert_file",), f"cannot read the certificate or key: {exc.strerror or exc}")
    if tls.client_ca_file:
        ca = base / tls.client_ca_file
        try:
            context.load_verify_locations(cafile=str(ca))
        except FileNotFoundError:
            issues.add(loc + ("client_ca_file",), f"cannot read {ca}: no such file")
        except (OSError, ValueError) as exc:
            issues.add(loc + ("client_ca_file",), f"no CA certificate in {ca}: {getattr(exc, 'reason', None) or exc}")
        context.verify_mode = mode
    return context
