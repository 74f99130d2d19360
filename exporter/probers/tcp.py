"""TCP connect: the path is open when the three-way handshake completes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable

from .base import NotRun, Prober, ProberOptions, ProbeResult, ProbeTarget, Reason
from .net import address_family, connect_socket, handshake_seconds, has_readiness_callbacks, host_port, known_addresses
from .net import os_error_text, reason_for, record_source


async def probe_tcp(target: ProbeTarget[ProberOptions], result: ProbeResult) -> bool:
    # A bare socket, no streams: the handshake is the whole check (and the cheapest probe).
    sock = await connect_socket(target, result)
    sock.close()
    return True


PROBER = Prober("tcp", probe_tcp, ProberOptions, "TCP connect, sending nothing")

log = logging.getLogger("illiad_exporter.scrape")

# connect() on a non-blocking socket: the handshake is under way
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, getattr(errno, "WSAEWOULDBLOCK", -1)}


class QuickConnect:
    """:func:`probe_tcp` for a target with one address that needs no lookup, driven by the
    event loop's callbacks instead of a task: the same result, field for field
    (tests/test_quick_connect.py holds both to that), for less than half the CPU. A
    consortium's thousands of connect-only paths (tcp, odyssey, iso_ill) are most of a big
    scrape, and a task, a timeout scope and the loop's sock_connect future per probe were
    most of its cost (bench/run.py, bench/profile.py).

    ``done(result)`` is called once, when the handshake completes, fails, or the target's
    timeout or the scrape's ``deadline`` (loop time) comes; the socket is closed by then."""

    __slots__ = ("target", "result", "done", "address", "sock", "fd", "started", "connect_started", "timer",
                 "loop", "timeout")

    @staticmethod
    def address_of(target: ProbeTarget, loop: asyncio.AbstractEventLoop) -> str | None:
        """The one address to connect to when ``target`` can be probed this way, else None
        (names to resolve, several addresses to race, a source address, another prober, or
        a loop without readiness callbacks: Windows' proactor)."""
        if target.source_address or target.prober not in _CONNECT_ONLY or not has_readiness_callbacks(loop):
            return None
        addresses = known_addresses(target)
        return addresses[0] if addresses is not None and len(addresses) == 1 else None

    def __init__(self, target: ProbeTarget, address: str, *, deadline: float, loop: asyncio.AbstractEventLoop,
                 done: Callable[[ProbeResult], None]) -> None:
        self.target, self.address, self.done, self.loop = target, address, done, loop
        self.result = result = ProbeResult()
        self.started = time.perf_counter()
        # end and timeout from one reading of the clock, as run_probe takes them: the detail
        # says the timeout given ("within 0.3s"), not that less a moment of a busy CPU
        now = loop.time()
        end = target.ends_by(now, deadline)
        self.timeout = max(end - now, 0.0)
        self.sock: socket.socket | None = None
        self.fd = -1
        self.timer: asyncio.TimerHandle | None = None
        result.phases["resolve"] = 0.0
        result.facts["addresses"] = address
        self.connect_started = time.perf_counter()
        try:
            sock = self.sock = socket.socket(address_family(address), socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setblocking(False)
            code = sock.connect_ex((address, target.port))
        except OSError as error:
            self._failed(error)
            return
        if code == 0:
            self._connected()
        elif code in _IN_PROGRESS:
            self.fd = sock.fileno()
            loop.add_writer(self.fd, self._writable)
            self.timer = loop.call_at(end, self._expired)
        else:
            self._failed(OSError(code, os.strerror(code)))

    def _writable(self) -> None:
        self._unwatch()
        try:
            assert self.sock is not None
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                self._connected()
            else:
                self._failed(OSError(code, os.strerror(code)))
        except OSError as error:
            self._failed(error)
        except Exception as exc:  # a bug here must cost one path, never leave the scrape waiting
            log.error("tcp connect of %s:%s crashed: %r", self.target.host, self.target.port, exc, exc_info=True)
            self.result.fail(Reason.ERROR, type(exc).__name__)
            self._end()

    def _connected(self) -> None:
        result, sock = self.result, self.sock
        assert sock is not None
        result.phases["connect"] = handshake_seconds(sock, time.perf_counter() - self.connect_started)
        result.address = self.address
        result.port = self.target.port
        record_source(sock, result)
        result.up = True
        self._end()

    def _failed(self, error: OSError) -> None:
        result = self.result
        result.phases["connect"] = time.perf_counter() - self.connect_started
        reason = reason_for(error)
        result.fail(reason, f"connect to {host_port(self.address, self.target.port)}: {os_error_text(error)}",
                    not_run=NotRun.NO_SOCKET if reason is Reason.EXPORTER else None)
        self._end()

    def _expired(self) -> None:
        self.timer = None
        self._unwatch()
        self.result.fail(Reason.TIMEOUT, f"no answer within {self.timeout:.3g}s")
        self._end()

    def _unwatch(self) -> None:
        if self.fd >= 0:
            self.loop.remove_writer(self.fd)
            self.fd = -1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _end(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.result.duration = time.perf_counter() - self.started
        self.done(self.result)


# The probers that are only a TCP handshake (probe_tcp: tcp, odyssey, iso_ill), named by the prober table.
_CONNECT_ONLY: set[str] = set()


def register_connect_only(probers: dict[str, Prober]) -> None:
    _CONNECT_ONLY.update(name for name, prober in probers.items() if prober.probe is probe_tcp)
