"""``illiad-exporter healthcheck``: ask a running exporter whether it serves, as a client would.

The container's HEALTHCHECK, a Kubernetes exec probe and the chart's ``helm test`` use it. It
speaks whatever the exporter speaks: HTTP, or TLS when the web config (``--web.config.file``,
else ``$ILLIAD_EXPORTER_WEB_CONFIG``) turns it on, or, with no web config at hand, whichever of
the two the exporter answers. The exporter serves when it answers ``/-/healthy`` with 200,
or with the refusal its web config prescribes for a client without credentials: 401 asking
for basic auth, 429 from its rate limit, or (mutual TLS, TLS 1.3) a completed handshake
after which it hangs up on a client with no certificate. Each of those is written by the
exporter's own event loop, so a hung or dead exporter gives none of them. With credentials
(``$ILLIAD_EXPORTER_HEALTHCHECK_USERNAME`` and ``_PASSWORD``; a client certificate in
``_CERT_FILE`` and ``_KEY_FILE``) or ``--expect-metric``, only a 200 counts. Mutual TLS
capped at TLS 1.2 needs the client certificate: without one the handshake itself is refused.

The server's certificate is not verified: this checks that the exporter answers, not who it is.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from .listen import ListenAddress

USERNAME_ENV = "ILLIAD_EXPORTER_HEALTHCHECK_USERNAME"
PASSWORD_ENV = "ILLIAD_EXPORTER_HEALTHCHECK_PASSWORD"
CERT_FILE_ENV = "ILLIAD_EXPORTER_HEALTHCHECK_CERT_FILE"
KEY_FILE_ENV = "ILLIAD_EXPORTER_HEALTHCHECK_KEY_FILE"


class _HungUpAfterHandshake(Exception):
    """The TLS handshake completed, then the server closed before answering."""


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    healthy: bool
    message: str


def check(address: ListenAddress, *, path: str = "/-/healthy", scheme: str | None = None,
          requires_client_cert: bool = False, credentials: tuple[str, str] | None = None,
          client_cert: tuple[str, str] | None = None, expect_metrics: Sequence[str] = (),
          timeout: float = 4.0) -> HealthAnswer:
    """One request to the exporter at ``address`` (a listen address: no host means loopback);
    ``scheme`` None tries HTTP, then TLS when the answer was not HTTP."""
    host = address.host if address.host not in (None, "0.0.0.0", "::") else "127.0.0.1"
    strict = credentials is not None or client_cert is not None or bool(expect_metrics)
    last = ""
    for attempt in ([scheme] if scheme else ["http", "https"]):
        url = f"{attempt}://{ListenAddress(host, address.port)}{path}"
        try:
            status, headers, body = _get(attempt, host, address.port, path, credentials, client_cert, timeout)
        except _HungUpAfterHandshake:
            if requires_client_cert and not strict:
                return HealthAnswer(True, f"{url}: serving (TLS handshake answered; a client certificate is required "
                                     "to go further)")
            return HealthAnswer(False, f"{url}: closed after the TLS handshake without an answer")
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            needs_cert = requires_client_cert and not client_cert
            hint = f" (mutual TLS: set {CERT_FILE_ENV} and {KEY_FILE_ENV})" if needs_cert else ""
            return HealthAnswer(False, f"{url}: TLS failed: {reason}{hint}")
        except (http.client.BadStatusLine, ConnectionResetError) as exc:
            last = f"{url}: not an HTTP answer ({type(exc).__name__})"
            continue  # an HTTPS server answering plain HTTP: try TLS
        except (OSError, http.client.HTTPException) as exc:
            return HealthAnswer(False, f"{url}: {getattr(exc, 'strerror', None) or exc}")
        return _judge(url, status, headers, body, strict=strict, expect_metrics=expect_metrics)
    return HealthAnswer(False, last)


def _judge(url: str, status: int, headers: http.client.HTTPMessage, body: str, *, strict: bool,
           expect_metrics: Sequence[str]) -> HealthAnswer:
    if status == 200:
        names = {line.split("{", 1)[0].split(" ", 1)[0] for line in body.splitlines() if not line.startswith("#")}
        absent = [name for name in expect_metrics if name not in names]
        if absent:
            return HealthAnswer(False, f"{url}: 200, but no {', '.join(absent)} in the answer")
        return HealthAnswer(True, f"{url}: serving (200)")
    if not strict and status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic"):
        return HealthAnswer(True, f"{url}: serving (401, asks for basic auth)")
    if not strict and status == 429:
        return HealthAnswer(True, f"{url}: serving (429 from its rate limit)")
    return HealthAnswer(False, f"{url}: answered {status}")


def _get(scheme: str, host: str, port: int, path: str, credentials: tuple[str, str] | None,
         client_cert: tuple[str, str] | None, timeout: float) -> tuple[int, http.client.HTTPMessage, str]:
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # liveness, not identity
        if client_cert is not None:
            context.load_cert_chain(*client_cert)
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Accept": "text/plain"}
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        connection.connect()  # the TCP connection and, for https, the whole TLS handshake
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ssl.SSLError, ConnectionResetError) as exc:
            if scheme == "https":
                raise _HungUpAfterHandshake from exc
            raise
        body = response.read(16 << 20).decode("utf-8", "replace")
        return response.status, response.headers, body
    finally:
        connection.close()
