"""Profile the exporter under a /metrics scrape of N loopback paths with py-spy.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile --paths 10000 [--event-loop asyncio] [--rounds 3]

Samples the exporter process (not this one) while it serves ``--rounds`` scrapes, then prints
the functions with the most samples, by own time and including callees. ``--out FILE``
keeps py-spy's collapsed stacks (flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import run as bench
from tests.peers import free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--event-loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--silent-share", type=float, default=0.0)
    parser.add_argument("--probe-workers", type=int, default=1,
                        help="the exporter's --probe-workers; with more than 1, --worker picks the process sampled")
    parser.add_argument("--worker", type=int, default=None,
                        help="sample probe worker I (0-based, in start order) instead of the serving process")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    bench.raise_open_file_limit()
    n = args.paths
    with tempfile.TemporaryDirectory(prefix="illiad-profile-") as tmp:
        work = Path(tmp)
        raw = args.out or work / "stacks.txt"
        mixed = args.silent_share > 0
        open_, refused, silent = bench.mix(n, mixed, args.silent_share)
        with bench.Farm(open=open_, refused=refused, silent=silent) as farm:
            specs = bench.path_specs(farm, n, mixed, args.silent_share)
            config = bench.illiad_config(work / "c.yml", bench.chunk(specs, bench.PATHS_PER_SITE), timeout=0.5,
                                         concurrency=256)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = bench.illiad_argv(config, port, event_loop=args.event_loop) + [
                "--probe-workers", str(args.probe_workers)]
            with bench.exporter_process(argv, port, work / "exporter.log") as proc:
                if args.probe_workers > 1:
                    bench.wait_for_workers(proc.pid, args.probe_workers)
                bench.timed_fetch([f"{base}/metrics"], 1)  # warm-up
                sampled = proc.pid
                if args.worker is not None:  # the workers: the fork server's children, in start order
                    workers = sorted(p for p in bench.process_tree(proc.pid) if _is_worker(p))
                    sampled = workers[args.worker]
                spy = subprocess.Popen([py_spy, "record", "--pid", str(sampled), "--rate", "250", "--format", "raw",
                                        "--output", str(raw), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                for _ in range(args.rounds):
                    wall, _ = bench.timed_fetch([f"{base}/metrics"], 1)
                    print(f"scrape of {n} paths: {wall:.3f} s", file=sys.stderr)
                spy.send_signal(2)
                spy.wait(30)
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if f]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        print(f"{total} samples")
        for title, counter in (("own time", own), ("including callees", inclusive)):
            print(f"\ntop {args.top} by {title}:")
            for frame, count in counter.most_common(args.top):
                print(f"  {100 * count / max(total, 1):5.1f}%  {frame[:150]}")
    return 0


def _is_worker(pid: int) -> bool:
    try:
        parent = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
        return "forkserver" in Path(f"/proc/{parent}/cmdline").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
