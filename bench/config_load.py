"""(f) Loading a consortium's config: 10,000 sites of 10 paths (100,000 paths) written as the
README shows (bench/consortium.py), under the default load bounds.

    .venv/bin/python -m bench.config_load              # 10,000 sites
    .venv/bin/python -m bench.config_load --sites 300  # a smoke run

Rows:
  - the load alone, in a fresh process: load_config and the plan from one vantage; wall and
    CPU seconds, and how much the load raised the process's peak RSS (VmHWM after less VmRSS
    before): what a load costs on top of an exporter that already runs.
  - ``serve`` with 1 and 2 probe workers, from the start of the process until /-/ready
    answers 200 (the config loaded and planned, the workers started and given their sites);
    CPU of the whole process tree; the serving process's VmHWM and the tree's PSS then.
  - a reload (POST /-/reload) of the same file in that serving process, and its VmHWM after.

The file is only loaded: no target is probed (its addresses are loopback or 198.18.0.0/15).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.peers import free_port

from .consortium import PATHS_PER_SITE, write_consortium
from .run import cpu_seconds, http_get, machine_line, pss_mb, stop_process, table

VANTAGE = "staff_client"  # the vantage with the most of a consortium site's paths (7 of 10)


def _status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _load_alone(config: str) -> dict[str, float]:
    """In the child process: load and plan once, and what it cost."""
    from illiad_exporter.catalog import Role
    from illiad_exporter.config import load_config
    from illiad_exporter.plan import build_plan

    rss_before = _status_kib("self", "VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    loaded = load_config(config)
    load_wall, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
    plan = build_plan(loaded, Role(VANTAGE))
    return {"load_wall": load_wall, "load_cpu": load_cpu, "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu, "targets": len(plan.targets),
            "peak_growth_mib": (_status_kib("self", "VmHWM") - rss_before) / 1024,
            "kept_mib": (_status_kib("self", "VmRSS") - rss_before) / 1024}


def load_alone(config: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.config_load", "--child", str(config)],
                          capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def serve_until_ready(config: Path, workers: int, log: Path) -> tuple[dict[str, float], float]:
    """Start serve, time it until /-/ready answers 200; then a reload. (figures, reload seconds)"""
    port = free_port()
    argv = [sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(config), "--vantage", VANTAGE,
            "--web.listen-address", f"127.0.0.1:{port}", "--probe-workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"bench: serve exited {process.returncode}; see {log}")
            try:
                if http_get(url + "/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise SystemExit(f"bench: serve not ready after 300 s; see {log}")
            time.sleep(0.05)
        figures = {"wall": time.perf_counter() - started, "cpu": cpu_seconds(process.pid),
                   "hwm_mib": _status_kib(process.pid, "VmHWM") / 1024, "pss_mib": pss_mb(process.pid)}
        request = urllib.request.Request(url + "/-/reload", method="POST")
        reload_started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310 (loopback)
            assert answer.status == 200, answer.status
        reload_seconds = time.perf_counter() - reload_started
        figures["hwm_after_reload_mib"] = _status_kib(process.pid, "VmHWM") / 1024
        return figures, reload_seconds
    finally:
        stop_process(process)


def config_load(work: Path, sites: int) -> list[str]:
    config = write_consortium(work / f"consortium-{sites}.yml", sites)
    size_mb = config.stat().st_size / 1e6
    alone = load_alone(config)
    rows = [["load + plan, one process", f"{alone['wall']:.1f}", f"{alone['cpu']:.1f}",
             f"+{alone['peak_growth_mib']:.0f} (kept +{alone['kept_mib']:.0f})", "", ""]]
    reloads = []
    for workers in (1, 2):
        served, reload_seconds = serve_until_ready(config, workers, work / f"serve-{workers}.log")
        rows.append([f"serve --probe-workers {workers}, start to ready", f"{served['wall']:.1f}",
                     f"{served['cpu']:.1f}", f"{served['hwm_mib']:.0f}", f"{served['pss_mib']:.0f}",
                     f"{reload_seconds:.1f} (VmHWM {served['hwm_after_reload_mib']:.0f})"])
        reloads.append(reload_seconds)
    return [
        f"(f) Config load: {sites} sites of {PATHS_PER_SITE} paths ({sites * PATHS_PER_SITE} paths) as the README "
        f"writes them (bench/consortium.py), {size_mb:.1f} MB, default bounds; plan from {VANTAGE}: "
        f"{int(alone['targets'])} targets",
        table(["what", "wall s", "CPU s", "peak RSS MiB", "PSS MiB", "reload s"], rows),
        f"    of the one-process row, load_config alone: {alone['load_wall']:.1f} s wall, "
        f"{alone['load_cpu']:.1f} s CPU; CPU s is the whole process tree's (workers and fork server too)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load a consortium's config and measure it.")
    parser.add_argument("--sites", type=int, default=10_000, help="sites of 10 paths (default 10,000)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the fresh process of the load-alone row
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_load_alone(args.child)))
        return 0
    print(f"illiad-port-exporter config load; {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="illiad-bench-") as tmp:
        print("\n".join(config_load(Path(tmp), args.sites)))
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
