"""Part (c) of the benchmarks: connect latency across a delay wire, as each exporter reports it.

Two namespaces joined by the delay wire of the namespace tests (tests/netns/delay_wire.py,
a standalone program: TUN devices in both namespaces, packets held for a fixed time); the
target listens in B, both exporters run in A and
are scraped from inside A. The injected delay of a TCP connect is the wire's round trip
(SYN across, SYN-ACK back): twice the one-way delay. A plain ``socket.connect`` timed in the
same namespace shows what the wire itself adds; the exporter's figure less that one is the
measurement's own overhead.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.netns.lab import NetnsPeer

HERE = Path(__file__).resolve().parent
DELAY_WIRE = HERE.parent / "tests" / "netns" / "delay_wire.py"

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(512); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

PLAIN_CONNECT = """
import json, socket, sys, time
out = []
for _ in range(int(sys.argv[3])):
    s = socket.socket(); t = time.perf_counter(); s.connect((sys.argv[1], int(sys.argv[2])))
    out.append(time.perf_counter() - t); s.close(); time.sleep(0.02)
print(json.dumps(out))
"""


def _ns(*argv: str, ns: str, timeout: float = 30) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} in {ns} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def _metric(body: str, name: str) -> float | None:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
    return float(match.group(1)) if match else None


def _scrape(url: str, ns: str, timeout: float = 30) -> str:
    return _ns("curl", "-sf", "-H", f"X-Prometheus-Scrape-Timeout-Seconds: {min(timeout, 60)}", url, ns=ns,
               timeout=timeout + 10)


def measure_latency(work: Path, args: Any, binary: str | None, **helpers: Any) -> tuple[list[str], dict[str, float]]:
    """The table's lines, and for the goals: the exporter's median less the injected round
    trip, idle ("idle") and during a big scrape ("loaded"), in ms, at the non-zero delay."""
    title = "(c) Latency accuracy: TCP connect across a userspace delay wire between two network namespaces"
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("curl"):
        return [title, "    skipped: needs Linux, root, ip (iproute2) and curl"], {}
    if not Path("/dev/net/tun").exists() or not DELAY_WIRE.exists():
        return [title, f"    skipped: needs /dev/net/tun and {DELAY_WIRE}"], {}
    table = helpers["table"]
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    ns_a, ns_b = f"ipebench{tag}a", f"ipebench{tag}b"
    subnet = random.randrange(0, 250)
    addr_a, addr_b = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    target_port = 7968
    rows = []
    errors: dict[str, float] = {}
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
            made.append(ns)
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        for delay_ms in (0.0, args.delay_ms):
            wire = subprocess.Popen(
                [sys.executable, str(DELAY_WIRE), "--end", f"{ns_a}:dly0:{addr_a}:{addr_b}",
                 "--end", f"{ns_b}:dly0:{addr_b}:{addr_a}", "--delay", str(delay_ms / 1000), "--lifetime", "600"],
                stdout=subprocess.PIPE, text=True, start_new_session=True,
            )
            listener = None
            try:
                if wire.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                    raise RuntimeError("the delay wire did not start")
                listener = subprocess.Popen(
                    ["ip", "netns", "exec", ns_b, sys.executable, "-c", LISTENER, addr_b, str(target_port)],
                    stdout=subprocess.PIPE, text=True, start_new_session=True,
                )
                if listener.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                    raise RuntimeError("the target listener did not start")
                rows += _one_delay(work, args, binary, helpers, ns_a, addr_b, target_port, delay_ms,
                                   errors if delay_ms else {})
            finally:
                for process in (listener, wire):
                    if process is not None:
                        process.terminate()
                        process.wait(10)
            time.sleep(0.2)  # the TUN devices go away with the wire
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], timeout=10)
    return [
        title + f" (one-way delay d; a connect is one round trip, 2d); {args.samples} samples each, "
        f"{_loaded_samples(args)} during a scrape",
        table(["2d ms", "measured by", "median ms", "min ms", "max ms", "median - 2d ms", "- plain connect ms"], rows),
        "    'plain connect' is socket.connect timed in a loop in the same namespace: the wire's own share;",
        "    the last column is each exporter's own measurement overhead. 'during a scrape': the path across",
        f"    the wire is the last of a /metrics scrape of {args.load_paths} loopback paths (a target farm in the",
        "    same namespace), on the same exporter.",
    ], errors


def _in_namespace(ns: str, argv: list[str], port: int, log: Path) -> NetnsPeer:
    """An exporter process inside namespace ``ns``: ready once it listens on 127.0.0.1:``port`` there."""
    return NetnsPeer(ns, argv, address="127.0.0.1", port=port, log=log, ready_timeout=120, stop_timeout=10)


def _stats(samples: list[float]) -> tuple[float, float, float]:
    return statistics.median(samples) * 1000, min(samples) * 1000, max(samples) * 1000


def _loaded_samples(args: Any) -> int:
    return max(3, min(args.samples, 8))


def _path_latency(body: str, host: str) -> float:
    match = re.search(rf'^illiad_port_latency_seconds{{[^}}]*host="{re.escape(host)}"[^}}]*}} (\S+)$', body, re.M)
    return float(match.group(1)) if match else float("nan")


def _during_a_scrape(work: Path, args: Any, helpers: dict[str, Any], ns: str, host: str, port: int, *,
                     workers: int = 1) -> list[float]:
    """The wire path's latency as the last path of a /metrics scrape of args.load_paths
    loopback paths, the target farm inside the exporter's namespace (``workers``: the
    exporter's --probe-workers)."""
    Farm = helpers["Farm"]
    samples = []
    with Farm(open=args.load_paths, netns=ns) as farm:
        specs = [{"host": h, "port": p} for h, p in farm.targets["open"][: args.load_paths]]
        sites = [specs[i:i + 10] for i in range(0, len(specs), 10)] + [[{"host": host, "port": port}]]
        config = helpers["illiad_config"](work / "latency-loaded.yml", sites, timeout=2.0, concurrency=256)
        listen = 19969
        argv = helpers["illiad_argv"](config, listen, event_loop="auto") + ["--probe-workers", str(workers)]
        with _in_namespace(ns, argv, listen, work / "latency-loaded.log"):
            _scrape(f"http://127.0.0.1:{listen}/metrics", ns, timeout=120)  # warm-up
            for _ in range(_loaded_samples(args)):
                samples.append(_path_latency(_scrape(f"http://127.0.0.1:{listen}/metrics", ns, timeout=120), host))
    return samples


def _one_delay(work: Path, args: Any, binary: str | None, helpers: dict[str, Any], ns: str, host: str, port: int,
               delay_ms: float, errors: dict[str, float]) -> list[list[str]]:
    injected = 2 * delay_ms
    series: dict[str, list[float]] = {}
    series["plain connect (Python socket)"] = json.loads(
        _ns(sys.executable, "-c", PLAIN_CONNECT, host, str(port), str(args.samples), ns=ns)
    )
    config = helpers["illiad_config"](work / "latency.yml", [[{"host": host, "port": port}]], timeout=2.0,
                                      concurrency=16)
    listen = 19968
    with _in_namespace(ns, helpers["illiad_argv"](config, listen, event_loop="auto"), listen,
                       work / "latency-illiad.log"):
        latency, duration = [], []
        _scrape(f"http://127.0.0.1:{listen}/metrics", ns)  # warm-up
        for _ in range(args.samples):
            body = _scrape(f"http://127.0.0.1:{listen}/metrics", ns)
            latency.append(_metric(body, "illiad_port_latency_seconds") or float("nan"))
            duration.append(_metric(body, "illiad_probe_duration_seconds") or float("nan"))
        series["illiad illiad_port_latency_seconds"] = latency
        series["illiad illiad_probe_duration_seconds"] = duration
    loaded = _during_a_scrape(work, args, helpers, ns, host, port)
    series["illiad illiad_port_latency_seconds, during a scrape"] = loaded
    with_workers = _during_a_scrape(work, args, helpers, ns, host, port, workers=2)
    series["illiad illiad_port_latency_seconds, during a scrape, 2 workers"] = with_workers
    if binary:
        bb_config = helpers["blackbox_config"](work / "latency-blackbox.yml", timeout=2.0)
        bb_listen = 19115
        argv = [binary, f"--config.file={bb_config}", f"--web.listen-address=127.0.0.1:{bb_listen}"]
        with _in_namespace(ns, argv, bb_listen, work / "latency-blackbox.log"):
            url = f"http://127.0.0.1:{bb_listen}/probe?module=tcp_connect&target={host}:{port}"
            total, connect = [], []
            _scrape(url, ns)
            for _ in range(args.samples):
                body = _scrape(url, ns)
                d = _metric(body, "probe_duration_seconds") or float("nan")
                dns = _metric(body, "probe_dns_lookup_time_seconds") or 0.0
                total.append(d)
                connect.append(d - dns)
            series["blackbox probe_duration_seconds"] = total
            series["blackbox probe_duration - probe_dns_lookup_time"] = connect
    plain = statistics.median(series["plain connect (Python socket)"]) * 1000
    errors["idle"] = statistics.median(series["illiad illiad_port_latency_seconds"]) * 1000 - injected
    errors["loaded"] = statistics.median(loaded) * 1000 - injected
    errors["loaded, 2 workers"] = statistics.median(with_workers) * 1000 - injected
    rows = []
    for name, samples in series.items():
        median, low, high = _stats(samples)
        rows.append([f"{injected:g}", name, f"{median:.3f}", f"{low:.3f}", f"{high:.3f}", f"{median - injected:+.3f}",
                     "" if name.startswith("plain") else f"{median - plain:+.3f}"])
    return rows
