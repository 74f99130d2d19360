"""A connect-only probe without a task (probers.tcp.QuickConnect) says exactly what the
tcp prober says, for every way a connect ends; and it is used where it can be, only there."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import socket
from collections.abc import Iterator

import pytest

from illiad_exporter.probers import ProbeResult, ProbeTarget, Reason
from illiad_exporter.probers.tcp import QuickConnect
from illiad_exporter.scrape import run_all, run_probe

from .peers import missing
from .probing import make_target


def _by_task(target: ProbeTarget, budget: float) -> ProbeResult:
    async def run() -> ProbeResult:
        return await run_probe(target, deadline=asyncio.get_running_loop().time() + budget)

    return asyncio.run(run())


def _quick(target: ProbeTarget, budget: float, event_loop: str = "asyncio") -> ProbeResult:
    async def run() -> ProbeResult:
        loop = asyncio.get_running_loop()
        address = QuickConnect.address_of(target, loop)
        assert address is not None, "this target should take the quick way"
        answer: asyncio.Future[ProbeResult] = loop.create_future()
        QuickConnect(target, address, deadline=loop.time() + budget, loop=loop,
                     done=answer.set_result)
        return await answer

    if event_loop == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            missing("uvloop (the [fast] extra, in the test extra too) is not installed")
        import uvloop

        return uvloop.run(run())
    return asyncio.run(run())


LOOPS = ["asyncio", "uvloop"]


def _comparable(result: ProbeResult) -> dict[str, object]:
    """Every field, with the times as which phases were timed."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    fields["phases"] = sorted(result.phases)
    fields["duration"] = result.duration > 0
    return fields


@pytest.fixture
def listening_port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # never accepted: the queue holds every connection of a test
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("event_loop", LOOPS)
@pytest.mark.parametrize("prober", ["tcp", "odyssey", "iso_ill"])
def test_an_open_port_reads_the_same_both_ways(prober: str, event_loop: str, listening_port: int) -> None:
    target = make_target(prober, listening_port)
    quick, by_task = _quick(target, 2.0, event_loop), _by_task(target, 2.0)
    assert quick.up and quick.address == "127.0.0.1" and quick.port == listening_port
    assert quick.facts == {"addresses": "127.0.0.1", "source": "127.0.0.1"}
    assert 0 < quick.phases["connect"] < 1.0 and quick.phases["resolve"] == 0.0
    assert _comparable(quick) == _comparable(by_task)


@pytest.mark.parametrize("event_loop", LOOPS)
def test_a_refused_port_reads_the_same_both_ways(event_loop: str, refusing_port: int) -> None:
    target = make_target("tcp", refusing_port)
    quick, by_task = _quick(target, 2.0, event_loop), _by_task(target, 2.0)
    assert quick.reason is Reason.REFUSED and quick.detail == f"connect to 127.0.0.1:{refusing_port}: connection refused"
    assert quick.address is None and quick.connect_latency is None
    assert _comparable(quick) == _comparable(by_task)


@pytest.mark.parametrize("event_loop", LOOPS)
def test_a_dropped_connect_times_out_the_same_both_ways(event_loop: str, dropping_port: int) -> None:
    target = make_target("tcp", dropping_port, timeout=0.3)
    quick, by_task = _quick(target, 2.0, event_loop), _by_task(target, 2.0)
    assert quick.reason is Reason.TIMEOUT and quick.detail == "no answer within 0.3s"
    assert 0.29 < quick.duration < 1.5
    assert _comparable(quick) == _comparable(by_task)


def test_an_ipv6_literal_and_a_hosts_entry_take_the_quick_way(listening_port: int) -> None:
    pinned = dataclasses.replace(make_target("tcp", listening_port, host="sql.library.test"),
                                 static_addresses=("127.0.0.1",))
    assert _quick(pinned, 2.0).up
    assert asyncio.run(_address_of(make_target("tcp", 1, host="::1"))) == "::1"
    # ip4 only, and no ip4 address: probe_tcp's own "no ip4 address" (reason dns) answers
    v4_only = dataclasses.replace(make_target("tcp", 1, host="::1"), ip_fallback=False)
    assert asyncio.run(_address_of(v4_only)) is None
    assert _by_task(v4_only, 1.0).reason is Reason.DNS


async def _address_of(target: ProbeTarget) -> str | None:
    return QuickConnect.address_of(target, asyncio.get_running_loop())


@pytest.mark.parametrize("why, change", [
    ("a name to resolve", {"host": "sql.library.test"}),
    ("a source address to bind", {"source_address": "127.0.0.1"}),
    ("two addresses to race", {"host": "sql.library.test", "static_addresses": ("127.0.0.1", "::1")}),
])
def test_the_quick_way_is_not_taken_where_probe_tcp_does_more(why: str, change: dict[str, object]) -> None:
    target = dataclasses.replace(make_target("tcp", 9), **change)
    assert asyncio.run(_address_of(target)) is None, why


def test_a_protocol_prober_never_takes_the_quick_way() -> None:
    assert asyncio.run(_address_of(make_target("tls", 9))) is None
    assert asyncio.run(_address_of(make_target("tcp", 9))) == "127.0.0.1"


def test_a_scrape_of_quick_connects_keeps_the_slot_limit_and_answers_every_target(listening_port: int,
                                                                                   refusing_port: int) -> None:
    targets = [make_target("tcp", listening_port if i % 2 else refusing_port, path_id=f"p{i}") for i in range(40)]

    async def scrape() -> tuple[list[ProbeResult], int]:
        limiter = asyncio.Semaphore(4)
        outcomes = await run_all(targets, budget=5.0, limiter=limiter)
        return [o.result for o in outcomes], limiter._value  # every slot given back

    results, free = asyncio.run(scrape())
    assert [r.up for r in results] == [bool(i % 2) for i in range(40)]
    assert {r.reason for r in results if not r.up} == {Reason.REFUSED}
    assert free == 4
