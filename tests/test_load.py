"""Many scrapes at once: the exporter stays responsive, keeps its limits, and sends the
library's servers one probe per path however many scrapes overlap."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import pytest

from illiad_exporter.catalog import Role
from illiad_exporter.scrape import run_all
from illiad_exporter.singleflight import SingleFlight

from .exporter_process import exporter, loopback_site_config, open_fds
from .fakes import ThreadedServer, slow_http_ok
from .probing import make_target
from .test_server import running, value

CONCURRENT_SCRAPES = 50


def two_path_config(path, port_a: int, port_b: int, *, max_concurrency: int = 256, timeout: str = "5s"):
    loopback_site_config(path, timeout=timeout, top=f"exporter: {{max_concurrency: {max_concurrency}}}\n", custom=f"""\
      - {{name: api_a, from: [web_server], host: 127.0.0.1, port: {port_a}, prober: http}}
      - {{name: api_b, from: [web_server], host: 127.0.0.1, port: {port_b}, prober: http}}""")
    return path


@pytest.mark.slow
def test_fifty_concurrent_scrapes_share_one_probe_per_path_within_the_limits(tmp_path):
    """50 scrapes at once against a real exporter process: each path's server sees exactly
    one connection, never more than max_concurrency (1) at a time; /-/healthy answers while
    every scrape is still waiting; the process's descriptors stay within a budget."""
    with ThreadedServer(slow_http_ok(0.6)) as a, ThreadedServer(slow_http_ok(0.6)) as b:
        config = two_path_config(tmp_path / "c.yml", a.port, b.port, max_concurrency=1)
        peer, url = exporter(config, tmp_path)
        with peer:
            fds_before = open_fds(peer.pid)
            peak = [fds_before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], open_fds(peer.pid))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            async def scenario() -> tuple[list[tuple[int, str]], int, bool]:
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as session:
                    async def scrape() -> tuple[int, str]:
                        async with session.get(url + "/metrics") as response:
                            return response.status, await response.text()

                    scrapes = [asyncio.create_task(scrape()) for _ in range(CONCURRENT_SCRAPES)]
                    await asyncio.sleep(0.2)  # every scrape is in, none can be done (0.6 s per path)
                    async with session.get(url + "/-/healthy") as response:
                        healthy = response.status
                        pending_during_health = not any(s.done() for s in scrapes)
                    return await asyncio.gather(*scrapes), healthy, pending_during_health

            try:
                answers, healthy, pending_during_health = asyncio.run(scenario())
            finally:
                sampling.set()
                sampler.join(2)
            # the exporter closes its side of the 50 scrape connections once it reads their
            # EOF; on a loaded machine that takes a moment (bounded wait, then the check)
            settle_by = time.monotonic() + 5
            fds_after = open_fds(peer.pid)
            while fds_after > fds_before + 2 and time.monotonic() < settle_by:
                time.sleep(0.05)
                fds_after = open_fds(peer.pid)

        assert healthy == 200 and pending_during_health
        assert [status for status, _ in answers] == [200] * CONCURRENT_SCRAPES
        for _, text in answers:
            assert value(text, "illiad_port_up", path="api_a") == 1.0
            assert value(text, "illiad_port_up", path="api_b") == 1.0
        assert (a.accepted, b.accepted) == (1, 1)  # one connection per path, not 50
        assert a.max_open + b.max_open == 2 and max(a.max_open, b.max_open) == 1
        # descriptors: the 50 scrape connections, one probe at a time (max_concurrency 1),
        # and a few for the loop; nothing grows per scrape beyond the connection itself
        assert peak[0] <= fds_before + CONCURRENT_SCRAPES + 1 + 8, (fds_before, peak[0])
        assert fds_after <= fds_before + 2


def test_probe_runs_alone_when_no_scrape_overlaps_it(tmp_path):
    """Sharing is only for overlap: two scrapes one after the other probe twice."""
    with ThreadedServer(slow_http_ok(0.0)) as a, ThreadedServer(slow_http_ok(0.0)) as b:
        config = two_path_config(tmp_path / "c.yml", a.port, b.port)

        async def scenario() -> None:
            async with running(config) as (url, state):
                async with aiohttp.ClientSession() as session:
                    for _ in range(2):
                        async with session.get(url + "/metrics") as response:
                            assert value(await response.text(), "illiad_port_up", path="api_a") == 1.0
                assert state.flights.started == 4 and state.flights.joined == 0
                assert len(state.flights) == 0  # finished flights are forgotten

        asyncio.run(scenario())
    assert (a.accepted, b.accepted) == (2, 2)


def test_a_scrape_with_an_earlier_deadline_stops_waiting_for_a_shared_probe(silent_port):
    """A later scrape joins a slow in-flight probe but still answers by its own deadline,
    with reason timeout; the first scrape gets the probe's own result."""

    async def scenario() -> None:
        flights = SingleFlight()
        target = make_target("http", silent_port, timeout=1.5)
        first = asyncio.create_task(run_all([target], budget=5.0, flights=flights))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        [second] = await run_all([target], budget=0.3, flights=flights)
        assert 0.25 <= time.monotonic() - started < 1.0
        assert second.result.reason is not None and second.result.reason.value == "timeout"
        assert "deadline" in second.result.detail
        [outcome] = await first
        assert outcome.result.reason is not None and outcome.result.reason.value == "timeout"
        assert flights.started == 1 and flights.joined == 1

    asyncio.run(scenario())


def test_a_scrape_with_a_later_deadline_does_not_take_a_probe_cut_short_by_an_earlier_one():
    """A path that answers in 0.7 s: a scrape with 0.4 s gets its timeout, but a scrape with
    3 s arriving meanwhile probes afresh and sees the path up, and a third one joins it."""
    with ThreadedServer(slow_http_ok(0.7)) as server:
        async def scenario() -> None:
            flights = SingleFlight()
            target = make_target("http", server.port, timeout=2.0)
            hurried = asyncio.create_task(run_all([target], budget=0.4, flights=flights))
            await asyncio.sleep(0.1)
            patient = asyncio.create_task(run_all([target], budget=3.0, flights=flights))
            await asyncio.sleep(0.1)
            [joiner] = await run_all([target], budget=3.0, flights=flights)
            [cut], [full] = await hurried, await patient
            assert cut.result.reason is not None and cut.result.reason.value == "timeout"
            assert (full.result.up, joiner.result.up) == (True, True)
            assert (flights.started, flights.joined) == (2, 1)

        asyncio.run(scenario())
    assert server.accepted == 2


def test_a_client_that_hangs_up_does_not_cancel_the_probe_others_wait_for(tmp_path):
    """The probe runs in its own task: cancelling the scrape that started it leaves the
    scrapes that joined it with a real answer."""
    with ThreadedServer(slow_http_ok(0.5)) as a, ThreadedServer(slow_http_ok(0.5)) as b:
        config = two_path_config(tmp_path / "c.yml", a.port, b.port)

        async def scenario() -> None:
            async with running(config, Role.WEB_SERVER) as (_, state):
                snapshot = state.snapshot
                assert snapshot is not None
                leader = asyncio.create_task(state.probe(snapshot.plan.targets, 5.0))
                await asyncio.sleep(0.1)
                follower = asyncio.create_task(state.probe(snapshot.plan.targets, 5.0))
                await asyncio.sleep(0.1)
                leader.cancel()
                outcomes = await follower
                assert sorted((o.target.path, o.result.up) for o in outcomes) == [("api_a", True), ("api_b", True)]

        asyncio.run(scenario())
    assert (a.accepted, b.accepted) == (1, 1)


def test_same_site_names_from_two_configs_do_not_share_a_probe(silent_port, refusing_port):
    """The flight key is the whole probe: a target whose port (or options) changed is a
    different probe, so a scrape never gets an answer made for another config."""
    from illiad_exporter.singleflight import flight_key

    a = make_target("tcp", silent_port)
    assert flight_key(a) == flight_key(make_target("tcp", silent_port))
    assert flight_key(a) != flight_key(make_target("tcp", refusing_port))
    assert flight_key(make_target("http", silent_port, path="/a")) != flight_key(
        make_target("http", silent_port, path="/b"))
