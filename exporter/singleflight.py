"""One in-flight probe per target, however many scrapes ask for it at once.

Prometheus servers in HA pairs, a status page and a human with curl can all scrape at the
same moment; without sharing, each would open its own connection to the library's SQL
Server or LDAP. A scrape that arrives while a probe of the same target is running waits
for that probe's result instead (bounded by its own deadline) and gets the same answer.

The probe runs in its own task, so a scrape whose client goes away does not cancel it for
the scrapes still waiting on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Hashable

from .probers import ProbeResult, ProbeTarget, Reason

ProbeRunner = Callable[..., Awaitable[ProbeResult]]


def flight_key(target: ProbeTarget) -> Hashable:
    """Everything that can change what a probe does or how its metrics are labelled: two
    targets share a flight only when they would make the same probe (so a scrape of a
    reloaded config never gets an answer made for the old one)."""
    return (
        target.site, target.path, target.vantage, target.host, target.port, target.prober, target.expect,
        target.timeout, target.ip_protocol, target.ip_fallback, target.source_address, target.static_addresses,
        target.system_resolver, type(target.options).__name__, repr(target.options),
    )


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Task[ProbeResult]] = {}
        self.started = 0  # probes actually run (for tests and benchmarks)
        self.joined = 0  # requests answered by a probe already in flight
        # id(target) -> (target, its key): a plan's targets live as long as the config, and
        # repr() of their options is the dearest part of a key (measured at 10,000 paths)
        self._keys: dict[int, tuple[ProbeTarget, Hashable]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(
        self, target: ProbeTarget, *, deadline: float, limiter: asyncio.Semaphore | None, runner: ProbeRunner
    ) -> ProbeResult:
        """The result of probing ``target``: a fresh probe, or the one already in flight.
        Returns by ``deadline`` (loop time) even when the shared probe runs longer."""
        key = self.key(target)
        task = self._flights.get(key)
        if task is None:
            self.started += 1
            task = asyncio.get_running_loop().create_task(runner(target, deadline=deadline, limiter=limiter))
            self._flights[key] = task
            task.add_done_callback(partial(self._forget, key))
        else:
            self.joined += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            # The shared probe was started by a scrape with a later deadline; this scrape
            # reports what it would have seen had it probed alone: no answer in time.
            result = ProbeResult()
            result.fail(Reason.TIMEOUT, "no answer within this scrape's deadline")
            result.duration = time.perf_counter() - started
            return result

    def key(self, target: ProbeTarget) -> Hashable:
        entry = self._keys.get(id(target))
        if entry is not None and entry[0] is target:
            return entry[1]
        if len(self._keys) > 1_000_000:  # many reloads: start over rather than grow
            self._keys.clear()
        key = flight_key(target)
        self._keys[id(target)] = (target, key)
        return key

    def in_flight(self, target: ProbeTarget) -> asyncio.Task[ProbeResult] | None:
        """The probe of ``target`` running now, if any (counted as joined)."""
        task = self._flights.get(self.key(target))
        if task is not None:
            self.joined += 1
        return task

    def track(self, target: ProbeTarget, task: asyncio.Task[ProbeResult]) -> None:
        """Make ``task``, a new probe of ``target``, the one later scrapes join until it ends."""
        key = self.key(target)
        self.started += 1
        self._flights[key] = task
        task.add_done_callback(partial(self._forget, key))

    def _forget(self, key: Hashable, done: asyncio.Task[ProbeResult]) -> None:
        if self._flights.get(key) is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # mark any exception retrieved; run_probe never raises
