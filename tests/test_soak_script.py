"""bench/soak.py keeps working: a tiny run prints its figures (the real soak is run by hand)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).parent.parent / "bench" / "soak.py"


def test_soak_script_runs_every_case_and_prints_its_figures():
    result = subprocess.run([sys.executable, str(SOAK), "--probes", "80", "--concurrency", "20", "--timeout", "0.2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^probes: +80 \(\d+ probers x 6 hostile cases\)", out, re.M), out
    assert re.search(r"^rss before/after: [\d.]+ MiB / [\d.]+ MiB \(drift [+-][\d.]+ MiB\)$", out, re.M), out
    fds = re.search(r"^fds before/after: (\d+) / (\d+) \(drift ([+-]\d+)\)$", out, re.M)
    assert fds is not None, out
    assert int(fds.group(3)) == int(fds.group(2)) - int(fds.group(1))
    outcomes = re.search(r"^outcomes: +(\{.*\})$", out, re.M)
    assert outcomes is not None and sum(int(n) for n in re.findall(r": (\d+)", outcomes.group(1))) == 80
