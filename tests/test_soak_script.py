"""bench/soak.py keeps working: a tiny run prints its figures (the real soak is run by hand)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parent.parent / "bench" / "soak.py"


def test_soak_script_runs_the_cases_and_prints_its_figures():
    result = subprocess.run([sys.executable, str(SOAK), "--probes", "60", "--warmup", "20", "--concurrency", "10",
                             "--timeout", "0.2", "--prober", "tcp", "--prober", "http",
                             "--case", "garbage", "--case", "reset", "--case", "silent"],
                            capture_output=True, text=True, timeout=120)
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
