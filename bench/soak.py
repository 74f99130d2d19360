"""Soak: thousands of probes against hostile servers; is anything left behind?

Every prober in the table (and, for those that can, once more starting with TLS) is run
against loopback servers that never answer, trickle, flood garbage, reset at accept and
after the first bytes, and a hosts-table name whose first address drops SYNs. The probes go
through the exporter's own scrape path (``scrape.run_all`` with its concurrency limit), from
a few scrapes at once. After a warm-up, resident memory, open file descriptors and the
number of live Python objects are taken at ten checkpoints: flat is the goal. A leaked
socket, task or buffer shows up as a column that grows with the probe count.

    python bench/soak.py --probes 30000 --concurrency 200 --timeout 0.5

Prints figures; asserts nothing (tests/test_soak_script.py runs a tiny N to keep it working).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import multiprocessing
import os
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from illiad_exporter.catalog import Expect  # noqa: E402
from illiad_exporter.probers import PROBERS, ProbeTarget  # noqa: E402
from illiad_exporter.scrape import run_all  # noqa: E402
from tests.fakes import (DroppingListener, ThreadedServer, garbage, hold_silently, reset_after_first_bytes,  # noqa: E402
                         reset_at_once, tls_first_options, trickle)

HANDLERS = {"silent": hold_silently, "trickle": trickle, "garbage": garbage, "reset": reset_at_once,
            "reset_after_hello": reset_after_first_bytes}


def rss_bytes() -> int:
    """Current resident set size (Linux /proc); peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource  # POSIX; on Windows the figure is not taken

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def target(prober: str, port: int, timeout: float, *, host: str = "127.0.0.1",
           addresses: tuple[str, ...] = (), tls_first: bool = False) -> ProbeTarget:
    options = PROBERS[prober].options.model_validate(tls_first_options(prober) if tls_first else {})
    return ProbeTarget(site="soak", path=prober + ("_tls" if tls_first else ""), vantage="web_server", host=host,
                       port=port, prober=prober, expect=Expect.OPEN, timeout=timeout, options=options,
                       static_addresses=addresses, system_resolver=not addresses)


@dataclasses.dataclass
class Checkpoint:
    probes: int  # probes run so far in the measured soak
    rss: int
    fds: int
    objects: int  # live objects the garbage collector tracks (no collection forced)


async def scrape(targets: list[ProbeTarget], count: int, concurrency: int, limiter: asyncio.Semaphore,
                 budget: float, reasons: Counter[str]) -> int:
    """At least ``count`` probes, as scrapes of every target, a few scrapes at once so that
    the limiter's slots stay full; returns how many were run."""
    started = 0

    async def scraper() -> None:
        nonlocal started
        while started < count:
            started += len(targets)
            for outcome in await run_all(targets, budget=budget, limiter=limiter):
                result = outcome.result
                reasons[str(result.reason) if result.reason else "up"] += 1

    scrapers = -(-concurrency // len(targets)) + 1  # ceil, plus one to fill the gaps
    await asyncio.gather(*(scraper() for _ in range(scrapers)))
    return started


async def measured(targets: list[ProbeTarget], count: int, concurrency: int, warmup: int, budget: float
                   ) -> tuple[list[Checkpoint], Checkpoint, float, Counter[str]]:
    """Warm up, then soak in ten steps with a checkpoint after each: all in one event loop,
    as the exporter runs. The last figure is taken again after a full garbage collection."""
    limiter = asyncio.Semaphore(concurrency)
    await scrape(targets, warmup, concurrency, limiter, budget, Counter())  # imports, TLS contexts, the allocator's high-water mark
    reasons: Counter[str] = Counter()
    checkpoints = [Checkpoint(0, rss_bytes(), open_fds(), len(gc.get_objects()))]
    done = 0
    started = time.perf_counter()
    for step in range(1, 11):
        done += await scrape(targets, count * step // 10 - done, concurrency, limiter, budget, reasons)
        checkpoints.append(Checkpoint(done, rss_bytes(), open_fds(), len(gc.get_objects())))
    elapsed = time.perf_counter() - started
    gc.collect()
    collected = Checkpoint(done, rss_bytes(), open_fds(), len(gc.get_objects()))
    return checkpoints, collected, elapsed, reasons


def serve_hostile(pipe: Connection) -> None:
    """In a child process, so the soak's descriptors and memory are the probes' alone."""
    servers = {name: ThreadedServer(handler, backlog=1024).__enter__() for name, handler in HANDLERS.items()}
    dropping = DroppingListener("127.0.0.2", servers["silent"].port)
    pipe.send({name: s.port for name, s in servers.items()})
    pipe.recv()  # stop
    pipe.send(servers["garbage"].bytes_sent)
    dropping.__exit__()
    for server in servers.values():
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10000, help="probes in the measured soak")
    parser.add_argument("--warmup", type=int, default=3000, help="probes before the first checkpoint")
    parser.add_argument("--concurrency", type=int, default=200, help="probes in flight (exporter.max_concurrency)")
    parser.add_argument("--timeout", type=float, default=0.5, help="each probe's timeout, seconds")
    parser.add_argument("--case", action="append", choices=[*HANDLERS, "multi_address"],
                        help="only this hostile case (repeatable; default all)")
    parser.add_argument("--prober", action="append", choices=sorted(PROBERS), help="only this prober (repeatable)")
    parser.add_argument("--no-tls-first", dest="tls_first", action="store_false",
                        help="skip the second round of targets that start with a TLS handshake")
    args = parser.parse_args(argv)
    cases = args.case or [*HANDLERS, "multi_address"]
    probers = args.prober or list(PROBERS)
    variants = [(p, False) for p in probers]
    if args.tls_first:
        variants += [(p, True) for p in probers if tls_first_options(p)]  # tls and illiad_web always start so

    pipe, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=serve_hostile, args=(child_end,), daemon=True)
    child.start()
    try:
        if not pipe.poll(30):
            raise SystemExit("the hostile servers did not start")
        ports: dict[str, int] = pipe.recv()
        targets = [target(p, port, args.timeout, tls_first=tls) for p, tls in variants
                   for case, port in ports.items() if case in cases]
        if "multi_address" in cases:
            targets += [target(p, ports["silent"], args.timeout, host="multi.test", addresses=("127.0.0.2", "127.0.0.1"),
                               tls_first=tls) for p, tls in variants]
        checkpoints, collected, elapsed, reasons = asyncio.run(
            measured(targets, args.probes, args.concurrency, args.warmup, budget=args.timeout + 1))
        pipe.send("stop")
        garbage_offered = pipe.recv() if pipe.poll(30) else 0
    finally:
        child.join(10)
        if child.is_alive():
            child.terminate()
            child.join(5)

    first, last = checkpoints[0], checkpoints[-1]
    tls_note = f" + {len(variants) - len(probers)} starting with TLS" if len(variants) > len(probers) else ""
    print(f"probes:           {last.probes} ({len(probers)} probers{tls_note} x {len(cases)} hostile cases), "
          f"concurrency {args.concurrency}, timeout {args.timeout}s, after {args.warmup} to warm up")
    print(f"elapsed:          {elapsed:.2f} s ({last.probes / elapsed:.0f} probes/s)")
    print(f"outcomes:         {dict(sorted(reasons.items()))}")
    print("checkpoints:      probes    RSS MiB  fds  gc objects")
    for point in checkpoints:
        print(f"                  {point.probes:6d}  {point.rss / 2**20:9.1f}  {point.fds:3d}  {point.objects:10d}")
    print(f"  after gc.collect {collected.probes:5d}  {collected.rss / 2**20:9.1f}  {collected.fds:3d}  "
          f"{collected.objects:10d}")
    print(f"rss before/after: {first.rss / 2**20:.1f} MiB / {last.rss / 2**20:.1f} MiB "
          f"(drift {(last.rss - first.rss) / 2**20:+.1f} MiB)")
    print(f"fds before/after: {first.fds} / {last.fds} (drift {last.fds - first.fds:+d})")
    print(f"objects after gc: {checkpoints[0].objects} at the first checkpoint, {collected.objects} at the end")
    print(f"garbage offered:  {garbage_offered / 2**20:.1f} MiB in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
