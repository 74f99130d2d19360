"""TLS handshake: verified certificate chain, negotiated version, earliest expiry."""

from __future__ import annotations

from .base import Prober, ProbeResult, ProbeTarget
from .net import connect
from .tlsclient import TlsOptions, client_context


async def probe_tls(target: ProbeTarget[TlsOptions], result: ProbeResult) -> bool:
    options = target.options
    connection = await connect(target, result)
    try:
        await connection.start_tls(client_context(options), options.server_name or target.host, result)
    finally:
        await connection.close()
    return True


PROBER = Prober("tls", probe_tls, TlsOptions, "TLS handshake with certificate verification")
