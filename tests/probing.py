"""Probing in a test: a target as the planner would build it, and one probe run to its end."""

from __future__ import annotations

import asyncio

from illiad_exporter.catalog import Expect, Require
from illiad_exporter.probers import PROBERS, ProbeResult, ProbeTarget
from illiad_exporter.scrape import run_probe


def make_target(prober: str, port: int, *, host: str = "127.0.0.1", timeout: float = 2.0,
                expect: Expect = Expect.OPEN, path_id: str = "test", site: str = "lib",
                vantage: str = "web_server", require: Require = Require.ALL, **options: object) -> ProbeTarget:
    """A probe target as the planner would build it, with the prober's options validated."""
    return ProbeTarget(
        site=site, path=path_id, vantage=vantage, host=host, port=port, prober=prober, expect=expect, timeout=timeout,
        options=PROBERS[prober].options.model_validate(options), require=require,
    )


def probe(target: ProbeTarget, budget: float = 5.0) -> ProbeResult:
    """Run one probe as a scrape would, under a deadline ``budget`` seconds away."""

    async def run() -> ProbeResult:
        return await run_probe(target, deadline=asyncio.get_running_loop().time() + budget)

    return asyncio.run(run())
