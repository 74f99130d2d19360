"""Probes queued for a free slot (exporter.max_concurrency) keep their own full timeout."""

from __future__ import annotations

import asyncio

from illiad_exporter.probers import Reason
from illiad_exporter.probers.base import NotRun
from illiad_exporter.scrape import run_all

from .probing import make_target


def test_a_probe_queued_behind_a_slow_one_still_gets_its_whole_timeout(dropping_port, silent_port):
    """With one slot, an open path waiting 0.4 s behind a dropped one is up, not timed out:
    its 0.3 s timeout starts when its probe starts, not when the scrape does."""
    slow = make_target("tcp", dropping_port, timeout=0.4, path_id="dropped")
    quick = make_target("tcp", silent_port, timeout=0.3, path_id="open")

    async def scrape():
        return await run_all([slow, quick], budget=5.0, limiter=asyncio.Semaphore(1))

    dropped, opened = asyncio.run(scrape())
    assert dropped.result.reason is Reason.TIMEOUT
    assert opened.result.up, opened.result.detail
    assert opened.result.duration < 0.3


def test_waiting_for_a_slot_ends_at_the_scrape_deadline(dropping_port, silent_port):
    """A probe that never gets a slot before the scrape's budget ends fails with reason
    exporter (the exporter's own limit, not the path's), saying why."""
    slow = make_target("tcp", dropping_port, timeout=2.0, path_id="dropped")
    queued = make_target("tcp", silent_port, timeout=2.0, path_id="open")

    async def scrape():
        return await run_all([slow, queued], budget=0.3, limiter=asyncio.Semaphore(1))

    _, waited = asyncio.run(scrape())
    assert not waited.result.up
    assert waited.result.reason is Reason.EXPORTER
    assert waited.result.not_run is NotRun.NO_SLOT
    assert "no free probe slot" in waited.result.detail
