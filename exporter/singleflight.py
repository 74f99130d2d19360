"""One in-flight probe per target, however many scrapes ask for it at once.

Prometheus servers in HA pairs, a status page and a human with curl can all scrape at the
same moment; without sharing, each would open its own connection to the library's SQL
Server or LDAP. A scrape that arrives while a probe of the same target is running waits
for that probe's result instead (bounded by its own deadline) and gets the same answer.

A probe ends by the deadline of the scrape that started it. A later scrape with more time
joins it only if that deadline leaves the probe as long as the later scrape would give it;
otherwise the shared answer could be a timeout that is only the other scrape's impatience,
so the later scrape starts its own probe, and scrapes after it join that one.

The probe runs in its own task, so a scrape whose client goes away does not cancel it for
the scrapes still waiting on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from functools import partial

from .allowlist import normalize_host
from .probers import ProbeResult, ProbeTarget

# Scrapes that arrive together (an HA pair of Prometheus servers, a burst) share a probe
# although their deadlines differ by a few milliseconds.
JOIN_SLACK = 0.25


def flight_key(target: ProbeTarget, options: Hashable = None) -> Hashable:
    """Everything that can change what a probe does or how its metrics are labelled: two
    targets share a flight only when they would make the same probe (so a scrape of a
    reloaded config never gets an answer made for the old one). ``options``: the options'
    part, when made already (:func:`options_key`)."""
    return (
        target.site, target.path, target.vantage, normalize_host(target.host), target.port, target.prober, target.expect,
        target.timeout, target.ip_protocol, target.ip_fallback, target.source_address, target.static_addresses,
        target.system_resolver, options or options_key(target.options),
    )


def options_key(options: object) -> Hashable:
    return (type(options).__name__, repr(options))


@dataclass(frozen=True, slots=True)
class _Flight:
    answer: asyncio.Future[ProbeResult]
    deadline: float  # loop time by which the probe ends, whatever its own timeout


FlightKeys = dict[int, tuple[object, Hashable]]  # id(options) -> (options, options_key(options))


def flight_keys(targets: Iterable[ProbeTarget]) -> FlightKeys:
    """The options' part of the keys of a plan's targets, made once when the plan is (in the
    reload thread): repr() of the options is the dearest part of a key (measured at 10,000
    paths), and a loaded config shares one options object among all the paths that have the
    same (config.Shared), so there are a few. The rest of a key is made when it is needed:
    a key kept for every target cost 400 bytes a path."""
    keys: FlightKeys = {}
    for target in targets:
        if id(target.options) not in keys:
            keys[id(target.options)] = (target.options, options_key(target.options))
    return keys


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}
        self.started = 0  # probes actually run (for tests and benchmarks)
        self.joined = 0  # requests answered by a probe already in flight
        # the running plan's keys only: a reload replaces them, so no old options stay
        # reachable from here (an ad-hoc target's options key is made each time)
        self._keys: FlightKeys = {}

    def __len__(self) -> int:
        return len(self._flights)

    def use_keys(self, keys: FlightKeys) -> None:
        self._keys = keys

    def key(self, target: ProbeTarget) -> Hashable:
        entry = self._keys.get(id(target.options))
        return flight_key(target, entry[1] if entry is not None and entry[0] is target.options else None)

    def in_flight(self, target: ProbeTarget, deadline: float) -> asyncio.Future[ProbeResult] | None:
        """The probe of ``target`` running (or queued) now that a scrape ending at
        ``deadline`` can join without losing time, if any (counted as joined)."""
        flight = self._flights.get(self.key(target))
        if flight is None:
            return None
        time_wanted = target.ends_by(asyncio.get_running_loop().time(), deadline)
        if flight.deadline < time_wanted - JOIN_SLACK:
            return None  # it would be cut short by another scrape's deadline
        self.joined += 1
        return flight.answer

    def track(self, target: ProbeTarget, answer: asyncio.Future[ProbeResult], deadline: float) -> None:
        """Make ``answer``, a new probe of ``target`` ending by ``deadline``, the one later
        scrapes join until it ends."""
        key = self.key(target)
        self.started += 1
        self._flights[key] = _Flight(answer, deadline)
        answer.add_done_callback(partial(self._forget, key))

    def _forget(self, key: Hashable, done: asyncio.Future[ProbeResult]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.answer is done:  # not a newer flight that replaced it
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # mark any exception retrieved; run_probe never raises
