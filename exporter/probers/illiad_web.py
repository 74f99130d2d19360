"""The ILLiad web server: the logon page and the Web Platform's version, over HTTPS.

Two GETs a browser or the ILLiad client would make anyway, each on its own connection.
When the usual TLS 1.2+ handshake fails, a second one that can negotiate TLS 1.0 and 1.1
finds out whether the server is stuck on them, so it is *seen* and reported (reason
``tls``, ``illiad_tls_info{version}``) rather than looking merely broken. Certificates are
always judged by the modern context's rules, except where a site lowers ``min_tls_version``.
"""

from __future__ import annotations

import re
from typing import Literal

from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .http import AbsolutePath, HttpClientOptions, connect_facts, host_header, open_http, request
from .net import Connection
from .tlsclient import client_context

TlsVersion = Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_TLS_ORDER: dict[str, int] = {"TLSv1": 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3}
# "ILLiad Platform Version: 9.2.2.0" (possibly JSON-quoted); the number is all we keep.
_PLATFORM_VERSION = re.compile(rb"Platform\s+Version\W{0,4}(\d{1,4}(?:\.\d{1,6}){1,3})", re.IGNORECASE)
# A version answer is one short line; anything longer is not that answer.
MAX_PLATFORM_BODY = 4096


class IlliadWebOptions(HttpClientOptions):
    logon_path: AbsolutePath = "/illiad/logon.html"
    # Sites that do not run the Web Platform (the ILLiad API) turn this off.
    web_platform: bool = True
    platform_path: AbsolutePath = "/ILLiadWebPlatform/SystemInfo/PlatformVersion"
    # The oldest TLS version accepted; an older one fails with reason tls.
    min_tls_version: TlsVersion = "TLSv1.2"


async def _get(target: ProbeTarget, result: ProbeResult, options: IlliadWebOptions, path: str, *,
               first: bool, max_body: int) -> tuple[int, bytes]:
    connection = await _open(target, connect_facts(result, first=first), options)
    try:
        if first:
            _check_tls_version(result, options)
        response = await request(connection, result, host=host_header(target, options, True), path=path,
                                 max_body=max_body)
    finally:
        await connection.close()
    return response.status, response.body


async def _open(target: ProbeTarget, result: ProbeResult, options: IlliadWebOptions) -> Connection:
    """Connect with the usual client context (TLS 1.2+, modern ciphers and key sizes, as a
    browser); if that handshake fails, look again with one that can negotiate TLS 1.0/1.1,
    so an old server is reported as such instead of as a bare handshake failure."""
    legacy_allowed = _TLS_ORDER[options.min_tls_version] < _TLS_ORDER["TLSv1.2"]
    if legacy_allowed:
        return await open_http(target, result, options, https=True, context=client_context(options, legacy=True))
    try:
        return await open_http(target, result, options, https=True)
    except ProbeFailure as failure:
        if failure.reason is not Reason.TLS or failure.detail.startswith("certificate"):
            raise
        connection = await open_http(target, result, options, https=True, context=client_context(options, legacy=True))
        version = result.tls.version if result.tls is not None else "unknown"
        if _TLS_ORDER.get(version, -1) < _TLS_ORDER[options.min_tls_version]:
            return connection  # the caller reports the old version
        # A modern version after all: the first failure (a weak cipher or key) is the verdict.
        await connection.close()
        raise failure from None


def _check_tls_version(result: ProbeResult, options: IlliadWebOptions) -> None:
    version = result.tls.version if result.tls is not None else "unknown"
    if _TLS_ORDER.get(version, -1) < _TLS_ORDER[options.min_tls_version]:
        raise ProbeFailure(Reason.TLS, f"negotiated {version}, older than min_tls_version {options.min_tls_version}")


async def probe_illiad_web(target: ProbeTarget[IlliadWebOptions], result: ProbeResult) -> bool:
    options = target.options
    status, _ = await _get(target, result, options, options.logon_path, first=True, max_body=64 * 1024)
    if not 200 <= status < 400:
        raise ProbeFailure(Reason.HTTP_STATUS, f"GET {options.logon_path} answered {status}")
    if not options.web_platform:
        return True
    status, body = await _get(target, result, options, options.platform_path, first=False,
                              max_body=MAX_PLATFORM_BODY)
    if status != 200:
        raise ProbeFailure(
            Reason.HTTP_STATUS,
            f"GET {options.platform_path} answered {status} (web_platform: false if this site does not run it)",
        )
    found = _PLATFORM_VERSION.search(body)
    if found is None:
        raise ProbeFailure(Reason.PROTOCOL, f"GET {options.platform_path} gave no ILLiad Platform Version: "
                                            f"{body[:60]!r}")
    result.add_info("web_platform", version=found.group(1).decode("ascii"))
    return True


PROBER = Prober("illiad_web", probe_illiad_web, IlliadWebOptions,
                "ILLiad logon page and Web Platform version over HTTPS, TLS version checked")
