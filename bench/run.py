"""Benchmarks: illiad-port-exporter against the blackbox exporter, on loopback targets.

    .venv/bin/python -m bench.run            # the full run (about 15 minutes)
    .venv/bin/python -m bench.run --quick    # a smoke run with 20 paths (a minute)

Prints one table per part, then the goals against this run's figures:

  (a) throughput and CPU: N TCP paths (1,000, 10,000, 30,000; every target accepts and
      closes, or with --mixed 70% open, 25% refused, 5% silent) probed through /metrics,
      through /probe?site= (one request per site of 10 paths) and by the blackbox exporter
      driven as Prometheus drives it (one /probe?target= request per target), both at
      --requests-in-flight requests on kept-alive connections. CPU is the exporter process's
      own (utime + stime from /proc/PID/stat, all threads), never the load generator's;
      peak RSS is its VmHWM; cores is CPU seconds per wall second.
  (b) the scrape floor: N-1 open paths and one HTTP path that answers only after T seconds.
  (c) latency accuracy: a TCP connect across a delay wire between two network namespaces
      (tests/netns/delay_wire.py; root only), as each exporter reports it, against the
      injected delay; this exporter's also while it scrapes 10,000 other paths.
  (d) memory: idle RSS against the number of configured paths and sites.
  (e) compression and series: gzip's cost and size by zlib level on a real exposition, and
      the exposition with one failure reason series per failed path against all eleven.
  (f) config load: a consortium's config of 100,000 paths as the README writes it, loaded
      alone and by serve with 1 and 2 probe workers until ready, then reloaded
      (bench/config_load.py; nothing is probed).

Traffic goes only to 127.0.0.0/8 and, for (c), to 198.18.0.0/15 inside namespaces this
script creates and deletes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.exporter_process import only_test_hosts
from tests.peers import Peer, free_port

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRAPE_TIMEOUT = 30.0  # what Prometheus would send in X-Prometheus-Scrape-Timeout-Seconds
PATHS_PER_SITE = 10
SITES = "/probe?site="  # one request per site, as fast as the requests in flight allow
PACED = "/probe?site= paced"  # one request per site at a steady rate, as Prometheus scrapes them
# two processes of the same code differ by up to this much in CPU per probe at this pace
# (measured on the 2-CPU machine with rounds alternating between instances side by side)
PACED_NOISE = 0.05
SETTLE = 1.0  # seconds idle after a warm-up: longer than the serving process's CPU window (headroom.WINDOW)
# The vantage of the benchmark configs: no built-in path starts at sql_server, so the
# exporter probes exactly the custom loopback paths the config lists.
VANTAGE = "sql_server"


# -- the exporter process, seen from /proc ----------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (probe workers are children of a fork server)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                queue += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:  # it exited meanwhile
            continue
    return found


def _own_cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    # utime, stime, and cutime, cstime: what its exited children used (a worker replaced)
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and everything below it (all threads), from /proc/PID/stat."""
    return sum(_own_cpu_seconds(p) for p in process_tree(pid))


def pss_mb(pid: int) -> float:
    """The proportional set size of the process tree in MiB: each shared page counted once in
    all (RSS counts the pages the probe workers share with each other once per process)."""
    total = 0
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
    return total / 1024


class PeakPss:
    """The highest PSS of a process tree, sampled every 20 ms while in use (``with``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, pss_mb(self.pid))

    def __enter__(self) -> PeakPss:
        self.peak = pss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB, summed over the process tree."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for p in process_tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] += int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def raise_open_file_limit() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


# -- processes ---------------------------------------------------------------------------------


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it is still there 10 s later."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def exporter_process(argv: list[str], port: int, log: Path) -> Peer:
    """This exporter or the blackbox exporter as a process: ready once it listens on ``port``
    (a large config takes a while to load), stopped by its pid, killed if it dies with us."""
    return Peer(argv, port=port, log=log, ready_timeout=120, stop_timeout=10)


# One farm process holds at most this many listeners: the open-file limit (whose hard limit
# an unprivileged container cannot raise) is 20,000 on the benchmark machine.
TARGETS_PER_FARM = 15_000


@dataclass
class Farm:
    """Loopback targets (bench/farm.py), in as many processes as the open-file limit needs;
    ``targets`` maps each kind to (host, port) pairs."""

    open: int = 0
    refused: int = 0
    silent: int = 0
    slow: int = 0
    slow_after: float = 1.0
    netns: str | None = None
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    targets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def __enter__(self) -> Farm:
        self.targets = {"open": [], "refused": [], "silent": [], "slow": []}
        count = max(1, math.ceil((self.open + 2 * self.silent) / TARGETS_PER_FARM))
        try:
            for i in range(count):
                share = {"open": self._part(self.open, i, count), "refused": self._part(self.refused, i, count),
                         "silent": self._part(self.silent, i, count), "slow": self.slow if i == 0 else 0}
                self._start(share)
        except BaseException:
            self.__exit__()
            raise
        return self

    @staticmethod
    def _part(total: int, index: int, count: int) -> int:
        return total // count + (1 if index < total % count else 0)

    def _start(self, share: dict[str, int]) -> None:
        argv = (["ip", "netns", "exec", self.netns] if self.netns else []) + [
            sys.executable, str(HERE / "farm.py"), *(f"--{kind}={number}" for kind, number in share.items()),
            "--slow-after", str(self.slow_after)]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   start_new_session=True)
        self.processes.append(process)
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            process.wait(5)
            raise RuntimeError("the target farm did not start (see its error above)")
        found = json.loads(line)
        for kind in self.targets:
            self.targets[kind] += [(host, int(found["port"])) for host in found[kind]]

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes.clear()


def illiad_argv(config: Path, port: int, *, event_loop: str, listen: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(config), "--vantage", VANTAGE,
            "--web.listen-address", f"{listen}:{port}", "--log.level", "warn", "--event-loop", event_loop]


def blackbox_binary() -> str | None:
    return shutil.which("prometheus-blackbox-exporter") or (
        "/usr/bin/prometheus-blackbox-exporter" if Path("/usr/bin/prometheus-blackbox-exporter").exists() else None
    )


def blackbox_config(path: Path, *, timeout: float) -> Path:
    path.write_text(
        "modules:\n"
        f"  tcp_connect: {{prober: tcp, timeout: {timeout}s, tcp: {{preferred_ip_protocol: ip4}}}}\n"
        "  http_2xx: {prober: http, timeout: 10s, http: {preferred_ip_protocol: ip4}}\n"
    )
    return path


def illiad_config(path: Path, sites: Sequence[Sequence[dict]], *, timeout: float, concurrency: int,
                  exporter_extra: str = "") -> Path:
    """A config with these sites, each a list of custom paths ({host, port, prober?, ...})."""
    lines = [
        "defaults: {system_resolver: false, timeout: %ss}" % timeout,
        f"exporter: {{max_concurrency: {concurrency}{', ' + exporter_extra if exporter_extra else ''}}}",
        "sites:",
    ]
    for s, paths in enumerate(sites):
        customs = ", ".join(
            "{" + ", ".join([f"name: p{p}", f"from: [{VANTAGE}]"] + [f"{k}: {v}" for k, v in spec.items()]) + "}"
            for p, spec in enumerate(paths)
        )
        lines.append(f"  - {{name: site{s:05d}, custom: [{customs}]}}")
    path.write_text("\n".join(lines) + "\n")
    # the catalog's defaults name real public hosts and no built-in path starts at VANTAGE,
    # but a catalog change must not turn a benchmark into outside traffic
    only_test_hosts(path, VANTAGE)
    return path


def chunk(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# -- load generation (its CPU is never counted) ------------------------------------------------


async def fetch_all(urls: Sequence[str], parallel: int, *, headers: dict[str, str],
                    rate: float | None = None) -> list[str]:
    """GET every URL with at most ``parallel`` in flight, over kept-alive connections; with
    ``rate``, the i-th request starts i/rate seconds after the first, as Prometheus spreads
    its scrapes over an interval (a request waits for none before it)."""
    connector = aiohttp.TCPConnector(limit=parallel, force_close=False)
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT + 30)
    gate = asyncio.Semaphore(parallel)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(index: int, url: str) -> str:
            if rate:
                await asyncio.sleep(max(start + index / rate - loop.time(), 0))
            async with gate, session.get(url, headers=headers) as answer:
                return await answer.text()

        return await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))


def timed_fetch(urls: Sequence[str], parallel: int, scrape_timeout: float = SCRAPE_TIMEOUT, *,
                rate: float | None = None) -> tuple[float, list[str]]:
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(scrape_timeout)}
    started = time.perf_counter()
    bodies = asyncio.run(fetch_all(urls, parallel, headers=headers, rate=rate))
    return time.perf_counter() - started, bodies


UP_LINE = re.compile(r"^illiad_port_up\{.*\} 1\.0$", re.M)


def count_up(bodies: Sequence[str], exporter: str) -> int:
    if exporter == "blackbox":
        return sum(1 for b in bodies if re.search(r"^probe_success 1$", b, re.M))
    return sum(len(UP_LINE.findall(b)) for b in bodies)


# -- (a) throughput and CPU ----------------------------------------------------------------------


@dataclass
class Row:
    n: int
    exporter: str
    mode: str
    wall: float  # median seconds of one round (all N probes)
    cpu_per_1000: float  # exporter CPU seconds per 1,000 probes
    rss_idle: float
    hwm: float
    up: int  # paths up in the last round
    rounds: int
    pss_idle: float = float("nan")
    pss_peak: float = float("nan")

    @property
    def cores(self) -> float:
        """CPU seconds per wall second: 1.0 is one core busy throughout."""
        return self.cpu_per_1000 * self.n / 1000 / self.wall if self.wall > 0 else float("nan")


def mix(n: int, mixed: bool, silent_share: float) -> tuple[int, int, int]:
    """(open, refused, silent) of n paths: all open, or 70% open, the rest refused or silent."""
    if not mixed:
        return n, 0, 0
    silent = max(1, round(n * silent_share)) if silent_share > 0 else 0
    open_ = round(n * 0.7)
    return open_, n - open_ - silent, silent


def path_specs(farm: Farm, n: int, mixed: bool, silent_share: float) -> list[dict]:
    open_, refused, silent = mix(n, mixed, silent_share)
    t = farm.targets
    hosts = t["open"][:open_] + t["refused"][:refused] + t["silent"][:silent]
    assert len(hosts) == n, "the farm has too few targets"
    return [{"host": host, "port": port} for host, port in hosts]


def measure_rounds(pid: int, one_round, rounds: int, warm_up=None) -> tuple[float, float, int, float]:
    """Warm up once (with ``one_round`` unless given another way), run ``rounds`` rounds, then
    one more for the peak PSS: (median wall, CPU seconds, ups of the last, peak PSS MiB).
    Sampling smaps_rollup every 20 ms costs the machine CPU, the more the more processes it
    reads, so it never runs beside the rounds whose CPU is counted (beside them it made two
    workers' CPU per probe read 4-10% dearer than one process's, on the same code). Between
    the warm-up and the rounds the exporter idles SETTLE seconds: a warm-up as fast as it goes
    would otherwise send the first half second of paced requests to the workers."""
    (warm_up or one_round)()
    time.sleep(SETTLE)
    walls = []
    cpu_before = cpu_seconds(pid)
    up = 0
    for _ in range(rounds):
        wall, up = one_round()
        walls.append(wall)
    cpu = cpu_seconds(pid) - cpu_before
    with PeakPss(pid) as pss:
        one_round()
    return statistics.median(walls), cpu, up, pss.peak


def illiad_name(event_loop: str, workers: int) -> str:
    return f"illiad ({event_loop})" if workers == 1 else f"illiad ({event_loop}, {workers} workers)"


def bench_illiad(work: Path, config: Path, n: int, *, mode: str, event_loop: str, rounds: int,
                 requests_in_flight: int, workers: int = 1, site_rate: float = 0.0) -> Row:
    """One case of (a): the exporter on ``config`` (n paths in sites of PATHS_PER_SITE);
    PACED: ``site_rate`` requests a second, warmed up by a round as fast as it goes."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = illiad_argv(config, port, event_loop=event_loop) + ["--probe-workers", str(workers)]
    with exporter_process(argv, port, work / "illiad.log") as proc:
        if workers > 1:
            wait_for_workers(proc.pid, workers)
        rss_idle, _ = memory_mb(proc.pid)
        pss_idle = pss_mb(proc.pid)
        if mode == "/metrics":
            urls = [f"{base}/metrics"]
        else:
            urls = [f"{base}/probe?site=site{s:05d}" for s in range(math.ceil(n / PATHS_PER_SITE))]

        def one_round(rate: float | None = site_rate if mode == PACED else None) -> tuple[float, int]:
            wall, bodies = timed_fetch(urls, requests_in_flight, rate=rate)
            return wall, count_up(bodies, "illiad")

        wall, cpu, up, pss_peak = measure_rounds(proc.pid, one_round, rounds, warm_up=lambda: one_round(None))
        _, hwm = memory_mb(proc.pid)
    return Row(n, illiad_name(event_loop, workers), mode, wall, cpu / (n * rounds) * 1000, rss_idle, hwm, up, rounds,
               pss_idle, pss_peak)


def wait_for_workers(pid: int, workers: int, timeout: float = 60.0) -> None:
    """Until the exporter's process tree holds its workers (they take their plan at start)."""
    deadline = time.monotonic() + timeout
    while len(process_tree(pid)) < workers + 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def bench_blackbox(work: Path, binary: str, specs: list[dict], *, parallel: int, rounds: int, timeout: float) -> Row:
    n = len(specs)
    config = blackbox_config(work / "blackbox.yml", timeout=timeout)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with exporter_process(argv, port, work / "blackbox.log") as proc:
        rss_idle, _ = memory_mb(proc.pid)
        urls = [f"{base}/probe?module=tcp_connect&target={s['host']}:{s['port']}" for s in specs]

        def one_round() -> tuple[float, int]:
            wall, bodies = timed_fetch(urls, parallel)
            return wall, count_up(bodies, "blackbox")

        pss_idle = pss_mb(proc.pid)
        wall, cpu, up, pss_peak = measure_rounds(proc.pid, one_round, rounds)
        _, hwm = memory_mb(proc.pid)
    return Row(n, "blackbox", "/probe?target=", wall, cpu / (n * rounds) * 1000, rss_idle, hwm, up, rounds,
               pss_idle, pss_peak)


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def throughput(work: Path, args: argparse.Namespace, binary: str | None) -> tuple[list[str], list[Row]]:
    sizes = args.sizes
    biggest = max(sizes)
    loops = ["asyncio"] + (["uvloop"] if uvloop_available() else [])
    rows: list[Row] = []
    open_, refused, silent = mix(biggest, args.mixed, args.silent_share)
    with Farm(open=open_, refused=refused, silent=silent) as farm:
        for n in sizes:
            specs = path_specs(farm, n, args.mixed, args.silent_share)
            # CPU is read in clock ticks (10 ms): at least 30,000 probes a case, so 1,000 paths
            # are not measured over well under a second (with 10 rounds, 0.065-0.074 ms a probe
            # over four quiet runs, which made the ratios to 30,000 paths flap around 1.15x)
            rounds = args.rounds or (2 if args.quick else max(2, min(30, math.ceil(30_000 / n))))
            # written once per size: 100,000 paths take a while to write and check
            config = illiad_config(work / f"illiad-{n}.yml", chunk(specs, PATHS_PER_SITE), timeout=args.timeout,
                                   concurrency=args.parallel)
            # paced: at least 30,000 probes too, each round lasting sites / rate seconds
            paced_rounds = args.rounds or (1 if args.quick else max(1, min(30, math.ceil(30_000 / n))))
            for mode in ("/metrics", SITES, PACED):
                for loop in loops:
                    for workers in args.workers:
                        rows.append(bench_illiad(work, config, n, mode=mode, event_loop=loop, workers=workers,
                                                 rounds=paced_rounds if mode == PACED else rounds,
                                                 requests_in_flight=args.requests_in_flight,
                                                 site_rate=args.site_rate))
            if binary and n <= args.blackbox_max:
                rows.append(bench_blackbox(work, binary, specs, parallel=args.requests_in_flight, rounds=rounds,
                                           timeout=args.timeout))
            print(f"  (a) N={n} done", file=sys.stderr, flush=True)
    kind = ("70% open, 25% refused, {:.0%} silent (timeout {}s)".format(args.silent_share, args.timeout)
            if args.mixed else "every target accepts and closes")
    lines = [
        f"(a) Throughput and CPU: {', '.join(str(n) for n in sizes)} TCP paths, {kind}; up to {args.parallel} "
        f"probes in flight (max_concurrency), {args.requests_in_flight} requests in flight for /probe, kept alive; "
        f"paced: {args.site_rate:g} sites' requests a second",
        table(
            ["N", "exporter", "endpoint", "rounds", "wall s/round", "CPU s/1000 probes", "cores", "RSS idle MiB",
             "peak RSS MiB", "PSS idle MiB", "peak PSS MiB", "up/N"],
            [[r.n, r.exporter, r.mode, r.rounds, f"{r.wall:.3f}", f"{r.cpu_per_1000:.3f}", f"{r.cores:.2f}",
              f"{r.rss_idle:.1f}", f"{r.hwm:.1f}", f"{r.pss_idle:.1f}", f"{r.pss_peak:.1f}", f"{r.up}/{r.n}"]
             for r in rows],
        ),
        "    cores: the exporter's CPU seconds per wall second (1.00: one core busy for the whole round);",
        "    CPU and memory are the exporter's whole process tree (with workers: the serving process, the",
        "    fork server and the workers). Peak RSS is the sum of each process's VmHWM, which counts the",
        "    pages the workers share once per process; PSS counts each page once (its peak sampled every",
        "    20 ms), the fair figure for several processes.",
    ]
    ratios = []
    for n in sizes:
        bb = next((r for r in rows if r.n == n and r.exporter == "blackbox"), None)
        if bb is None:
            continue
        for r in rows:
            if r.n == n and r.exporter != "blackbox" and r.mode != PACED:  # the blackbox exporter's is not paced
                cpu_ratio = r.cpu_per_1000 / bb.cpu_per_1000 if bb.cpu_per_1000 > 0 else float("nan")
                ratios.append([n, f"{r.exporter} {r.mode}", f"{cpu_ratio:.2f}", f"{r.wall / bb.wall:.2f}"])
    if ratios:
        lines += ["", "    ratios to the blackbox exporter in the same run (below 1: illiad uses less)",
                  table(["N", "illiad", "CPU per probe ratio", "wall ratio"], ratios)]
    elif not binary:
        lines.append("    blackbox exporter not installed (Debian prometheus-blackbox-exporter): no comparison")
    return lines, rows


# -- (b) the scrape floor ------------------------------------------------------------------------


def scrape_floor(work: Path, args: argparse.Namespace) -> list[str]:
    slow_after = args.slow_after
    sizes = args.sizes
    rows = []
    with Farm(open=max(sizes), slow=1, slow_after=slow_after) as farm:
        slow_host, slow_port = farm.targets["slow"][0]
        slow_spec = {"host": slow_host, "port": slow_port, "prober": "http",
                     "timeout": f"{slow_after + 5}s", "scheme": "http"}
        for n in sizes:
            specs = [slow_spec] + [{"host": h, "port": p} for h, p in farm.targets["open"][: n - 1]]
            config = illiad_config(work / f"floor-{n}.yml", chunk(specs, PATHS_PER_SITE), timeout=2.0,
                                   concurrency=args.parallel)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            with exporter_process(illiad_argv(config, port, event_loop="auto"), port, work / "floor.log"):
                walls = []
                ups = 0
                for i in range(3 if not args.quick else 2):
                    wall, bodies = timed_fetch([f"{base}/metrics"], 1)
                    ups = count_up(bodies, "illiad")
                    if i:  # the first is a warm-up
                        walls.append(wall)
            wall = statistics.median(walls)
            rows.append([n, f"{slow_after:.3f}", f"{wall:.3f}", f"{(wall - slow_after) * 1000:.0f}", f"{ups}/{n}"])
            print(f"  (b) N={n} done", file=sys.stderr, flush=True)
    return [
        f"(b) Scrape floor: N paths through /metrics, the slowest an HTTP target answering after T = {slow_after}s "
        f"(event loop: {'uvloop' if uvloop_available() else 'asyncio'})",
        table(["N", "T s", "scrape wall s", "above T ms", "up/N"], rows),
    ]


# -- (c) latency accuracy ------------------------------------------------------------------------


def latency_accuracy(work: Path, args: argparse.Namespace, binary: str | None) -> tuple[list[str], dict[str, float]]:
    from bench.latency import measure_latency

    return measure_latency(work, args, binary, illiad_argv=illiad_argv, blackbox_config=blackbox_config,
                           illiad_config=illiad_config, Farm=Farm, table=table)


# -- (d) memory ------------------------------------------------------------------------------


def idle_memory(work: Path, args: argparse.Namespace) -> list[str]:
    n = args.memory_paths
    host = "127.0.0.1"

    def idle_rss(sites: int, per_site: int) -> float:
        spec = {"host": host, "port": 9}
        config = illiad_config(work / f"mem-{sites}x{per_site}.yml", [[spec] * per_site] * sites, timeout=1.0,
                               concurrency=args.parallel)
        # the same host and port in every path: idle memory does not depend on the target
        port = free_port()
        with exporter_process(illiad_argv(config, port, event_loop="auto"), port, work / "mem.log") as proc:
            time.sleep(0.2)
            return memory_mb(proc.pid)[0]

    base = idle_rss(1, 1)
    by_site = idle_rss(max(2, n // 10), 10)  # n paths in sites of 10
    by_path = idle_rss(max(1, n // 100), 100)  # n paths in sites of 100
    sites_10, sites_100 = max(2, n // 10), max(1, n // 100)
    per_site = (by_site - by_path) / (sites_10 - sites_100) if sites_10 != sites_100 else float("nan")
    per_path = (by_path - base - (sites_100 - 1) * per_site) / (sites_100 * 100 - 1)
    rows = [
        ["1 site x 1 path", f"{base:.1f}"],
        [f"{sites_10} sites x 10 paths", f"{by_site:.1f}"],
        [f"{sites_100} sites x 100 paths", f"{by_path:.1f}"],
    ]
    return [
        f"(d) Memory: idle RSS of the exporter with {n} configured paths (before any scrape; after a scrape: "
        "peak RSS in (a))",
        table(["config", "RSS MiB"], rows),
        f"    per configured path: {per_path * 1024:.1f} KiB; per site (beyond its paths): {per_site * 1024:.1f} KiB",
    ]


# -- (e) compression and series ---------------------------------------------------------------------


def _raw_get(url: str, accept_encoding: str) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": accept_encoding,
                                                   "X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)})
    with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT + 30) as answer:  # noqa: S310 (loopback)
        return answer.read(), answer.headers.get("Content-Encoding", "")


def compression(work: Path, args: argparse.Namespace) -> list[str]:
    """What gzip costs and saves on a real exposition, by zlib level (the exporter uses
    deflate.GZIP_LEVEL), and the exposition with one failure reason series per failed
    path (the default) against all eleven per path."""
    import zlib

    from illiad_exporter.deflate import GZIP_LEVEL

    n = args.compression_paths
    open_, refused, silent = mix(n, True, 0.0)  # 70% open, 30% refused: failure reasons to show
    rows, levels = [], []
    with Farm(open=open_, refused=refused) as farm:
        specs = path_specs(farm, n, True, 0.0)
        for reasons in ("active", "all"):
            config = illiad_config(work / f"gzip-{reasons}.yml", chunk(specs, PATHS_PER_SITE), timeout=2.0,
                                   concurrency=args.parallel, exporter_extra=f"failure_reasons: {reasons}")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            with exporter_process(illiad_argv(config, port, event_loop="asyncio"), port, work / "gzip.log") as proc:
                plain, _ = _raw_get(f"{base}/metrics", "identity")  # also the warm-up
                cpu = {}
                for coding in ("identity", "gzip"):
                    before = cpu_seconds(proc.pid)
                    for _ in range(3):
                        body, used = _raw_get(f"{base}/metrics", coding)
                    cpu[coding] = (cpu_seconds(proc.pid) - before) / 3
                    assert used == ("gzip" if coding == "gzip" else ""), used
                _, hwm = memory_mb(proc.pid)
            rows.append([n, reasons, f"{len(plain) / 1e6:.1f}", f"{len(body) / 1e6:.2f}", f"{cpu['identity']:.2f}",
                         f"{cpu['gzip']:.2f}", f"{hwm:.1f}"])
            if reasons == "active":
                for level in (1, 3, 6, 9):
                    started = time.process_time()
                    packer = zlib.compressobj(level, zlib.DEFLATED, 31)
                    size = sum(len(packer.compress(plain[i:i + 300_000])) for i in range(0, len(plain), 300_000))
                    size += len(packer.flush())
                    spent = time.process_time() - started
                    levels.append([level, f"{spent * 1000:.0f}", f"{size / 1e6:.3f}", f"{len(plain) / size:.1f}",
                                   "<- the exporter's" if level == GZIP_LEVEL else ""])
    return [
        f"(e) Compression and series: one /metrics scrape of {n} paths (70% open, 30% refused)",
        table(["N", "failure_reasons", "text MB", "gzip MB", "CPU s/scrape identity", "CPU s/scrape gzip",
               "peak RSS MiB"], rows),
        "",
        "    zlib levels on that exposition (failure_reasons: active), compressed here in 300 kB chunks as the "
        "exporter sends it",
        table(["level", "CPU ms", "gzip MB", "ratio", ""], levels),
    ]


# -- the goals -----------------------------------------------------------------------------------


def goals(rows: list[Row], latency: dict[str, float] | None) -> list[str]:
    """Each goal against the figures of this run: met or the distance left."""
    def find(n: int, exporter: str, mode: str) -> Row | None:
        return next((r for r in rows if r.n == n and r.exporter == exporter and r.mode == mode), None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines: list[list[str]] = []
    exporters = sorted({r.exporter for r in rows if r.exporter != "blackbox"})
    for exporter in exporters:
        workers = "workers" in exporter
        for n, limit in ((10_000, 1.0), (30_000, 3.0)) + (((100_000, 8.0),) if workers else ()):
            row = find(n, exporter, "/metrics")
            if row is not None:
                lines.append([f"{exporter}: {n} paths, /metrics wall <= {limit:g} s", f"{row.wall:.2f} s",
                              verdict(row.wall <= limit)])
        small = find(1000, exporter, "/metrics")
        for n, limit in ((30_000, 1.15),) + (((100_000, 1.2),) if workers else ()):
            big = find(n, exporter, "/metrics")
            if small is not None and big is not None and small.cpu_per_1000 > 0:
                growth = big.cpu_per_1000 / small.cpu_per_1000
                lines.append([f"{exporter}: CPU per probe at {n} <= {limit}x that at 1000", f"{growth:.2f}x",
                              verdict(growth <= limit)])
        alone = exporter.split(",")[0] + ")" if workers else exporter  # the same loop in one process
        for n, limit in ((10_000, 120.0), (30_000, 250.0)):
            row = find(n, exporter, "/metrics")
            if row is not None and not workers:
                lines.append([f"{exporter}: peak RSS, {n}-path scrape <= {limit:.0f} MiB", f"{row.hwm:.0f} MiB",
                              verdict(row.hwm <= limit)])
            one = find(n, alone, "/metrics")
            if row is not None and workers and one is not None and one.pss_peak > 0:  # several processes
                ratio = row.pss_peak / one.pss_peak
                lines.append([f"{exporter}: peak PSS, {n}-path scrape <= 1.3x one process's",
                              f"{row.pss_peak:.0f} MiB, {ratio:.2f}x", verdict(ratio <= 1.3)])
        row = find(100_000, exporter, "/metrics")
        if row is not None and workers:
            lines.append([f"{exporter}: peak PSS, 100000-path scrape <= 600 MiB", f"{row.pss_peak:.0f} MiB",
                          verdict(row.pss_peak <= 600)])
        for row in rows:
            one = find(row.n, alone, row.mode)
            if workers and row.exporter == exporter and row.mode in (SITES, PACED) and one is not None \
                    and one.cpu_per_1000 > 0:
                ratio = row.cpu_per_1000 / one.cpu_per_1000
                if row.mode == PACED:  # as a consortium's Prometheus scrapes its sites: the goal
                    lines.append([f"{exporter}: {row.n} paths {PACED}, CPU per probe <= one process's "
                                  f"(+{PACED_NOISE:.0%}: one process against itself)", f"{ratio:.2f}x",
                                  verdict(ratio <= 1 + PACED_NOISE)])
                else:  # saturated: the workers' share buys throughput
                    lines.append([f"{exporter}: {row.n} paths {SITES} saturated, CPU per probe and wall "
                                  "against one process", f"{ratio:.2f}x, wall {row.wall / one.wall:.2f}x", "(figures)"])
            bb = find(row.n, "blackbox", "/probe?target=")
            if row.exporter == exporter and row.mode != PACED and bb is not None and bb.cpu_per_1000 > 0:
                ratio = row.cpu_per_1000 / bb.cpu_per_1000
                lines.append([f"{exporter}: {row.n} paths {row.mode}, CPU per probe <= 0.35x blackbox",
                              f"{ratio:.2f}x", verdict(ratio <= 0.35)])
    if latency:
        for key, what in (("idle", "idle"), ("loaded", "during a 10000-path scrape"),
                          ("loaded, 2 workers", "during a 10000-path scrape, 2 workers")):
            if key in latency:
                lines.append([f"connect latency within 1 ms of the injected delay, {what}",
                              f"{latency[key]:+.2f} ms", verdict(abs(latency[key]) <= 1.0)])
    return ["Goals against this run's figures", table(["goal", "measured", ""], lines)]


# -- output ---------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line.rstrip() for line in text)


def machine_line() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; "
            f"Python {sys.version.split()[0]}; uvloop {'installed' if uvloop_available() else 'not installed'}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark illiad-port-exporter against the blackbox exporter.")
    parser.add_argument("--quick", action="store_true", help="20 paths, no namespaces: a smoke run in seconds")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="path counts for (a) and (b) (default 1000,10000,30000,100000)")
    parser.add_argument("--parallel", type=int, default=256,
                        help="probes in flight (the exporter's max_concurrency, default 256)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="this exporter's --probe-workers counts to measure in (a) (default 1,N with N the CPUs; "
                             "quick: 1,2)")
    parser.add_argument("--requests-in-flight", type=int, default=32,
                        help="requests in flight for /probe (blackbox, /probe?site=), on kept-alive connections "
                             "(default 32)")
    parser.add_argument("--site-rate", type=float, default=400.0,
                        help="requests a second of the paced /probe?site= rows (default 400: 4,000 probes a "
                             "second, about half of one core for one process; 10,000 sites scraped every 25 s)")
    parser.add_argument("--rounds", type=int, default=0, help="measured rounds per case (default: by N)")
    parser.add_argument("--blackbox-max", type=int, default=30_000,
                        help="the largest N the blackbox exporter is driven at in (a) (one request per path: "
                             "100,000 take minutes a round; default 30000)")
    parser.add_argument("--mixed", action="store_true",
                        help="70%% open, 25%% refused, --silent-share silent targets instead of all answering")
    parser.add_argument("--timeout", type=float, default=0.5, help="probe timeout, what silent targets cost (s)")
    parser.add_argument("--silent-share", type=float, default=0.05)
    parser.add_argument("--slow-after", type=float, default=None, help="T of part (b) (default 1s, quick 0.3s)")
    parser.add_argument("--memory-paths", type=int, default=None, help="paths of part (d) (default 10000)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay of the wire in (c)")
    parser.add_argument("--samples", type=int, default=15, help="scrapes per figure in (c)")
    parser.add_argument("--load-paths", type=int, default=None,
                        help="paths of the scrape (c) measures latency during (default 10000; quick 200)")
    parser.add_argument("--compression-paths", type=int, default=None, help="paths of part (e) (default 10000)")
    parser.add_argument("--config-sites", type=int, default=None,
                        help="sites of 10 paths in the config part (f) loads (default 10000; quick 300)")
    parser.add_argument("--parts", default="abcdef", help="which parts to run (default abcdef; --quick: abdef)")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [20] if args.quick else [1000, 10_000, 30_000, 100_000]
    if args.workers is None:
        args.workers = [1, 2] if args.quick else [1, max(2, os.cpu_count() or 2)]
    if args.slow_after is None:
        args.slow_after = 0.3 if args.quick else 1.0
    if args.memory_paths is None:
        args.memory_paths = 200 if args.quick else 10_000
    if args.load_paths is None:
        args.load_paths = 200 if args.quick else 10_000
    if args.compression_paths is None:
        args.compression_paths = 200 if args.quick else 10_000
    if args.config_sites is None:
        args.config_sites = 300 if args.quick else 10_000
    if args.quick and args.parts == "abcdef":
        args.parts = "abdef"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from .config_load import config_load  # it uses this module's helpers

    args = parse_args(argv)
    limit = raise_open_file_limit()
    needed = min(max(args.sizes), TARGETS_PER_FARM) + 1000  # a farm process: one listener per open target
    if limit < needed:
        print(f"the open-file limit is {limit}; a target farm needs about {needed} (ulimit -n)", file=sys.stderr)
        return 1
    binary = blackbox_binary()
    print(f"illiad-port-exporter benchmarks; {machine_line()}")
    print(f"command: python -m bench.run {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    with tempfile.TemporaryDirectory(prefix="illiad-bench-") as tmp:
        work = Path(tmp)
        found: dict[str, object] = {}

        def run_throughput() -> list[str]:
            lines, found["rows"] = throughput(work, args, binary)
            return lines

        def run_latency() -> list[str]:
            lines, found["latency"] = latency_accuracy(work, args, binary)
            return lines

        parts = {"a": run_throughput, "b": lambda: scrape_floor(work, args),
                 "c": run_latency, "d": lambda: idle_memory(work, args),
                 "e": lambda: compression(work, args), "f": lambda: config_load(work, args.config_sites)}
        for name in "abcdef":
            if name in args.parts:
                print()
                print("\n".join(parts[name]()), flush=True)
        if "rows" in found:
            print()
            print("\n".join(goals(found["rows"], found.get("latency"))))  # type: ignore[arg-type]
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
