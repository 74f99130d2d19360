"""Run probes concurrently under one deadline; a silent target never holds the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from .probers import PROBERS, ProbeFailure, ProbeResult, ProbeTarget, Reason, release_frames
from .probers.base import NotRun
from .probers.tcp import QuickConnect
from .singleflight import SingleFlight

log = logging.getLogger("illiad_exporter.scrape")


@dataclass(frozen=True, slots=True)
class Outcome:
    target: ProbeTarget
    result: ProbeResult
    finished_at: float  # unix time


async def run_probe(
    target: ProbeTarget, *, deadline: float, limiter: asyncio.Semaphore | None = None, slot_held: bool = False
) -> ProbeResult:
    """Probe one target; ends by ``deadline`` (loop time) or the target's own timeout,
    whichever comes first, and never raises. The target's timeout starts when the probe
    does: time spent waiting for a free slot (``limiter``) counts only against ``deadline``.
    With ``slot_held`` the caller has already taken the slot; it is released here."""
    loop = asyncio.get_running_loop()
    result = ProbeResult()
    if limiter is not None and not slot_held:
        try:
            if limiter.locked():  # only a wait needs a timer (one per probe is measurable at 10,000)
                async with asyncio.timeout_at(deadline):
                    await limiter.acquire()
            else:
                await limiter.acquire()
        except TimeoutError:
            result.fail(Reason.EXPORTER, NO_SLOT, not_run=NotRun.NO_SLOT)
            return result
    started = time.perf_counter()
    now = loop.time()
    end = target.ends_by(now, deadline)
    try:
        async with asyncio.timeout_at(end):
            result.up = await PROBERS[target.prober].probe(target, result)
    except TimeoutError as timeout:
        if result.step == "resolve":  # the resolver, not the path, gave no answer
            result.fail(Reason.DNS, f"no answer from the resolver for {target.host} within {max(end - now, 0):.3g}s")
        elif result.address is not None:  # the connection was accepted: the service is what was slow
            result.fail(Reason.TIMEOUT, f"connected, then no answer within {max(end - now, 0):.3g}s")
        else:
            result.fail(Reason.TIMEOUT, f"no answer within {max(end - now, 0):.3g}s")
        release_frames(timeout)
    except ProbeFailure as failure:
        result.fail(failure.reason, failure.detail, not_run=failure.not_run)
        release_frames(failure)
    except Exception as exc:  # a prober bug must cost one path, not the scrape
        log.error("prober %s crashed on %s:%s: %r", target.prober, target.host, target.port, exc, exc_info=True)
        result.fail(Reason.ERROR, type(exc).__name__)
        release_frames(exc)
    finally:
        if limiter is not None:
            limiter.release()
    result.duration = time.perf_counter() - started
    if not result.up and result.reason is None:
        result.fail(Reason.PROTOCOL, "prober reported failure")
    _log_failure(target, result)
    return result


def _log_failure(target: ProbeTarget, result: ProbeResult) -> None:
    if not result.up:
        log.debug(
            "probe failed site=%s path=%s target=%s:%s reason=%s detail=%s",
            target.site, target.path, target.host, target.port, result.reason, result.detail,
        )


async def run_all(
    targets: Sequence[ProbeTarget], *, budget: float, limiter: asyncio.Semaphore | None = None,
    flights: SingleFlight | None = None,
) -> list[Outcome]:
    """Probe every target concurrently; returns within ``budget`` seconds (plus scheduling).
    With ``flights``, a target already being probed (or queued) by another scrape is not
    probed twice, unless that scrape's earlier deadline would cut the probe short.

    A probe's task is created only once it has a slot (``limiter``): 10,000 targets are not
    10,000 tasks queued on a semaphore, whose first steps alone would hold the event loop
    long enough to time out the probes already running and skew their latency. Until then
    a target has a placeholder future, which other scrapes join. A connect-only probe to an
    address known without a lookup takes no task at all (probers.tcp.QuickConnect)."""
    if not targets:
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    answers, queued = _answers(targets, deadline, flights, loop)
    await _dispatch(queued, deadline, limiter, loop)
    return await _settled(targets, answers, deadline, loop)


async def run_in_parts(
    targets: Sequence[ProbeTarget], ends: Sequence[int], consume: Callable[[list[Outcome]], None], *,
    budget: float, limiter: asyncio.Semaphore | None = None, flights: SingleFlight | None = None,
) -> None:
    """:func:`run_all`, its outcomes handed to ``consume`` a part at a time (``targets[0:ends[0]]``,
    then up to ``ends[1]``, ...), each part once its probes are done, while later parts are
    still probing. A part's placeholders (and single-flight entries) are made when the
    dispatching reaches it, and its outcomes are let go of once consumed: a probe worker
    holds a part or two of its share at a time, not the whole share's answers and results
    (with its answer sent a part at a time too, workers.ProbedPart, 2 workers at 30,000
    paths peaked at 168 MiB PSS instead of 218: bench/RESULTS.txt).
    Overlapping scrapes still probe a target once: whichever reaches a part first probes
    it, and the other joins those probes as it reaches the part."""
    if not targets:
        return
    if not ends or ends[-1] != len(targets):
        raise ValueError("the parts must end with the last target")
    if len(ends) == 1:  # a site's /probe: no dispatching task to make and wake
        consume(await run_all(targets, budget=budget, limiter=limiter, flights=flights))
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    parts: Parts = deque((targets[start:end], loop.create_future()) for start, end in zip([0, *ends], ends))
    dispatching = loop.create_task(_dispatch_parts(deque(parts), deadline, limiter, flights, loop))
    try:
        while parts:  # each side lets go of a part when done with it
            part, made = parts.popleft()
            consume(await _settled(part, await made, deadline, loop))
            del part, made
        await dispatching
    finally:  # cancelled: the dispatch's own finally leaves no placeholder for others to wait on
        dispatching.cancel()


Answers = list[asyncio.Future[ProbeResult]]
Parts = deque[tuple[Sequence[ProbeTarget], asyncio.Future[Answers]]]  # each part's targets and answers to come


async def _dispatch_parts(parts: Parts, deadline: float, limiter: asyncio.Semaphore | None,
                          flights: SingleFlight | None, loop: asyncio.AbstractEventLoop) -> None:
    """Each part's answers made when the dispatching reaches it, then its probes started;
    the parts the deadline leaves unreached fail for want of a slot, as queued targets do."""
    try:
        while parts and loop.time() < deadline:
            targets, made = parts[0]
            answers, queued = _answers(targets, deadline, flights, loop)
            made.set_result(answers)
            parts.popleft()
            del made, answers
            await _dispatch(queued, deadline, limiter, loop)
    finally:
        for targets, made in parts:
            made.set_result([_no_slot(loop) for _ in targets])
        parts.clear()


def _no_slot(loop: asyncio.AbstractEventLoop) -> asyncio.Future[ProbeResult]:
    answer: asyncio.Future[ProbeResult] = loop.create_future()
    answer.set_result(_no_slot_result())
    return answer


def _answers(targets: Sequence[ProbeTarget], deadline: float, flights: SingleFlight | None,
             loop: asyncio.AbstractEventLoop) -> tuple[Answers, deque[tuple[ProbeTarget, asyncio.Future[ProbeResult]]]]:
    """Each target's future answer, another scrape's probe where one is in flight, and the
    targets this scrape probes itself with their placeholders."""
    answers: Answers = []
    queued: deque[tuple[ProbeTarget, asyncio.Future[ProbeResult]]] = deque()
    for target in targets:
        shared = flights.in_flight(target, deadline) if flights is not None else None
        if shared is None:
            shared = loop.create_future()
            if flights is not None:
                flights.track(target, shared, deadline)
            queued.append((target, shared))
        answers.append(shared)
    return answers, queued


async def _dispatch(queued: deque[tuple[ProbeTarget, asyncio.Future[ProbeResult]]], deadline: float,
                    limiter: asyncio.Semaphore | None, loop: asyncio.AbstractEventLoop) -> None:
    """Start the probes in order, each when it has a slot; a placeholder leaves ``queued``
    as its probe starts (the answers are held by who waits for them, not by the queue)."""
    try:
        async with asyncio.timeout_at(deadline):
            while queued:
                if limiter is not None:
                    await limiter.acquire()  # returns at once while a slot is free
                target, placeholder = queued.popleft()
                address = QuickConnect.address_of(target, loop)
                if address is not None:
                    QuickConnect(target, address, deadline=deadline, loop=loop,
                                 done=partial(_quick_done, target, placeholder, limiter))
                else:
                    task = loop.create_task(run_probe(target, deadline=deadline, limiter=limiter, slot_held=True))
                    task.add_done_callback(partial(_settle, placeholder))
    except TimeoutError:
        pass  # no slot came free for the targets left before the deadline
    finally:  # also when the scrape is cancelled: never leave a placeholder for others to wait on
        for _, placeholder in queued:
            placeholder.set_result(_no_slot_result())
        queued.clear()


async def _settled(targets: Sequence[ProbeTarget], answers: Answers, deadline: float,
                   loop: asyncio.AbstractEventLoop) -> list[Outcome]:
    """The outcomes of ``targets`` once their answers are in, or the deadline has passed."""
    waiting = time.perf_counter()
    pending = {answer for answer in answers if not answer.done()}
    if pending:
        # asyncio.wait cancels nothing: a shared probe may still serve a later scrape. The
        # grace lets the probes this deadline ends record why (a name still resolving is
        # dns), rather than all read as this scrape's timeout.
        await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0.0) + SETTLE_GRACE)
    now = time.time()
    return [Outcome(target, _result_of(answer, waiting), now) for target, answer in zip(targets, answers)]


# How long after the deadline a scrape waits for the probes that deadline has just ended.
SETTLE_GRACE = 0.05
# The exporter's own limit, not the path's: reason exporter (see Reason.EXPORTER).
NO_SLOT = "no free probe slot before the scrape deadline (exporter.max_concurrency)"


def _no_slot_result() -> ProbeResult:
    """A target the scrape's deadline left without a probe slot: the exporter's limit."""
    return _failed(Reason.EXPORTER, NO_SLOT, not_run=NotRun.NO_SLOT)


def _failed(reason: Reason, detail: str, *, not_run: NotRun | None = None) -> ProbeResult:
    result = ProbeResult()
    result.fail(reason, detail, not_run=not_run)
    return result


def _quick_done(target: ProbeTarget, placeholder: asyncio.Future[ProbeResult], limiter: asyncio.Semaphore | None,
                result: ProbeResult) -> None:
    if limiter is not None:
        limiter.release()
    _log_failure(target, result)
    if not placeholder.done():
        placeholder.set_result(result)


def _settle(placeholder: asyncio.Future[ProbeResult], task: asyncio.Task[ProbeResult]) -> None:
    if placeholder.done():
        return
    if task.cancelled() or task.exception() is not None:  # run_probe never raises: a cancelled loop
        placeholder.set_result(_failed(Reason.ERROR, "the probe ended without a result"))
    else:
        placeholder.set_result(task.result())


def _result_of(answer: asyncio.Future[ProbeResult], waiting: float) -> ProbeResult:
    if answer.done():
        return answer.result()
    # a shared probe started by a scrape with a later deadline
    result = _failed(Reason.TIMEOUT, "no answer within this scrape's deadline")
    result.duration = time.perf_counter() - waiting
    return result
