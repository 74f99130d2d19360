"""bench/soak.py keeps working: tiny runs print its figures (the real soak is run by hand)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .peers import need_binary

pytestmark = pytest.mark.process  # bench.soak, and the exporters it soaks, as processes

ROOT = Path(__file__).resolve().parent.parent  # bench.soak runs as a module from here
SOAK = [sys.executable, "-m", "bench.soak"]


def test_soak_script_runs_the_cases_and_prints_its_figures():
    result = subprocess.run([*SOAK, "--probes", "60", "--warmup", "20", "--concurrency", "10",
                             "--timeout", "0.2", "--prober", "tcp", "--prober", "http",
                             "--case", "garbage", "--case", "reset", "--case", "silent"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    probes = re.search(r"^probes: +(\d+) \(2 probers \+ 1 starting with TLS x 3 hostile cases\)", out, re.M)
    assert probes is not None, out
    ran = int(probes.group(1))
    assert ran >= 60, "the soak stops at a scrape's end, never short of the probes asked for"
    outcomes = re.search(r"^outcomes: +(\{.*\})$", out, re.M)
    assert outcomes is not None and sum(int(n) for n in re.findall(r": (\d+)", outcomes.group(1))) == ran
    # a checkpoint before the soak and after each tenth of it, then one after a collection
    rows = re.findall(r"^ +(\d+) +([\d.]+) +(\d+) +(\d+)$", out, re.M)
    counts = [int(row[0]) for row in rows]
    assert len(rows) == 11 and counts[0] == 0 and counts[-1] == ran and counts == sorted(counts), out
    assert re.search(r"^  after gc.collect +%d +[\d.]+ +\d+ +\d+$" % ran, out, re.M), out
    assert re.search(r"^rss before/after: [\d.]+ MiB / [\d.]+ MiB \(drift [+-][\d.]+ MiB\)$", out, re.M), out
    fds = re.search(r"^fds before/after: (\d+) / (\d+) \(drift ([+-]\d+)\)$", out, re.M)
    assert fds is not None, out
    assert int(fds.group(3)) == int(fds.group(2)) - int(fds.group(1))


def test_soak_script_soaks_itself_and_the_blackbox_exporter_side_by_side():
    need_binary("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    result = subprocess.run([*SOAK, "--probes", "40", "--warmup", "10", "--concurrency", "15",
                             "--timeout", "0.2", "--prober", "tcp", "--case", "reset", "--peer"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^side by side: 40 probes each \(tcp, tls, http x 5 hostile cases\), 15 requests in flight",
                     out, re.M), out
    table = out[out.index("side by side:"):]
    rows = re.findall(r"^ +(\d+) +([\d.]+) +(\d+) +([\d.]+) +(\d+)$", table, re.M)
    assert [int(row[0]) for row in rows] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40], table
    assert all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows), "an exporter's RSS was not read"
    for name in ("illiad-port-exporter", "blackbox exporter"):
        assert re.search(rf"^  {name}: +rss drift [+-][\d.]+ MiB, fds drift [+-]\d+$", table, re.M), table


def test_soak_script_soaks_the_front_door_and_reloads_of_the_exporter_process():
    result = subprocess.run([*SOAK, "--front-door", "--cycles", "3", "--paths", "20"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^front door and reloads: 3 cycles of 150 idle clients, 10 malformed requests, a reload of "
                     r"20 newly named paths and a scrape \(slowest scrape [\d.]+s; log 0 bytes\)$", out, re.M), out
    rows = re.findall(r"^ +(\d+) +([\d.]+) +(\d+)$", out, re.M)
    assert [int(row[0]) for row in rows] == [0, 1, 2, 3], out
    assert re.search(r"^  rss drift [+-][\d.]+ MiB after the first checkpoint, fds drift \+0$", out, re.M), out
