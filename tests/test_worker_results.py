"""With probe workers, the serving process holds each result once, and only what it shows.

The workers write the metric lines; the serving process keeps the latest results for the
status page and the explanations. The results of a site whose every target met its
expectation cross the pipe slim (what the page shows), a failing site's whole (what the
explanations read), and the serving process makes Outcome objects only while it reads them.
"""

from __future__ import annotations

import gc
import pickle
import re
import socket
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from illiad_exporter import statuspage
from illiad_exporter.catalog import Expect
from illiad_exporter.probers import ProbeResult, ProbeTarget, Reason
from illiad_exporter.probers.base import ProberOptions
from illiad_exporter.scrape import Outcome
from illiad_exporter.workers import Part, crossing

from .exporter_process import PUBLIC_PATHS, exporter, fetch
from .fakes import ThreadedServer, hold_silently


def _outcome(site: str, path: str, index: int, *, up: bool = True, expect: Expect = Expect.OPEN) -> Outcome:
    """A TCP probe's outcome with what a real one carries: phases, facts, the address."""
    target = ProbeTarget(site=site, path=path, vantage="external", host="127.0.0.1", port=10_000 + index,
                         prober="tcp", expect=expect, timeout=1.0, options=ProberOptions())
    result = ProbeResult(phases={"resolve": 0.0001 + index * 1e-9, "connect": 0.0003 + index * 1e-9},
                         facts={"source": f"127.0.0.1:{40_000 + index}", "addresses": "127.0.0.1"},
                         duration=0.0004 + index * 1e-9)
    if up:
        result.up, result.address, result.port = True, "127.0.0.1", 10_000 + index
    else:
        result.fail(Reason.REFUSED, "connection refused")
    return Outcome(target, result, 1_700_000_000.0)


def _crossed(outcomes: list[Outcome]) -> Part:
    """``outcomes`` as the serving process gets them from a worker that wrote the metric lines."""
    results = pickle.loads(pickle.dumps(crossing(outcomes, slim=True)))
    return Part(tuple(o.target for o in outcomes), results, outcomes[0].finished_at, None)


def test_a_passing_site_crosses_slim_a_failing_one_whole_and_the_status_page_is_the_same() -> None:
    """lib0 met every expectation: its results cross slim; lib1 has a refused path, lib2 a
    must-be-closed path found open: theirs cross whole (the explanations read them). The
    status page made from what crossed is the page made from the outcomes themselves."""
    outcomes = [_outcome("lib0", "door", 0), _outcome("lib0", "back", 1),
                _outcome("lib1", "door", 2), _outcome("lib1", "back", 3, up=False),
                _outcome("lib2", "door", 4), _outcome("lib2", "shut", 5, expect=Expect.CLOSED)]
    part = _crossed(outcomes)
    assert [len(fields) for fields in part.results] == [8, 8, 12, 12, 12, 12]
    by_site = part.by_site()
    assert list(by_site) == ["lib0", "lib1", "lib2"]
    # the explanations judge again only the sites the worker did not find met
    assert [by_site[site].met for site in by_site] == [True, False, False]
    for site in ("lib1", "lib2"):  # whole: every field, phases and facts too
        assert [o.result for o in by_site[site]] == [o.result for o in outcomes if o.target.site == site]
    slim = [o.result for o in by_site["lib0"]]
    assert [(r.up, r.address, r.port, r.connect_latency) for r in slim] == [
        (True, "127.0.0.1", 10_000, 0.0003), (True, "127.0.0.1", 10_001, 0.0003 + 1e-9)]
    assert all(r.facts == {} and r.infos == [] for r in slim)  # only the page's fields

    targets = {site: tuple(o.target for o in outcomes if o.target.site == site) for site in ("lib0", "lib1", "lib2")}
    whole = {site: [o for o in outcomes if o.target.site == site] for site in targets}

    def page(outcomes_by_site: Mapping[str, Sequence[Outcome]]) -> str:
        return statuspage.render(targets_by_site=targets, outcomes_by_site=outcomes_by_site,
                                 vantage="external", version="test", now=1_700_000_010.0,
                                 required=frozenset(), impact={})

    assert page(by_site) == page(whole)
    assert "refused" in page(by_site) and "lib2" in page(by_site)


def test_a_passing_path_costs_the_serving_process_a_fraction_of_its_whole_result() -> None:
    """3,000 passing paths: what the serving process holds of them after a scrape (the
    unpickled results, split by site) is under 250 bytes a path, less than a third of the
    whole results; and it holds no Outcome or ProbeResult object (they are made as read)."""
    outcomes = [_outcome(f"lib{i // 10}", f"p{i % 10}", i) for i in range(3_000)]

    def held(slim: bool) -> float:
        wire = pickle.dumps(crossing(outcomes, slim=slim))
        gc.collect()
        tracemalloc.start()
        try:
            part = Part(tuple(o.target for o in outcomes), pickle.loads(wire), 0.0, None)
            kept = part.by_site()
            del part
            size, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(kept) == 300
        return size / len(outcomes)

    slim, whole = held(True), held(False)
    assert slim < 250, f"{slim:.0f} bytes a passing path"
    assert slim < whole / 3, f"slim {slim:.0f}, whole {whole:.0f} bytes a path"

    part = _crossed(outcomes)
    gc.collect()
    before = sum(isinstance(o, (Outcome, ProbeResult)) for o in gc.get_objects())
    kept = part.by_site()
    assert sum(isinstance(o, (Outcome, ProbeResult)) for o in gc.get_objects()) == before
    assert sum(len(site) for site in kept.values()) == 3_000


def _normalized(page: str) -> str:
    """The page with its numbers (latencies, ages, ports, times) made one symbol."""
    return re.sub(r"\d+(\.\d+)?", "#", page)


@pytest.mark.process
def test_the_status_page_with_workers_is_the_page_of_one_process(tmp_path: Path) -> None:
    """The same lab (a site whose paths are open, one with a refused path) scraped by one
    process and by 2 workers: the status pages are the same but for the numbers (latencies,
    ages), the failing path's explanation included."""
    off = ", ".join(f"{path_id}: {{enabled: false}}" for path_id in PUBLIC_PATHS)
    # bound and never listening: refused for the whole test, and no other test can take it
    with socket.socket() as unlistened, ThreadedServer(hold_silently) as server:
        unlistened.bind(("127.0.0.1", 0))
        closed = unlistened.getsockname()[1]
        lines = ["defaults: {timeout: 3s, system_resolver: false}", "sites:"]
        for name, ports in (("lib0", (server.port, server.port)), ("lib1", (server.port, closed)),
                            ("lib2", (server.port, server.port))):
            custom = ", ".join(f"{{name: p{i}, from: [external], host: 127.0.0.1, port: {port}, prober: tcp}}"
                               for i, port in enumerate(ports))
            lines.append(f"  - {{name: {name}, paths: {{{off}}}, custom: [{custom}]}}")
        config = tmp_path / "illiad.yml"
        config.write_text("\n".join(lines) + "\n")
        pages, generic = [], []
        for extra in ((), ("--probe-workers", "2")):
            peer, url = exporter(config, tmp_path, *extra, vantage="external")
            with peer:
                # a format the workers do not write: the answer is written here, from whole results
                status, text = fetch(f"{url}/metrics", headers={"Accept": _GENERIC})
                assert status == 200
                generic.append(_path_series(text))
                assert fetch(f"{url}/metrics")[0] == 200
                status, page = fetch(f"{url}/")
                assert status == 200
                pages.append(page)
    assert "refused" in pages[1] and "lib2" in pages[1]
    assert _normalized(pages[1]) == _normalized(pages[0])
    assert any(series.startswith("illiad__probe__phase__duration__seconds{") for series in generic[0])
    assert generic[1] == generic[0]


# openmetrics with an escaping write_exposition() does not write: prometheus_client's way
_GENERIC = "application/openmetrics-text;version=1.0.0;escaping=dots"


def _path_series(text: str) -> set[str]:
    """The series of the paths (name and labels, without the value) of an answer."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if 'site="' in line and not line.startswith("#")}
