"""Connect latency is the handshake's round trip even when the event loop is busy: on Linux
the kernel's own timing of the SYN-ACK (TCP_INFO), not the loop's clock."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from illiad_exporter.probers import ProbeResult
from illiad_exporter.probers.net import connect_socket

from ..probing import make_target
from .lab import require_netns
from .topology import Topology, in_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ONE_WAY = 0.010  # the wire's delay each way: a handshake is one round trip, 20 ms
LOOP_BLOCKED = 0.2


def _listen(address: str) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 0))
    listener.listen(64)  # the kernel completes handshakes; nothing needs to accept
    return listener


def _connect_while_the_loop_is_blocked(address: str, port: int) -> tuple[float, float]:
    """(the connect phase recorded, the loop's own view of how long the connect took)."""

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        result = ProbeResult()
        started = time.perf_counter()
        # a scrape's other work holds the loop just after the SYN is sent
        loop.call_soon(time.sleep, LOOP_BLOCKED)
        sock = await connect_socket(make_target("tcp", port, host=address), result)
        sock.close()
        return result.phases["connect"], time.perf_counter() - started

    return asyncio.run(scenario())


def test_connect_latency_over_a_delay_wire_is_the_round_trip_while_the_event_loop_is_busy() -> None:
    require_netns()
    topology = Topology()
    try:
        topology.build()
        topology.delay_link("sql_server", ONE_WAY)
        server = topology.address("sql_server")
        listener = in_netns(topology.netns("sql_server"), lambda: _listen(server))
        try:
            port = listener.getsockname()[1]
            connect, loop_view = in_netns(topology.netns("router"),
                                          lambda: _connect_while_the_loop_is_blocked(server, port))
        finally:
            listener.close()
    finally:
        topology.destroy()
    assert loop_view >= LOOP_BLOCKED  # the loop saw the connect finish only after its block
    # the wire's round trip, give or take what the userspace wire itself adds
    assert 2 * ONE_WAY <= connect < 2 * ONE_WAY + 0.003, connect
