"""The README stays true: every block that shows a command's output is that command's output
now, every install block installs, every Prometheus scrape config is one promtool accepts and
one a real Prometheus scrapes the exporter with. Blocks are found by their markers
(tests/readme_blocks.py), so sections can be added around them freely."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from .exporter_process import exporter
from .peers import need_binary, offline_pip, prometheus_peer, prometheus_query
from .readme_blocks import README, REPO, lab_blocks, output_blocks, outputs_now

TEXT = README.read_text()
FENCED = re.compile(r"^```[a-z]*\n(.*?)^```\n", re.S | re.M)


@pytest.mark.process
def test_every_output_block_is_what_its_command_prints_now() -> None:
    """(After a change that alters an output, `python -m tests.readme_blocks` rewrites them.)"""
    checked = outputs_now(TEXT)
    assert {block.command.split()[1] for block, _ in checked} >= {"assets", "validate", "catalog"}
    for block, printed in checked:
        assert block.shown == printed, f"README block of `{block.command}` differs from what it prints"


def test_every_block_showing_a_command_run_is_a_checked_output_block() -> None:
    """A fenced block that starts with `$ command` shows output: it must be one of the checked
    ones, run here or (a lab output block) by the test it names, which compares it."""
    checked = {block.span[0] for block in output_blocks(TEXT)}
    for test_file, command, _, (start, _) in lab_blocks(TEXT):
        checked.add(TEXT.index("```", start))
        source = (REPO / test_file).read_text()
        assert "lab_block(" in source and f'"{command}"' in source, (test_file, command)
    unchecked = [m.group(1).splitlines()[0] for m in FENCED.finditer(TEXT)
                 if m.group(1).startswith("$ ") and m.start() not in checked]
    assert unchecked == []


# -- install blocks ---------------------------------------------------------------------------


def install_blocks() -> dict[str, list[str]]:
    found = re.findall(r"<!-- install-test: (\w+) -->\n```sh\n(.*?)```\n", TEXT, re.S)
    return {name: [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]
            for name, body in found}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["posix", "wheel"])
def test_install_block_installs_a_working_exporter_on_a_fresh_venv(tmp_path: Path, name: str) -> None:
    """The block's commands, as written, in a copy of the checkout with a fresh HOME: the venv
    they make answers --version and writes its assets."""
    commands = install_blocks()[name]
    assert commands[-1] == "~/illiad-exporter/bin/illiad-exporter --version"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for item in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / item, checkout / item)
    for item in ("exporter", "alerts", "grafana", "examples"):
        shutil.copytree(REPO / item, checkout / item, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    python_dir = str(Path(sys.executable).resolve().parent)  # a python3 of 3.11+ first on PATH
    env = {"HOME": str(home), "PATH": f"{python_dir}:/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           **offline_pip()}
    outputs = []
    for command in commands:
        proc = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        outputs.append(proc.stdout)
    from illiad_exporter import __version__

    assert outputs[-1] == f"illiad-exporter {__version__}\n"
    installed = home / "illiad-exporter" / "bin" / "illiad-exporter"
    written = subprocess.run([str(installed), "assets", str(tmp_path / "assets")], capture_output=True, text=True,
                             timeout=60)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "assets" / "alerts" / "illiad-alerts.rules.yml").read_bytes() == (
        REPO / "alerts" / "illiad-alerts.rules.yml").read_bytes()


# -- Prometheus scrape configs --------------------------------------------------------------


def scrape_config_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(m.group(1)) for m in FENCED.finditer(TEXT) if "scrape_configs:" in m.group(1)]


@pytest.mark.peer("prometheus")
def test_every_scrape_config_passes_promtool_and_scrapes_a_real_exporter(tmp_path: Path) -> None:
    """promtool accepts each README scrape config as it stands; then all of them, with every
    exporter address pointed at one exporter on loopback (the README's site names in its
    config, probe_on_metrics off as the README says) and 1s intervals, run in one real
    Prometheus: every target is up and each site of the multi-target job is its own target."""
    promtool = need_binary("promtool", "prometheus")
    prometheus = need_binary("prometheus", "prometheus")
    blocks = scrape_config_blocks()
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        path = tmp_path / f"readme-{index}.yml"
        path.write_text(yaml.safe_dump(block))
        checked = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0, (block, checked.stdout + checked.stderr)

    jobs = [job for block in blocks for job in block["scrape_configs"]]
    sites = sorted({target for job in jobs if job.get("metrics_path") == "/probe"
                    for group in job["static_configs"] for target in group["targets"]})
    assert sites == ["law-library", "main-library", "medical-library"]
    config = tmp_path / "illiad.yml"
    config.write_text(yaml.safe_dump({
        "exporter": {"probe_on_metrics": False},
        "defaults": {"timeout": "1s", "system_resolver": False},
        "sites": [{"name": site, "hosts": {"web_server": "127.0.0.1"},
                   "paths": {path: {"enabled": False} for path in ("oclc_webservices", "atlas_update",
                                                                    "article_exchange", "sql")}}
                  for site in sites],
    }))
    peer, _ = exporter(config, tmp_path)
    address = f"127.0.0.1:{peer.port}"
    rewritten = re.sub(r"[\w.-]+:9968", address, yaml.safe_dump({"scrape_configs": jobs}))
    merged = yaml.safe_load(rewritten)
    seen: dict[str, int] = {}
    for job in merged["scrape_configs"]:
        seen[job["job_name"]] = seen.get(job["job_name"], 0) + 1
        if seen[job["job_name"]] > 1:
            job["job_name"] += f"-{seen[job['job_name']]}"
        job["scrape_interval"] = job["scrape_timeout"] = "1s"
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(merged))
    prom = prometheus_peer(prometheus, prom_dir / "prometheus.yml")
    base = f"http://127.0.0.1:{prom.port}"
    with peer, prom:
        names = {job["job_name"] for job in merged["scrape_configs"]}
        deadline = time.monotonic() + 60
        up: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                up = prometheus_query(base, "up")
            except urllib.error.HTTPError:  # 503 while its storage starts
                time.sleep(0.5)
                continue
            every_site = sorted(r["metric"]["instance"] for r in up if r["metric"]["job"] == "illiad-sites")
            # wait for each site's own target too: the job shows up with its first instance
            if {r["metric"]["job"] for r in up} == names and every_site == sites and all(
                    r["value"][1] == "1" for r in up):
                break
            time.sleep(1)
        assert {r["metric"]["job"] for r in up} == names, up
        assert [r["metric"] for r in up if r["value"][1] != "1"] == []
        per_site = {r["metric"]["instance"] for r in up if r["metric"]["job"] == "illiad-sites"}
        assert sorted(per_site) == sites
        assert prometheus_query(base, 'count(illiad_exporter_build_info{job="illiad-sites"})') == []  # /probe: no self-metrics
