"""HTTP(S): one request over the prober's own connection, the status checked.

HTTP/1.1 framing is h11's (a sans-IO parser): the prober owns the socket, so the connect
and TLS phases are timed like every other probe and the body read stays bounded.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import h11
from pydantic import AfterValidator, Field, ValidationInfo

from .. import __version__
from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .net import Connection, connect
from .tlsclient import TlsOptions, client_context

MAX_BODY_BYTES = 256 * 1024
USER_AGENT = f"illiad-port-exporter/{__version__}"


def _absolute(path: str, info: ValidationInfo) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{info.field_name} must start with '/', got {path!r}")
    return path


AbsolutePath = Annotated[str, AfterValidator(_absolute)]  # a request path: "/..."


class HttpClientOptions(TlsOptions):
    """What every prober that speaks HTTP may set: TLS, and the Host header to send."""

    host_header: str | None = None  # default: the host, and its port unless the scheme's own


class HttpOrHttpsOptions(HttpClientOptions):
    """For probers that speak HTTP or HTTPS: by default HTTPS on ``HTTPS_PORTS``."""

    HTTPS_PORTS: ClassVar[tuple[int, ...]] = (443, 8443)
    scheme: Literal["http", "https"] | None = None

    def https_for(self, port: int) -> bool:
        return (self.scheme or ("https" if port in self.HTTPS_PORTS else "http")) == "https"


class HttpOptions(HttpOrHttpsOptions):
    path: AbsolutePath = "/"
    method: Literal["GET", "HEAD"] = "GET"
    valid_status: list[int] = Field(default_factory=list)  # empty: any 2xx or 3xx

    def status_ok(self, status: int) -> bool:
        return status in self.valid_status if self.valid_status else 200 <= status < 400


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def open_http(
    target: ProbeTarget, result: ProbeResult, options: HttpClientOptions, *, https: bool,
    context: ssl.SSLContext | None = None,
) -> Connection:
    """Connect, and negotiate TLS when ``https`` (with ``context``, default the options' own)."""
    connection = await connect(target, result)
    if https:
        try:
            context = context or client_context(options)
            await connection.start_tls(context, options.server_name or target.host, result)
        except BaseException:
            await connection.close()
            raise
    return connection


async def request(
    connection: Connection,
    result: ProbeResult,
    *,
    host: str,
    path: str,
    method: str = "GET",
    max_body: int = MAX_BODY_BYTES,
) -> HttpResponse:
    """Send one request and read the response (body cut at ``max_body``); adds the time to
    phase ``handshake``."""
    with result.timed("handshake", add=True):
        return await _exchange(connection, host=host, path=path, method=method, max_body=max_body)


async def _exchange(connection: Connection, *, host: str, path: str, method: str, max_body: int) -> HttpResponse:
    client = h11.Connection(h11.CLIENT)
    wire = client.send(
        h11.Request(
            method=method,
            target=path,
            headers=[("Host", host), ("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Connection", "close")],
        )
    ) + (client.send(h11.EndOfMessage()) or b"")
    await connection.send(wire)
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProbeFailure(Reason.PROTOCOL, f"not an HTTP answer: {exc}") from None
        if event is h11.NEED_DATA:
            data = await connection.read_some()
            if not data and status == 0:
                raise ProbeFailure(Reason.PROTOCOL, "connection closed before an HTTP answer")
            client.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            if method == "HEAD":
                break
        elif isinstance(event, h11.Data):
            body += event.data[: max_body - len(body)]
            if len(body) >= max_body:
                break
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    return HttpResponse(status, headers, bytes(body))


def host_header(target: ProbeTarget, options: HttpClientOptions, https: bool) -> str:
    """The options' ``host_header`` if set, else the host (and port if not the default)."""
    if options.host_header:
        return options.host_header
    default_port = 443 if https else 80
    host = options.server_name or target.host
    host = f"[{host}]" if ":" in host else host
    return host if target.port == default_port else f"{host}:{target.port}"


def connect_facts(result: ProbeResult, *, first: bool) -> ProbeResult:
    """Where a connection's connect and TLS facts go when a probe makes several: only the
    first connection's are kept (what a patron's browser meets); a later one's are dropped,
    so they do not overwrite them, and its request adds to the handshake time alone."""
    return result if first else ProbeResult()


async def fetch(
    target: ProbeTarget, result: ProbeResult, options: HttpClientOptions, path: str, *, https: bool,
    method: str = "GET", max_body: int = MAX_BODY_BYTES, first: bool = True,
) -> HttpResponse:
    """One request on a connection of its own, closed afterwards; ``first``: see connect_facts."""
    connection = await open_http(target, connect_facts(result, first=first), options, https=https)
    try:
        return await request(connection, result, host=host_header(target, options, https), path=path,
                             method=method, max_body=max_body)
    finally:
        await connection.close()


async def probe_http(target: ProbeTarget[HttpOptions], result: ProbeResult) -> bool:
    options = target.options
    https = options.https_for(target.port)
    response = await fetch(target, result, options, options.path, https=https, method=options.method)
    if not options.status_ok(response.status):
        raise ProbeFailure(Reason.HTTP_STATUS, f"{options.method} {options.path} answered {response.status}")
    return True


PROBER = Prober("http", probe_http, HttpOptions, "HTTP or HTTPS request with an expected status")
