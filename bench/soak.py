"""Soak: thousands of probes against hostile servers; is anything left behind?

Every prober in the table (and, for those that can, once more starting with TLS) is run
against loopback servers that never answer, trickle, flood garbage, reset at accept and
after the first bytes, and a hosts-table name whose first address drops SYNs. The probes go
through the exporter's own scrape path (``scrape.run_all`` with its concurrency limit), from
a few scrapes at once. After a warm-up, resident memory, open file descriptors and the
number of live Python objects are taken at ten checkpoints: flat is the goal. A leaked
socket, task or buffer shows up as a column that grows with the probe count.

With ``--peer``, the probes the blackbox exporter also has (TCP connect, TLS handshake, HTTP
GET) are then run against the same servers by both exporters as processes, driven over HTTP
as Prometheus drives them (one request in flight per path, so no probe is shared), and
their RSS and descriptors are printed side by side.

    python -m bench.soak --probes 30000 --concurrency 200 --timeout 0.5 [--peer]

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
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

from bench.run import VANTAGE, blackbox_binary, exporter_process, http_get, illiad_argv, illiad_config, memory_mb
from illiad_exporter.catalog import Expect
from illiad_exporter.probers import PROBERS, ProbeTarget
from illiad_exporter.scrape import run_all
from tests.fakes import (DroppingListener, ThreadedServer, garbage, hold_silently, reset_after_first_bytes,
                         reset_at_once, tls_first_options, trickle)
from tests.peers import Peer, free_port

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
    objects: int  # live objects the garbage collector tracks, no collection forced (0: not taken)


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
    # the warm-up: imports, TLS contexts, caches and the allocator's working set
    await scrape(targets, warmup, concurrency, limiter, budget, Counter())
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


# -- side by side with the blackbox exporter ---------------------------------------------------

# illiad's prober -> the blackbox module that does the same
PEER_MODULES = {"tcp": "tcp_connect", "tls": "tls_connect", "http": "http_get"}
PEER_CASES = ["silent", "trickle", "garbage", "reset", "reset_after_hello"]


def blackbox_modules(path: Path, timeout: float) -> Path:
    path.write_text(
        "modules:\n"
        f"  tcp_connect: {{prober: tcp, timeout: {timeout}s, tcp: {{preferred_ip_protocol: ip4}}}}\n"
        f"  tls_connect: {{prober: tcp, timeout: {timeout}s, tcp: {{preferred_ip_protocol: ip4, tls: true}}}}\n"
        f"  http_get: {{prober: http, timeout: {timeout}s, http: {{preferred_ip_protocol: ip4}}}}\n"
    )
    return path


async def drive(urls: list[str], count: int, timeout: float) -> int:
    """GET the URLs round and round, one request in flight per URL, ``count`` in all."""
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(timeout + 1)}
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=timeout + 10)) as session:
        async def stream(url: str) -> None:
            nonlocal done
            while done < count:
                done += 1
                async with session.get(url, headers=headers) as answer:
                    await answer.read()

        await asyncio.gather(*(stream(url) for url in urls))
    return done


def soak_process(proc: Peer, urls: list[str], count: int, warmup: int, timeout: float) -> list[Checkpoint]:
    def checkpoint(done: int) -> Checkpoint:
        time.sleep(0.5)  # the server closes the driver's kept-alive connections after it hangs up
        return Checkpoint(done, int(memory_mb(proc.pid)[0] * 2**20), len(os.listdir(f"/proc/{proc.pid}/fd")), 0)

    asyncio.run(drive(urls, warmup, timeout))
    checkpoints = [checkpoint(0)]
    done = 0
    for step in range(1, 11):
        done += asyncio.run(drive(urls, count * step // 10 - done, timeout))
        checkpoints.append(checkpoint(done))
    return checkpoints


def side_by_side(ports: dict[str, int], args: argparse.Namespace) -> list[str]:
    binary = blackbox_binary()
    if binary is None:
        return ["side by side: the blackbox exporter is not installed (Debian prometheus-blackbox-exporter)"]
    combos = [(prober, ports[case]) for prober in PEER_MODULES for case in PEER_CASES]
    paths = [combos[i % len(combos)] for i in range(args.concurrency)]  # one stream each: none shared
    with tempfile.TemporaryDirectory(prefix="illiad-soak-") as tmp:
        work = Path(tmp)
        config = illiad_config(work / "illiad.yml", [[{"host": "127.0.0.1", "port": port, "prober": prober}
                                                      for prober, port in paths]],
                               timeout=args.timeout, concurrency=args.concurrency)
        port = free_port()
        with exporter_process(illiad_argv(config, port, event_loop="asyncio"), port, work / "illiad.log") as proc:
            urls = [f"http://127.0.0.1:{port}/probe?site=site00000&path=p{i}" for i in range(len(paths))]
            illiad = soak_process(proc, urls, args.probes, args.warmup, args.timeout)
        port = free_port()
        argv = [binary, f"--config.file={blackbox_modules(work / 'blackbox.yml', args.timeout)}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        with exporter_process(argv, port, work / "blackbox.log") as proc:
            urls = [f"http://127.0.0.1:{port}/probe?module={PEER_MODULES[prober]}&target="
                    + (f"http://127.0.0.1:{target}/" if prober == "http" else f"127.0.0.1:{target}")
                    for prober, target in paths]
            blackbox = soak_process(proc, urls, args.probes, args.warmup, args.timeout)
    lines = [f"side by side: {args.probes} probes each (tcp, tls, http x {len(PEER_CASES)} hostile cases), "
             f"{len(paths)} requests in flight, one per path, timeout {args.timeout}s; both as processes",
             "                  illiad-port-exporter   blackbox exporter",
             "          probes   RSS MiB  fds           RSS MiB  fds"]
    for ours, theirs in zip(illiad, blackbox):
        lines.append(f"          {ours.probes:6d}  {ours.rss / 2**20:8.1f}  {ours.fds:3d}          "
                     f"{theirs.rss / 2**20:8.1f}  {theirs.fds:3d}")
    for name, points in (("illiad-port-exporter", illiad), ("blackbox exporter", blackbox)):
        lines.append(f"  {name + ':':21} rss drift {(points[-1].rss - points[0].rss) / 2**20:+.1f} MiB, "
                     f"fds drift {points[-1].fds - points[0].fds:+d}")
    return lines


def front_door_config(path: Path, generation: int, port: int, paths: int) -> Path:
    """``paths`` paths to ``port`` in sites of ten, named by ``generation`` (each reload a new plan)."""
    lines = ["defaults: {system_resolver: false, timeout: 1s}",
             "exporter: {header_timeout: 1s, idle_timeout: 2s, max_connections: 100}", "sites:"]
    for s in range(max(paths // 10, 1)):
        customs = ", ".join(f"{{name: g{generation}p{p}, from: [{VANTAGE}], host: 127.0.0.1, port: {port}}}"
                            for p in range(10))
        lines.append(f"  - {{name: g{generation}s{s:04d}, custom: [{customs}]}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def front_door_soak(args: argparse.Namespace) -> list[str]:
    """The exporter as a process, for ``args.cycles`` cycles of: 150 clients that connect and
    send nothing, 10 malformed requests, a reload to a differently named config of
    ``args.paths`` paths, and a /metrics scrape. RSS and descriptors at eleven checkpoints,
    each taken once the header timeout has closed the idle clients."""
    import socket
    import urllib.request

    def raw(port: int, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(data)
            try:
                while conn.recv(4096):
                    pass
            except ConnectionResetError:  # answered 400 and closed before reading it all
                pass

    refused = free_port()  # nothing listens: every probe is refused at once
    with tempfile.TemporaryDirectory(prefix="illiad-soak-door-") as tmp:
        work = Path(tmp)
        config = front_door_config(work / "illiad.yml", 0, refused, args.paths)
        port = free_port()
        with exporter_process(illiad_argv(config, port, event_loop="asyncio"), port, work / "illiad.log") as proc:
            points: list[tuple[int, float, int]] = []
            slowest = 0.0
            for cycle in range(args.cycles + 1):
                if cycle % max(args.cycles // 10, 1) == 0:
                    time.sleep(2.0)  # the idle clients of the last cycle: closed by the header timeout
                    points.append((cycle, memory_mb(proc.pid)[0], len(os.listdir(f"/proc/{proc.pid}/fd"))))
                if cycle == args.cycles:
                    break
                idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(150)]
                for _ in range(10):
                    raw(port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
                front_door_config(config, cycle + 1, refused, args.paths)
                request = urllib.request.Request(f"http://127.0.0.1:{port}/-/reload", method="POST")
                with urllib.request.urlopen(request, timeout=30) as answer:  # an error status raises
                    answer.read()
                started = time.monotonic()
                status, body = http_get(f"http://127.0.0.1:{port}/metrics", 30.0)
                slowest = max(slowest, time.monotonic() - started)
                if body.count("illiad_port_up{") != args.paths:
                    raise SystemExit(f"the scrape shows {body.count('illiad_port_up{')} paths, not {args.paths}")
                for conn in idle:
                    conn.close()
            log_bytes = (work / "illiad.log").stat().st_size
    lines = [f"front door and reloads: {args.cycles} cycles of 150 idle clients, 10 malformed requests, a reload "
             f"of {args.paths} newly named paths and a scrape (slowest scrape {slowest:.2f}s; log {log_bytes} bytes)",
             "          cycle   RSS MiB  fds"]
    lines += [f"          {cycle:5d}  {rss:8.1f}  {fds:3d}" for cycle, rss, fds in points]
    lines.append(f"  rss drift {points[-1][1] - points[1][1]:+.1f} MiB after the first checkpoint, "
                 f"fds drift {points[-1][2] - points[0][2]:+d}")
    return lines


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
    parser.add_argument("--peer", action="store_true",
                        help="then soak both exporters as processes with tcp, tls and http probes, side by side")
    parser.add_argument("--front-door", dest="front_door", action="store_true",
                        help="instead: soak the exporter process with idle clients, malformed requests, reloads "
                             "and scrapes (--cycles, --paths)")
    parser.add_argument("--cycles", type=int, default=50, help="--front-door: reload+scrape cycles")
    parser.add_argument("--paths", type=int, default=1000, help="--front-door: paths in each config")
    args = parser.parse_args(argv)
    if args.front_door:
        print("\n".join(front_door_soak(args)))
        return 0
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
        peer_lines = side_by_side(ports, args) if args.peer else []
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
    print(f"gc objects:       {first.objects} at the first checkpoint, {collected.objects} after the last collection")
    print(f"garbage offered:  {garbage_offered / 2**20:.1f} MiB in total")
    if peer_lines:
        print()
        print("\n".join(peer_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
