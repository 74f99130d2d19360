"""A probe worker takes its share's outcomes a part at a time, each part as soon as its
probes are done, and lets go of a part's results once it has written their lines."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import pickle

import pytest
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter import workers
from illiad_exporter.catalog import Expect
from illiad_exporter.deflate import plain_body
from illiad_exporter.metrics import join_sections, render_outcomes
from illiad_exporter.probers import ProbeTarget, Reason
from illiad_exporter.probers.base import ProberOptions
from illiad_exporter.scrape import Outcome, run_all, run_in_parts
from illiad_exporter.workers import Assign, Assigned, Probe, Probed, ProbedPart, RequiredPaths, part_ends


def _target(site: str, path: str, port: int, *, timeout: float = 2.0) -> ProbeTarget:
    return ProbeTarget(site=site, path=path, vantage="external", host="127.0.0.1", port=port, prober="tcp",
                       expect=Expect.OPEN, timeout=timeout, options=ProberOptions())


def _seen(outcomes: list[Outcome]) -> list[tuple[str, str, bool, Reason | None]]:
    return [(o.target.site, o.target.path, o.result.up, o.result.reason) for o in outcomes]


def test_a_part_is_handed_over_while_a_later_part_still_waits_for_its_timeout(silent_port, dropping_port):
    """early's two paths answer at once; late's is dropped and ends at its 1 s timeout:
    early's outcomes are written before late's probe has ended, not after it."""
    targets = [_target("early", "a", silent_port), _target("early", "b", silent_port),
               _target("late", "c", dropping_port, timeout=1.0)]
    handed: list[tuple[float, list[tuple[str, str, bool, Reason | None]]]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await run_in_parts(targets, part_ends(targets, 1), lambda o: handed.append((loop.time() - started, _seen(o))),
                           budget=5.0, limiter=asyncio.Semaphore(8))

    asyncio.run(scenario())
    assert [parts for _, parts in handed] == [
        [("early", "a", True, None), ("early", "b", True, None)],
        [("late", "c", False, Reason.TIMEOUT)],
    ]
    (first, _), (second, _) = handed
    assert first < 0.5 <= 0.9 < second


def test_the_parts_hold_the_outcomes_of_one_scrape(silent_port, refusing_port):
    targets = [_target(f"lib{s}", f"p{p}", silent_port if (s + p) % 3 else refusing_port)
               for s in range(4) for p in range(3)]
    parts: list[list[Outcome]] = []

    async def scenario() -> tuple[list[Outcome], list[int]]:
        whole = await run_all(targets, budget=5.0, limiter=asyncio.Semaphore(4))
        ends = part_ends(targets, 4)
        await run_in_parts(targets, ends, parts.append, budget=5.0, limiter=asyncio.Semaphore(4))
        return whole, ends

    whole, ends = asyncio.run(scenario())
    assert ends == [6, 12]  # whole sites: two of three paths each make a part of at least 4
    assert [len(part) for part in parts] == [6, 6]
    assert [seen for part in parts for seen in _seen(part)] == _seen(whole)
    assert {reason for _, _, _, reason in _seen(whole)} == {None, Reason.REFUSED}


@pytest.mark.parametrize("sizes, size, ends", [
    ([3, 1, 2, 5], 3, [3, 6, 11]),
    ([3, 1, 2, 5], 4, [4, 11]),
    ([3, 1, 2, 5], 100, [11]),
    ([1], 1, [1]),
    ([], 5, []),
])
def test_parts_end_between_sites_only(sizes: list[int], size: int, ends: list[int]) -> None:
    targets = [_target(f"lib{s}", f"p{p}", 1) for s, count in enumerate(sizes) for p in range(count)]
    assert part_ends(targets, size) == ends


def test_ends_that_leave_targets_out_are_refused(silent_port):
    targets = [_target("lib", "a", silent_port), _target("lib", "b", silent_port)]
    with pytest.raises(ValueError, match="last target"):
        asyncio.run(run_in_parts(targets, [1], lambda o: None, budget=1.0))


def test_a_worker_answer_in_parts_joins_to_the_exposition_of_one_process(monkeypatch, silent_port, refusing_port):
    """A worker's share in parts of 2 targets (whole sites): each part's results and lines are
    sent as soon as written, then the answer's end; put together, the lines are the series
    one process writes, each family once."""
    monkeypatch.setattr(workers, "PART_TARGETS", 2)
    targets = tuple(_target(f"lib{s}", f"p{p}", refusing_port if s == 1 and p == 0 else silent_port)
                    for s in range(3) for p in range(2))
    reader, writer = multiprocessing.Pipe(duplex=False)

    async def scenario() -> tuple[Probed, str]:
        worker = workers._Worker(writer)
        try:
            worker.assign(Assign(1, targets, RequiredPaths.of(targets, frozenset()), "active", 8))
            await worker.probe(Probe(7, 1, None, None, 5.0, True))
            await asyncio.sleep(0)  # the loop turn's answers are written at its end
        finally:
            worker.close()
        messages = []
        while reader.poll(2.0):
            messages.append(pickle.loads(reader.recv_bytes()))
        assigned, *parts, end = messages
        assert [type(m) for m in messages] == [Assigned] + [ProbedPart] * 3 + [Probed]  # each part as written
        assert [len(p.results) for p in parts] == [2, 2, 2] and end.results == ()
        alone = render_outcomes(await run_all(targets, budget=5.0))
        return workers._joined(parts, end), alone  # as the serving process puts them together

    answer, alone = asyncio.run(scenario())
    assert answer.request == 7 and not answer.error and len(answer.results) == len(targets)
    assert answer.sections is not None and len(answer.sections) == 3
    text = b"".join(plain_body(join_sections(answer.sections))).decode()

    def series(exposition: str) -> set[tuple[str, tuple[tuple[str, str], ...], float | None]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value if s.name != "illiad_probe_duration_seconds"
                 and "latency" not in s.name and "seconds" not in s.name else None)
                for f in text_string_to_metric_families(exposition) for s in f.samples}

    assert series(text) == series(alone)
    assert text.count("# TYPE illiad_port_up gauge\n") == 1
    ups = {s.labels["site"] + "/" + s.labels["path"]: s.value for f in text_string_to_metric_families(text)
           for s in f.samples if s.name == "illiad_port_up"}
    assert ups == {"lib0/p0": 1.0, "lib0/p1": 1.0, "lib1/p0": 0.0, "lib1/p1": 1.0, "lib2/p0": 1.0, "lib2/p1": 1.0}


def test_overlapping_scrapes_in_parts_probe_each_target_once(silent_port):
    """Two scrapes of the same 12 targets in parts of 4, with 4 probe slots, the second
    starting while the first's probes wait: each target is probed once, whichever scrape
    reached its part first probing it and the other joining. (The targets are RDP servers
    that accept and never answer: a finished probe is not kept for a later scrape, so the
    probes must still be in flight.)"""
    from illiad_exporter.probers.rdp import RdpOptions
    from illiad_exporter.singleflight import SingleFlight

    targets = [dataclasses.replace(_target(f"lib{s}", f"p{p}", silent_port, timeout=0.3), prober="rdp",
                                   options=RdpOptions()) for s in range(6) for p in range(2)]
    flights = SingleFlight()
    got: list[list[Outcome]] = [[], []]

    async def scenario() -> None:
        limiter = asyncio.Semaphore(4)
        ends = part_ends(targets, 4)
        first = asyncio.create_task(run_in_parts(targets, ends, got[0].extend, budget=5.0, limiter=limiter,
                                                 flights=flights))
        await asyncio.sleep(0.05)  # the first has its first part's probes hanging
        await run_in_parts(targets, ends, got[1].extend, budget=5.0, limiter=limiter, flights=flights)
        await first

    asyncio.run(scenario())
    assert flights.started == len(targets) and flights.joined == len(targets)
    assert [_seen(outcomes) for outcomes in got] == [[(t.site, t.path, False, Reason.TIMEOUT) for t in targets]] * 2
    assert len(flights) == 0  # finished flights are forgotten


@pytest.mark.parametrize("required_share", [0.0, 0.3, 0.7, 1.0])
def test_a_share_keeps_the_fewer_of_its_required_and_other_paths_and_answers_for_each(required_share: float):
    """RequiredPaths holds the required pairs or the others, whichever are fewer, and says
    of every path of the share what the plan's set says."""
    targets = [_target(f"lib{s}", f"p{p}", 1) for s in range(10) for p in range(10)]
    required = frozenset((t.site, t.path) for i, t in enumerate(targets) if i < required_share * len(targets))
    kept = RequiredPaths.of(targets, required)
    assert len(kept.pairs) == min(len(required), len(targets) - len(required))
    assert kept.listed == (len(required) <= len(targets) - len(required))
    assert [(t.site, t.path) in kept for t in targets] == [(t.site, t.path) in required for t in targets]
    assert pickle.loads(pickle.dumps(kept)) == kept
