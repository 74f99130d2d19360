"""The exporter's own front door: bounds on the clients of its HTTP server.

Any client that can reach the port (authenticated or not) could otherwise hold connections
for as long as it liked: aiohttp closes a connection that never sends a request only after
an hour, and 1,100 such connections under a descriptor limit of 1,024 left nothing for
``/metrics`` or for the probes. So:

- a new connection must deliver a complete request within ``header_timeout``; between
  requests, a kept-alive connection waits at most ``idle_timeout`` for the next one (a TLS
  handshake is bounded by ``header_timeout`` too);
- at most ``max_connections`` are open at once, and never more than a quarter of the
  process's descriptor limit (the rest is for probes). When a new client arrives at the cap,
  an idle connection is closed for it: one that was never answered with success (it sent
  nothing yet, or only got 4xx: an idle or slow stranger, a password guesser), the longest
  idle first; else a served client's connection idle for longer than ``header_timeout``.
  When there is none, the newcomer is closed instead. Prometheus' scrape therefore gets in
  past any number of idle clients, and its own kept-alive connection stays;
- an accept that fails (no descriptor left) is logged once per ``ACCEPT_LOG_INTERVAL`` with
  the count, never with a traceback; asyncio itself stops accepting for a second after each
  such failure.

The limits are read from the running config on every connection, so a reload changes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("illiad_exporter.frontdoor")

# How often idle and slow connections are looked for; a connection lives at most this much
# past its timeout.
SWEEP_INTERVAL = 0.25
ACCEPT_LOG_INTERVAL = 10.0
# However high max_connections is set, clients get at most this share of the descriptors.
CLIENT_SHARE_OF_DESCRIPTORS = 4
MIN_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class DoorLimits:
    max_connections: int
    header_timeout: float
    idle_timeout: float


def descriptor_limit() -> int | None:
    """The process's soft limit on open descriptors (None where there is none to read)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(configured: int, limit: int | None) -> int:
    """``configured``, but at most a quarter of the descriptor limit (at least 8)."""
    if limit is None:
        return configured
    return max(min(configured, limit // CLIENT_SHARE_OF_DESCRIPTORS), MIN_CONNECTIONS)


class _Connection:
    __slots__ = ("handler", "deadline", "busy", "quiet_since", "connected", "served")

    def __init__(self, handler: Any, now: float, header_timeout: float) -> None:
        self.handler = handler
        self.deadline = now + header_timeout  # by when the next request must have arrived
        self.busy = 0  # requests being served
        self.quiet_since = now
        self.connected = False
        self.served = False  # answered a request with success (below 400) at least once

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        return getattr(self.handler, "transport", None)


class _Turnaway(asyncio.Protocol):
    """A client over the cap while every connection is serving: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class FrontDoor:
    def __init__(self, limits: Callable[[], DoorLimits]) -> None:
        self._limits = limits
        self._server: web.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.shed = 0  # idle connections closed to make room (tests, benchmarks)
        self.turned_away = 0
        self.timed_out = 0
        self._accept_failures = 0
        self._accept_logged_at = -ACCEPT_LOG_INTERVAL
        self._accept_error = ""

    # -- serving ------------------------------------------------------------------------

    async def listen(self, server: web.Server, host: str | None, port: int, *,
                     ssl_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
        """Listen on ``host:port`` for ``server`` (an aiohttp AppRunner's), through the door."""
        self._server = server
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
            self._previous_handler = loop.get_exception_handler()
            loop.set_exception_handler(self._loop_exception)
        return await loop.create_server(
            self._protocol, host, port, ssl=ssl_context, backlog=128,
            ssl_handshake_timeout=self._limits().header_timeout if ssl_context is not None else None,
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Marks a connection busy while one of its requests is served (it is never shed
        then), and starts its idle clock when the answer is made."""

        @web.middleware
        async def front_door_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            connection = self._connections.get(id(request.protocol))
            if connection is None or connection.handler is not request.protocol:
                return await handler(request)
            connection.busy += 1
            # a request came, so it was connected: once its transport is gone it is closed
            # and leaves the count at the next look (the sweep may never have seen it open)
            connection.connected = True
            try:
                response = await handler(request)
                connection.served = connection.served or response.status < 400
                return response
            finally:
                connection.busy -= 1
                now = time.monotonic()
                connection.quiet_since = now
                connection.deadline = now + self._limits().idle_timeout

        return front_door_middleware

    def __len__(self) -> int:
        return len(self._connections)

    # -- the door -----------------------------------------------------------------------

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._server is not None
        limits = self._limits()
        cap = connection_cap(limits.max_connections, descriptor_limit())
        if len(self._connections) >= cap:
            self._forget_closed()
        if len(self._connections) >= cap and not self._shed_one(limits.header_timeout):
            self.turned_away += 1
            return _Turnaway()
        handler = self._server()
        self._connections[id(handler)] = _Connection(handler, time.monotonic(), limits.header_timeout)
        return handler

    def _shed_one(self, header_timeout: float) -> bool:
        """Close an idle connection to make room: a stranger's (never answered with success),
        the longest idle first; else a served client's idle for longer than a new client
        gets to send its request. False when there is none: the newcomer is turned away."""
        now = time.monotonic()
        idle = [c for c in self._connections.values() if not c.busy and c.transport is not None
                and (not c.served or now - c.quiet_since > header_timeout)]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: (c.served, c.quiet_since)))
        self.shed += 1
        return True

    def _close(self, connection: _Connection) -> None:
        transport = connection.transport
        if transport is not None:
            transport.close()
        self._connections.pop(id(connection.handler), None)

    def _forget_closed(self) -> None:
        now = time.monotonic()
        for key, connection in list(self._connections.items()):
            transport = connection.transport
            if transport is not None:
                connection.connected = True
            elif connection.connected or now > connection.deadline + 1.0:
                # closed; or never connected (a TLS handshake that failed, or its own timeout)
                del self._connections[key]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self._forget_closed()
            now = time.monotonic()
            for connection in list(self._connections.values()):
                if not connection.busy and now > connection.deadline and connection.transport is not None:
                    self.timed_out += 1
                    self._close(connection)

    # -- accept errors --------------------------------------------------------------------

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            if self._previous_handler is not None:
                self._previous_handler(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._accept_failures += 1
        error = context.get("exception")
        self._accept_error = (os.strerror(error.errno) if isinstance(error, OSError) and error.errno
                              else str(error))
        now = time.monotonic()
        if now - self._accept_logged_at >= ACCEPT_LOG_INTERVAL:
            log.warning("cannot accept connections, retrying each second",
                        extra={"error": self._accept_error, "failures": self._accept_failures,
                               "interval_seconds": ACCEPT_LOG_INTERVAL})
            self._accept_logged_at = now
            self._accept_failures = 0
