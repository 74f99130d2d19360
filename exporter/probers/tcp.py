"""TCP connect: the path is open when the three-way handshake completes."""

from __future__ import annotations

from .base import Prober, ProberOptions, ProbeResult, ProbeTarget
from .net import connect


async def probe_tcp(target: ProbeTarget, result: ProbeResult) -> bool:
    connection = await connect(target, result)
    await connection.close()
    return True


PROBER = Prober("tcp", probe_tcp, ProberOptions, "TCP connect, sending nothing")
