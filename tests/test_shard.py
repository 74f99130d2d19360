"""Sharding: replicas split a consortium's sites exactly, and adding one moves few sites."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from illiad_exporter.catalog import Role
from illiad_exporter.config import ConfigError, parse_config
from illiad_exporter.plan import build_plan
from illiad_exporter.shard import Shard, owner, parse_shard, select

SITES = [f"library-{i:04d}.consortium.example" for i in range(1000)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_shards_partition_the_sites_exactly(count: int) -> None:
    """Every site is in exactly one of the n shards, and no shard is starved or swamped."""
    shards = [select(SITES, Shard(i, count)) for i in range(count)]
    assert sorted(site for shard in shards for site in shard) == sorted(SITES)
    assert sum(len(s) for s in shards) == len(SITES)
    fair = len(SITES) / count
    sigma = math.sqrt(len(SITES) * (1 / count) * (1 - 1 / count))
    for shard in shards:
        assert abs(len(shard) - fair) <= 4 * sigma, [len(s) for s in shards]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 10])
def test_adding_a_replica_moves_only_its_share_and_only_to_it(count: int) -> None:
    """Going from n to n+1 replicas moves about 1/(n+1) of the sites, all to the new one."""
    before = {site: owner(site, count) for site in SITES}
    after = {site: owner(site, count + 1) for site in SITES}
    moved = [site for site in SITES if before[site] != after[site]]
    assert all(after[site] == count for site in moved)  # only to the new replica
    p = 1 / (count + 1)
    expected = len(SITES) * p
    sigma = math.sqrt(len(SITES) * p * (1 - p))
    assert len(moved) <= expected + 4 * sigma, (len(moved), expected)
    assert len(moved) >= expected - 4 * sigma, (len(moved), expected)  # the new replica gets its share


def test_the_owner_is_stable_across_processes() -> None:
    """The hash is not Python's randomised hash(): another interpreter computes the same owners."""
    code = (
        "import json, sys; from illiad_exporter.shard import owner; "
        "print(json.dumps([owner(s, 7) for s in json.load(sys.stdin)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(SITES[:200]), capture_output=True,
                          text=True, timeout=60, env={"PYTHONHASHSEED": "12345"}, check=True)
    assert json.loads(done.stdout) == [owner(s, 7) for s in SITES[:200]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "the shard index must be between 0 and 2 (0-based), got 3"),
        ("1/0", "the shard count must be between 1"),
        ("one/3", "expected a shard as INDEX/COUNT counted from 0, such as 0/3, got 'one/3'"),
        ("-1/3", "expected a shard as INDEX/COUNT"),
    ],
)
def test_a_bad_shard_is_refused_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_shard(text)
    assert message in str(caught.value)


def _config(shard: str | None = None) -> str:
    """30 sites with one custom path each, probed from sql_server (a role no default path
    starts at, so nothing but these loopback paths is probed)."""
    head = f"exporter: {{shard: '{shard}'}}\n" if shard else ""
    sites = "".join(
        f"  - name: lib{i}\n    custom: [{{name: door, from: [sql_server], host: 127.0.0.1, port: {1000 + i}}}]\n"
        for i in range(30)
    )
    return head + "defaults: {system_resolver: false}\nsites:\n" + sites


def test_the_plan_probes_only_the_sites_of_its_shard() -> None:
    """Three replicas' plans cover the 30 sites once; the config's shard and --shard agree."""
    config = parse_config(_config())
    plans = [build_plan(config, Role.SQL_SERVER, shard=Shard(i, 3)) for i in range(3)]
    covered = [site for plan in plans for site in plan.by_site]
    assert sorted(covered) == sorted(f"lib{i}" for i in range(30))
    assert all(len(plan) == len(plan.by_site) for plan in plans)  # one probe per site here
    from_config = build_plan(parse_config(_config("1/3")), Role.SQL_SERVER)
    assert list(from_config.by_site) == list(plans[1].by_site)
    # --shard wins over the config's
    assert list(build_plan(parse_config(_config("1/3")), Role.SQL_SERVER, shard=Shard(2, 3)).by_site) == list(
        plans[2].by_site
    )


def test_a_bad_shard_in_the_config_names_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config("5/3"), "c.yml")
    assert str(caught.value) == "c.yml:1:12: exporter.shard: the shard index must be between 0 and 2 (0-based), got 5"


def test_check_with_shard_probes_only_that_replicas_sites(tmp_path: Path) -> None:
    """The CLI's --shard reaches the plan: `check --output json` lists that shard's sites only."""
    config = tmp_path / "c.yml"
    config.write_text(_config())
    seen: list[str] = []
    for index in range(3):
        done = subprocess.run(
            [sys.executable, "-m", "illiad_exporter", "check", "--config.file", str(config), "--vantage",
             "sql_server", "--shard", f"{index}/3", "--output", "json"],
            capture_output=True, text=True, timeout=60,
        )
        report = json.loads(done.stdout)
        sites = sorted({r["site"] for r in report["results"]})
        assert sites == sorted(select([f"lib{i}" for i in range(30)], Shard(index, 3)))
        seen += sites
    assert sorted(seen) == sorted(f"lib{i}" for i in range(30))
    bad = subprocess.run(
        [sys.executable, "-m", "illiad_exporter", "check", "--config.file", str(config), "--vantage", "sql_server",
         "--shard", "3/3"], capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert "argument --shard: the shard index must be between 0 and 2 (0-based), got 3" in bad.stderr
