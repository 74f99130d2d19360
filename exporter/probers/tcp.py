"""TCP connect: the path is open when the three-way handshake completes."""

from __future__ import annotations

from .base import Prober, ProberOptions, ProbeResult, ProbeTarget
from .net import connect_socket


async def probe_tcp(target: ProbeTarget[ProberOptions], result: ProbeResult) -> bool:
    # A bare socket, no streams: the handshake is the whole check (and the cheapest probe).
    sock = await connect_socket(target, result)
    sock.close()
    return True


PROBER = Prober("tcp", probe_tcp, ProberOptions, "TCP connect, sending nothing")
