"""Soak: thousands of probes against hostile servers; is anything left behind?

Every prober in the table is run, round after round, against loopback servers that never
answer, trickle, flood garbage, reset at accept and after the first bytes, and a hosts-table
name whose first address drops SYNs. After a warm-up round, the process's resident memory
and open file descriptors are taken; after the soak (and a garbage collection) again. Flat is
the goal: a leaked socket or task shows up as descriptors or memory that grow with N.

    python bench/soak.py --probes 5000 --concurrency 200 --timeout 0.3

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
from illiad_exporter.scrape import run_probe  # noqa: E402
from tests.fakes import (DroppingListener, ThreadedServer, garbage, hold_silently, reset_after_first_bytes,  # noqa: E402
                         reset_at_once, trickle)

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
           addresses: tuple[str, ...] = ()) -> ProbeTarget:
    return ProbeTarget(site="soak", path=prober, vantage="web_server", host=host, port=port, prober=prober,
                       expect=Expect.OPEN, timeout=timeout, options=PROBERS[prober].options(),
                       static_addresses=addresses, system_resolver=not addresses)


async def soak(targets: list[ProbeTarget], count: int, concurrency: int) -> Counter[str]:
    reasons: Counter[str] = Counter()
    limiter = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(t: ProbeTarget) -> None:
        async with limiter:  # outside run_probe: waiting for a slot is not the probe's time
            result = await run_probe(t, deadline=loop.time() + t.timeout + 1)
        reasons[str(result.reason) if result.reason else "up"] += 1

    await asyncio.gather(*(one(targets[i % len(targets)]) for i in range(count)))
    return reasons


async def measured(targets: list[ProbeTarget], count: int, concurrency: int
                   ) -> tuple[int, int, int, int, float, Counter[str]]:
    """Warm up, measure, soak, measure: all in one event loop, as the exporter runs."""
    # warm-up at full concurrency: imports, TLS contexts, the allocator's high-water mark
    await soak(targets, max(len(targets), 3 * concurrency), concurrency)
    gc.collect()
    rss_before, fds_before = rss_bytes(), open_fds()
    started = time.perf_counter()
    reasons = await soak(targets, count, concurrency)
    elapsed = time.perf_counter() - started
    gc.collect()
    return rss_before, fds_before, rss_bytes(), open_fds(), elapsed, reasons


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
    parser.add_argument("--probes", type=int, default=5000, help="probes in the measured soak")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=0.5, help="each probe's timeout, seconds")
    parser.add_argument("--case", action="append", choices=[*HANDLERS, "multi_address"],
                        help="only this hostile case (repeatable; default all)")
    parser.add_argument("--prober", action="append", choices=sorted(PROBERS), help="only this prober (repeatable)")
    args = parser.parse_args(argv)
    cases = args.case or [*HANDLERS, "multi_address"]
    probers = args.prober or list(PROBERS)

    pipe, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=serve_hostile, args=(child_end,), daemon=True)
    child.start()
    try:
        if not pipe.poll(30):
            raise SystemExit("the hostile servers did not start")
        ports: dict[str, int] = pipe.recv()
        targets = [target(p, port, args.timeout) for p in probers for case, port in ports.items() if case in cases]
        if "multi_address" in cases:
            targets += [target(p, ports["silent"], args.timeout, host="multi.test",
                               addresses=("127.0.0.2", "127.0.0.1")) for p in probers]
        rss_before, fds_before, rss_after, fds_after, elapsed, reasons = asyncio.run(
            measured(targets, args.probes, args.concurrency))
        pipe.send("stop")
        garbage_offered = pipe.recv() if pipe.poll(30) else 0
    finally:
        child.join(10)
        if child.is_alive():
            child.terminate()
            child.join(5)

    print(f"probes:           {args.probes} ({len(probers)} probers x {len(cases)} hostile cases), "
          f"concurrency {args.concurrency}, timeout {args.timeout}s")
    print(f"elapsed:          {elapsed:.2f} s ({args.probes / elapsed:.0f} probes/s)")
    print(f"outcomes:         {dict(sorted(reasons.items()))}")
    print(f"rss before/after: {rss_before / 2**20:.1f} MiB / {rss_after / 2**20:.1f} MiB "
          f"(drift {(rss_after - rss_before) / 2**20:+.1f} MiB)")
    print(f"fds before/after: {fds_before} / {fds_after} (drift {fds_after - fds_before:+d})")
    print(f"garbage offered:  {garbage_offered / 2**20:.1f} MiB in total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
