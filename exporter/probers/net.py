"""Shared network steps of every prober: timed resolution, connect, TLS, bounded reads.

Failures become :class:`ProbeFailure` with a reason an operator can act on: socket and TLS
errors are mapped to reasons here, in :func:`reason_for` and :func:`failures_of`, and nowhere
else. Every read is bounded in bytes; the time bound is the runner's deadline around the
whole probe.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .base import ProbeFailure, ProbeResult, ProbeTarget, Reason, release_frames
from .resolver import RESOLVER
from .tlsclient import tls_facts

# Bytes any single protocol answer may take before it is called garbage.
DEFAULT_READ_LIMIT = 64 * 1024

_UNREACHABLE_ERRNOS = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    getattr(errno, "EHOSTDOWN", -1),
    getattr(errno, "ENETDOWN", -1),
    getattr(errno, "WSAENETUNREACH", -1),
    getattr(errno, "WSAEHOSTUNREACH", -1),
}
_REFUSED_ERRNOS = {errno.ECONNREFUSED, getattr(errno, "WSAECONNREFUSED", -1)}
_TIMEOUT_ERRNOS = {errno.ETIMEDOUT, getattr(errno, "WSAETIMEDOUT", -1)}
# The exporter's own shortage, not the network's: no descriptor (its limit or the system's),
# no buffer space or memory for a socket.
_NO_SOCKET_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, getattr(errno, "WSAEMFILE", -1),
                     getattr(errno, "WSAENOBUFS", -1)}


def reason_for(exc: OSError) -> Reason:
    """The reason a socket or TLS error stands for."""
    if isinstance(exc, ssl.SSLError):
        return Reason.TLS
    if isinstance(exc, socket.gaierror):
        return Reason.DNS
    if exc.errno in _NO_SOCKET_ERRNOS:
        return Reason.EXPORTER
    if isinstance(exc, ConnectionRefusedError) or exc.errno in _REFUSED_ERRNOS:
        return Reason.REFUSED
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Reason.UNREACHABLE
    if isinstance(exc, TimeoutError) or exc.errno in _TIMEOUT_ERRNOS:
        return Reason.TIMEOUT
    return Reason.NETWORK


@contextmanager
def failures_of(doing: str, *, tls_handshake: bool = False) -> Iterator[None]:
    """Socket and TLS errors of one network step -> ProbeFailure with their reason (the one
    mapping, as httpx maps transport errors); ``doing`` names the step in the detail. In a TLS
    handshake a reset is a TLS failure too: it is how many servers reject a client hello."""
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(Reason.TLS, f"certificate not trusted: {exc.verify_message}") from None
    except (ssl.SSLError, ConnectionResetError) as exc:
        if tls_handshake:
            raise ProbeFailure(Reason.TLS, f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from None
        if isinstance(exc, ssl.SSLError):
            raise ProbeFailure(Reason.TLS, f"TLS error while {doing}: {exc.reason or exc}") from None
        raise ProbeFailure(reason_for(exc), f"{doing}: {exc}") from None
    except OSError as exc:
        raise ProbeFailure(reason_for(exc), f"{doing}: {exc}") from None


def _family_order(target: ProbeTarget) -> list[int]:
    preferred, other = (
        (socket.AF_INET, socket.AF_INET6) if target.ip_protocol == "ip4" else (socket.AF_INET6, socket.AF_INET)
    )
    return [preferred, other] if target.ip_fallback else [preferred]


def known_addresses(target: ProbeTarget) -> list[str] | None:
    """The target's addresses, preferred family first, when they need no lookup (a literal
    address, or the config's hosts table); None when the resolver must be asked."""
    literal = _literal_address(target.host)
    if literal is None and not target.static_addresses:
        return None
    return _in_family_order(target, [(address_family(a), a) for a in ([literal] if literal is not None
                                                                 else target.static_addresses)])


def _in_family_order(target: ProbeTarget, found: list[tuple[int, str]]) -> list[str]:
    addresses: list[str] = []
    for family in _family_order(target):
        for found_family, address in found:
            if found_family == family and address not in addresses:
                addresses.append(address)
    return addresses


async def resolve(target: ProbeTarget, result: ProbeResult) -> list[str]:
    """Addresses for the target, preferred family first; timed as phase ``resolve``."""
    addresses = known_addresses(target)
    if addresses is not None:
        result.phases["resolve"] = 0.0
    elif not target.system_resolver:
        raise ProbeFailure(Reason.DNS, f"{target.host} is not in the config's hosts table")
    else:
        with result.timed("resolve", keep_on_failure=True):
            result.step = "resolve"  # a deadline now is the resolver's silence: reason dns
            found = await RESOLVER.lookup(target.host, target.port)
            result.step = ""
        addresses = _in_family_order(target, found)
    if not addresses:
        raise ProbeFailure(Reason.DNS, f"{target.host} has no {target.ip_protocol} address")
    return addresses


@functools.lru_cache(maxsize=1 << 16)
def _literal_address(host: str) -> str | None:
    """``host`` as a normalised IP address, None for a name (parsed once per host: at
    10,000 paths the parse was a measurable share of a probe)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


# Windows' default loop (the proactor) has no readiness callbacks (add_reader, add_writer).
_PROACTOR: type | None = getattr(asyncio, "ProactorEventLoop", None)


def has_readiness_callbacks(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` can call back when a descriptor is readable or writable (selector
    loops and uvloop can; Windows' proactor cannot)."""
    return _PROACTOR is None or not isinstance(loop, _PROACTOR)


def address_family(address: str) -> int:
    """AF_INET6 for an IPv6 address, else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(slots=True)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    address: str
    # A TLS upgrade that failed or was cancelled leaves the stream's close waiting for an
    # event that never comes (the transport's protocol was swapped): close() then aborts.
    tls_aborted: bool = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        with failures_of("sending"):
            await self.writer.drain()

    async def read_exactly(self, count: int, *, what: str = "answer") -> bytes:
        if count > DEFAULT_READ_LIMIT:
            raise ProbeFailure(Reason.PROTOCOL, f"{what} claims {count} bytes, more than {DEFAULT_READ_LIMIT}")
        try:
            with failures_of(f"reading {what}"):
                return await self.reader.readexactly(count)
        except asyncio.IncompleteReadError as exc:
            raise ProbeFailure(
                Reason.PROTOCOL, f"{what} truncated: {len(exc.partial)} of {count} bytes before close"
            ) from None

    async def read_some(self, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """Whatever the peer sends next (at most ``limit`` bytes); b'' on close."""
        with failures_of("reading"):
            return await self.reader.read(limit)

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, result: ProbeResult
    ) -> None:
        """Upgrade this connection to TLS (StartTLS, TDS strict), timed as phase ``tls``."""
        try:
            with result.timed("tls", keep_on_failure=True), failures_of("TLS handshake", tls_handshake=True):
                try:
                    await self.writer.start_tls(context, server_hostname=server_hostname)
                except ssl.SSLCertVerificationError as exc:
                    presented = getattr(exc, "presented", None)  # tlsclient.KeepsPresentedChain hangs it there
                    if presented is not None:
                        result.facts["tls_issuer"] = presented.issuer
                        result.facts["tls_subject"] = presented.subject
                    raise
        except BaseException:  # including the probe's deadline cancelling the handshake
            self.tls_aborted = True
            raise
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            result.tls = tls_facts(ssl_object, verified=context.verify_mode != ssl.CERT_NONE)

    async def close(self) -> None:
        if self.tls_aborted:
            self.writer.transport.abort()
            return
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            release_frames(exc)  # the probe's verdict is made; a messy close changes nothing


# RFC 8305's recommended "Connection Attempt Delay": how long one address gets before the
# next is tried alongside it.
CONNECT_ATTEMPT_DELAY = 0.25


async def connect_socket(target: ProbeTarget, result: ProbeResult, *, port: int | None = None) -> socket.socket:
    """Resolve and complete a TCP handshake; returns the connected non-blocking socket.
    Records phases ``resolve`` and ``connect`` (the handshake alone, timed around the event
    loop's own connect), and the address connected to. Probers that send nothing close the
    socket; the rest use :func:`connect`, which wraps it in streams.

    Addresses are tried in order (preferred family first), Happy-Eyeballs style: each gets
    ``CONNECT_ATTEMPT_DELAY`` on its own, then the next starts beside it, and a refused one
    hands over at once. So a dead first address (a firewall that drops) costs a quarter
    second, not the probe's whole timeout, and the first to answer wins."""
    port = port if port is not None else target.port
    addresses = await resolve(target, result)
    result.facts["addresses"] = ",".join(addresses)
    if len(addresses) == 1:  # the common case (a literal, a hosts entry): no racing tasks
        address = addresses[0]
        with result.timed("connect", keep_on_failure=True):
            try:
                sock = await _open_socket(target, address, port)
            except OSError as exc:
                raise ProbeFailure(reason_for(exc),
                                   f"connect to {host_port(address, port)}: {os_error_text(exc)}") from None
        result.phases["connect"] = handshake_seconds(sock, result.phases["connect"])
        result.address = address
        result.port = port
        record_source(sock, result)
        return sock
    queue = list(addresses)
    attempts: dict[asyncio.Task[socket.socket], tuple[str, float]] = {}
    failures: list[tuple[str, ProbeFailure]] = []
    try:
        while queue or attempts:
            if queue:
                address = queue.pop(0)
                task = asyncio.ensure_future(_open_socket(target, address, port))
                attempts[task] = (address, time.perf_counter())
            done, _ = await asyncio.wait(
                attempts, timeout=CONNECT_ATTEMPT_DELAY if queue else None, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                address, began = attempts.pop(task)
                error = task.exception()
                if error is None:
                    sock = task.result()
                    result.phases["connect"] = handshake_seconds(sock, time.perf_counter() - began)
                    result.address = address
                    result.port = port
                    record_source(sock, result)
                    return sock
                if not isinstance(error, OSError):
                    raise error
                result.phases["connect"] = time.perf_counter() - began
                failures.append((address, ProbeFailure(reason_for(error), os_error_text(error))))
    finally:
        for task in attempts:  # the losers: cancelled, or closed if they connected meanwhile
            _discard(task)
    address, last = failures[-1]
    if len(failures) == 1:
        raise ProbeFailure(last.reason, f"connect to {host_port(address, port)}: {last.detail}")
    tried = "; ".join(f"{host_port(a, port)}: {f.detail}" for a, f in failures[:4])
    raise ProbeFailure(last.reason, f"connect failed on every address ({tried})")


def record_source(sock: socket.socket, result: ProbeResult) -> None:
    """The local address a connected socket left from, as the result's ``source`` fact."""
    try:
        result.facts["source"] = str(sock.getsockname()[0])
    except OSError:
        pass


# Linux's struct tcp_info: tcpi_rtt (microseconds) and tcpi_total_retrans, at fixed offsets
# since Linux 2.6 (include/uapi/linux/tcp.h).
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_INFO_LENGTH, _RTT_AT, _TOTAL_RETRANS_AT = 104, 68, 100


def handshake_seconds(sock: socket.socket, measured: float) -> float:
    """The connect time of ``sock``: the handshake's round trip as the kernel timed it where
    it can be had (Linux TCP_INFO), ``measured`` (the event loop's clock around the connect)
    otherwise. A loop busy with a 10,000-path scrape sees a connect complete late, by as
    much as the longest step it ran meanwhile; the kernel times the SYN-ACK itself. After a
    retransmitted SYN the kernel's figure is one round trip while the connect took longer,
    so then the loop's figure stands."""
    if _TCP_INFO is None:
        return measured
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LENGTH)
    except OSError:
        return measured
    if len(info) < _TCP_INFO_LENGTH:
        return measured
    rtt_us: int
    total_retrans: int
    (rtt_us,) = struct.unpack_from("=I", info, _RTT_AT)
    (total_retrans,) = struct.unpack_from("=I", info, _TOTAL_RETRANS_AT)
    if rtt_us == 0 or total_retrans:
        return measured
    return min(rtt_us / 1e6, measured)


async def _open_socket(target: ProbeTarget, address: str, port: int) -> socket.socket:
    sock = socket.socket(address_family(address), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setblocking(False)
        if target.source_address:
            sock.bind((target.source_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:  # refused, or the deadline: never leak the socket
        sock.close()
        raise
    return sock


def _discard(task: asyncio.Task[socket.socket]) -> None:
    def close_if_connected(done: asyncio.Task[socket.socket]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().close()

    if task.done():
        close_if_connected(task)
    else:
        task.cancel()
        task.add_done_callback(close_if_connected)


async def connect(target: ProbeTarget, result: ProbeResult, *, port: int | None = None) -> Connection:
    """Resolve and open a TCP connection with streams (see :func:`connect_socket`)."""
    sock = await connect_socket(target, result, port=port)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=DEFAULT_READ_LIMIT)
    except BaseException:
        sock.close()
        raise
    return Connection(reader, writer, result.address or "")


def os_error_text(exc: OSError) -> str:
    """An OS error as a failure's detail: the system's text for its errno, in lower case."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def host_port(address: str, port: int) -> str:
    """``address:port``, with an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
