"""The garbage collector pauses while scrapes probe, and the memory it would have found
still comes back once they end."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from illiad_exporter.gcpause import CollectionPause

from .test_server import get, running, write_config


@pytest.fixture(autouse=True)
def collection_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


class Cycle:
    """Garbage only the cycle collector can free: it points at itself."""

    def __init__(self) -> None:
        self.me = self


def _make_cycles(count: int, freed: list[int]) -> None:
    for _ in range(count):
        weakref.finalize(Cycle(), freed.append, 1)


def test_cycles_made_during_a_scrape_are_freed_after_it_without_an_explicit_collection() -> None:
    freed: list[int] = []
    pause = CollectionPause()
    with pause:
        assert not gc.isenabled()
        _make_cycles(5000, freed)
        _ = [[] for _ in range(50_000)]  # what would have triggered collections
        assert freed == []  # nothing collected during the scrape
    assert gc.isenabled()
    for _ in range(100):  # ordinary allocation afterwards: automatic collection runs again
        _ = [[] for _ in range(10_000)]
        if len(freed) == 5000:
            break
    assert len(freed) == 5000


def test_overlapping_scrapes_resume_collection_only_when_the_last_ends() -> None:
    pause = CollectionPause()
    with pause:
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first scrape is still probing
    assert gc.isenabled()


def test_an_endless_overlap_still_collects_every_max_pause() -> None:
    now = [0.0]
    freed: list[int] = []
    pause = CollectionPause(max_pause=30.0, clock=lambda: now[0])
    with pause:
        _make_cycles(100, freed)
        now[0] = 20.0
        with pause:  # a second scrape starts before the first ends
            assert freed == [] and pause.forced == 0
        now[0] = 31.0
        with pause:  # a third, more than max_pause after the pause began
            assert len(freed) == 100 and pause.forced == 1
            assert not gc.isenabled()  # and the pause goes on
    assert gc.isenabled()


def test_a_collector_disabled_by_the_embedding_program_stays_disabled() -> None:
    gc.disable()
    with CollectionPause():
        pass
    assert not gc.isenabled()


def test_an_exception_in_a_scrape_still_resumes_collection() -> None:
    with pytest.raises(RuntimeError), CollectionPause():
        raise RuntimeError("the scrape failed")
    assert gc.isenabled()


def test_the_exporter_pauses_collection_only_while_a_scrape_probes(tmp_path, silent_port, dropping_port) -> None:
    async def scenario() -> None:
        config = write_config(tmp_path / "c.yml", sql_port=dropping_port, web_port=silent_port, timeout="1s")
        async with running(config) as (url, _):
            assert gc.isenabled()
            scrape = asyncio.ensure_future(get(url + "/metrics"))
            await asyncio.sleep(0.5)  # the dropped SQL path holds the scrape for its 1 s timeout
            assert not gc.isenabled()
            status, _ = await scrape
            assert status == 200
            assert gc.isenabled()

    asyncio.run(scenario())


def test_a_forked_worker_keeps_what_it_inherited_frozen() -> None:
    """keep_frozen: a new plan is frozen on top of what is frozen already, never thawed (a
    collection over the fork server's objects would copy their pages into the worker)."""
    inherited = [[i] for i in range(1000)]
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        share = [[i] for i in range(500)]
        CollectionPause(keep_frozen=True).freeze_when_idle()
        assert gc.get_freeze_count() >= frozen + 500
    finally:
        gc.unfreeze()
    del inherited, share


def test_a_plan_share_is_freed_by_reference_counting_alone() -> None:
    """A worker keeps old shares frozen: dropped at a reload, they must hold no reference
    cycle, or each reload would leave one behind for good."""
    import pickle

    from illiad_exporter.catalog import Role
    from illiad_exporter.config import load_config
    from illiad_exporter.plan import build_plan
    from illiad_exporter.workers import Assign, RequiredPaths

    from .test_fuzz import EXAMPLE  # most probers and their options

    targets = tuple(t for role in Role for t in build_plan(load_config(EXAMPLE), role).targets)
    assert {t.prober for t in targets} >= {"tcp", "tls", "illiad_web", "tds", "ldap", "z3950", "rdp"}
    data = pickle.dumps(Assign(1, targets, RequiredPaths.of(targets, frozenset()), "active", 8),
                        protocol=pickle.HIGHEST_PROTOCOL)
    gc.collect()
    gc.disable()
    try:
        share = pickle.loads(data)
        assert len(share.targets) == len(targets)
        del share
        assert gc.collect() == 0  # nothing was left for the cycle collector
    finally:
        gc.enable()


def test_a_loaded_config_and_its_shares_are_freed_by_reference_counting_alone() -> None:
    """The serving process with probe workers keeps each config frozen, never thawed (the
    fork server shares its pages): dropped at a reload, a config, its plan and the workers'
    shares must hold no reference cycle, or each reload would leave one behind for good."""
    from illiad_exporter.catalog import Role
    from illiad_exporter.config import load_config
    from illiad_exporter.plan import build_plan
    from illiad_exporter.state import Snapshot
    from illiad_exporter.workers import Shares, by_site_of, select_targets, share_sites

    from .test_fuzz import EXAMPLE

    gc.collect()
    gc.disable()
    try:
        config = load_config(EXAMPLE)
        plan = build_plan(config, Role.WEB_SERVER)
        by_site = plan.by_site
        mine = [{site: by_site[site] for site in sites} for sites in share_sites(by_site, 2)]
        shares = Shares(1, {site: i for i, m in enumerate(mine) for site in m},
                        tuple(tuple(t for ts in m.values() for t in ts) for m in mine), tuple(mine))
        assert sum(len(shares.select(i, None, None)) for i in range(2)) == len(plan.targets) > 0
        assert select_targets(by_site_of(plan.targets), plan.targets, None, None) == plan.targets
        held = Snapshot(config, plan, 0.0, shares=shares)
        del config, plan, by_site, mine, shares
        gc.collect()  # what the load made and dropped: the collector runs before the freeze
        del held
        assert gc.collect() == 0  # nothing was left for the cycle collector
    finally:
        gc.enable()
