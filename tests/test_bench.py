"""The benchmark script runs and prints its tables (figures are measured there, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .peers import need_binary, need_root

ROOT = Path(__file__).resolve().parent.parent  # bench.run runs as a module from here
NUMBER = r"\d+\.\d+"


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_quick_bench_prints_figures_for_both_exporters() -> None:
    """--quick --mixed: 20 paths (14 open, 5 refused, 1 silent) through /metrics, /probe?site=
    (as fast as it goes and paced, in one process and with 2 probe workers) and the blackbox
    exporter; every row has a wall time, CPU per 1,000 probes, cores, peak RSS and PSS, and both
    exporters found the same 14 paths up; the compression part and the goals table follow."""
    need_binary("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    out = _run("--quick", "--mixed")
    rows = {
        (m.group("exporter"), m.group("endpoint")): m
        for m in re.finditer(
            rf"^\s+20\s+(?P<exporter>illiad \([\w, ]+\)|blackbox)\s+(?P<endpoint>\S+(?: paced)?)\s+\d+\s+(?P<wall>{NUMBER})\s+"
            rf"(?P<cpu>{NUMBER})\s+(?P<cores>{NUMBER})\s+(?P<idle>{NUMBER})\s+(?P<peak>{NUMBER})\s+"
            rf"(?P<pss_idle>{NUMBER})\s+(?P<pss_peak>{NUMBER})\s+(?P<up>\d+)/20$",
            out, re.M,
        )
    }
    assert ("illiad (asyncio)", "/metrics") in rows, out
    assert ("illiad (asyncio)", "/probe?site=") in rows, out
    assert ("illiad (asyncio, 2 workers)", "/metrics") in rows, out
    assert ("illiad (asyncio, 2 workers)", "/probe?site=") in rows, out
    assert ("illiad (asyncio)", "/probe?site= paced") in rows, out
    assert ("illiad (asyncio, 2 workers)", "/probe?site= paced") in rows, out
    assert ("blackbox", "/probe?target=") in rows, out
    for row in rows.values():
        assert row.group("up") == "14", out
        assert float(row.group("wall")) > 0 and float(row.group("peak")) > 0 and float(row.group("pss_peak")) > 0
    assert re.search(rf"^\s+20\s+illiad \(asyncio\) /metrics\s+{NUMBER}\s+{NUMBER}$", out, re.M), out  # ratios
    # (b) the floor: all 20 up, the slow one included; (d) memory per path and per site
    assert re.search(rf"^\s+20\s+0\.300\s+{NUMBER}\s+-?\d+\s+20/20$", out, re.M), out
    assert re.search(rf"per configured path: -?{NUMBER} KiB; per site \(beyond its paths\): -?{NUMBER} KiB", out), out
    # (e) both failure_reasons settings, gzip smaller than the text; zlib levels
    for reasons in ("active", "all"):
        found = re.search(rf"^\s+200\s+{reasons}\s+(?P<text>{NUMBER})\s+(?P<gzip>{NUMBER})\s+", out, re.M)
        assert found and float(found.group("gzip")) < float(found.group("text")), out
    assert re.search(r"^\s+[1-9]\s+\d+\s+\d+\.\d+\s+\d+\.\d+\s+<- the exporter's$", out, re.M), out
    assert re.search(r"illiad \(asyncio\): 20 paths /metrics, CPU per probe <= 0\.35x blackbox\s+\d\.\d\dx\s+(NOT )?met",
                     out), out


@pytest.mark.slow
@pytest.mark.netns
def test_latency_part_measures_both_exporters_across_the_delay_wire() -> None:
    """Part (c) builds two namespaces and a 5 ms wire, and reports each exporter's figure, this
    exporter's also while it scrapes 300 other paths."""
    need_root("network namespaces")
    need_binary("ip", "iproute2")
    need_binary("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    out = _run("--parts", "c", "--sizes", "20", "--samples", "3", "--delay-ms", "5", "--load-paths", "300")
    for name in ("plain connect (Python socket)", "illiad illiad_port_latency_seconds",
                 "illiad illiad_port_latency_seconds, during a scrape", "blackbox probe_duration_seconds"):
        line = next((l for l in out.splitlines() if l.strip().startswith("10 ") and name in l), None)
        assert line is not None, out
        median = float(line.split(name)[1].split()[0])
        assert median >= 10.0, line  # a connect cannot beat the wire's round trip
    assert "skipped" not in out


@pytest.mark.slow
def test_config_load_part_loads_the_consortium_alone_and_in_serve() -> None:
    """Part (f) with 30 sites: the load alone, and serve with 1 and 2 probe workers until
    ready and then reloaded, each with its wall time, CPU and memory."""
    out = _run("--parts", "f", "--config-sites", "30")
    assert re.search(r"^\(f\) Config load: 30 sites of 10 paths \(300 paths\) .* plan from staff_client: 210 targets$",
                     out, re.M), out
    assert re.search(rf"^\s+load \+ plan, one process\s+{NUMBER}\s+{NUMBER}\s+\+\d+ \(kept \+-?\d+\)$", out, re.M), out
    for workers in (1, 2):
        assert re.search(rf"^\s+serve --probe-workers {workers}, start to ready\s+{NUMBER}\s+{NUMBER}\s+\d+\s+\d+\s+"
                         rf"{NUMBER} \(VmHWM \d+\)$", out, re.M), out
