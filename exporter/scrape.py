"""Run probes concurrently under one deadline; a silent target never holds the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .probers import PROBERS, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .singleflight import SingleFlight

log = logging.getLogger("illiad_exporter.scrape")


@dataclass(frozen=True, slots=True)
class Outcome:
    target: ProbeTarget
    result: ProbeResult
    finished_at: float  # unix time


async def run_probe(target: ProbeTarget, *, deadline: float, limiter: asyncio.Semaphore | None = None) -> ProbeResult:
    """Probe one target; ends by ``deadline`` (loop time) or the target's own timeout,
    whichever comes first, and never raises. The target's timeout starts when the probe
    does: time spent waiting for a free slot (``limiter``) counts only against ``deadline``."""
    loop = asyncio.get_running_loop()
    result = ProbeResult()
    if limiter is not None:
        try:
            if limiter.locked():  # only a wait needs a timer (one per probe is measurable at 10,000)
                async with asyncio.timeout_at(deadline):
                    await limiter.acquire()
            else:
                await limiter.acquire()
        except TimeoutError:
            result.fail(Reason.TIMEOUT, "no free probe slot before the scrape deadline (exporter.max_concurrency)")
            return result
    started = time.perf_counter()
    now = loop.time()
    end = min(deadline, now + target.timeout)
    try:
        async with asyncio.timeout_at(end):
            result.up = await PROBERS[target.prober].probe(target, result)
    except TimeoutError:
        result.fail(Reason.TIMEOUT, f"no answer within {max(end - now, 0):.3g}s")
    except ProbeFailure as failure:
        result.fail(failure.reason, failure.detail)
    except Exception as exc:  # a prober bug must cost one path, not the scrape
        log.error("prober %s crashed on %s:%s: %r", target.prober, target.host, target.port, exc, exc_info=True)
        result.fail(Reason.ERROR, type(exc).__name__)
    finally:
        if limiter is not None:
            limiter.release()
    result.duration = time.perf_counter() - started
    if not result.up and result.reason is None:
        result.fail(Reason.PROTOCOL, "prober reported failure")
    if not result.up:
        log.debug(
            "probe failed site=%s path=%s target=%s:%s reason=%s detail=%s",
            target.site, target.path, target.host, target.port, result.reason, result.detail,
        )
    return result


async def run_all(
    targets: Sequence[ProbeTarget], *, budget: float, limiter: asyncio.Semaphore | None = None,
    flights: SingleFlight | None = None,
) -> list[Outcome]:
    """Probe every target concurrently; returns within ``budget`` seconds (plus scheduling).
    With ``flights``, a target already being probed by another scrape is not probed twice."""
    if not targets:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    if flights is not None:
        results = await flights.run_many(targets, deadline=deadline, limiter=limiter, runner=run_probe)
    else:
        results = await asyncio.gather(*(run_probe(t, deadline=deadline, limiter=limiter) for t in targets))
    now = time.time()
    return [Outcome(t, r, now) for t, r in zip(targets, results)]
