"""Sharding: replicas split a consortium's sites exactly, and adding one moves few sites."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter.catalog import Role
from illiad_exporter.config import ConfigError, parse_config
from illiad_exporter.plan import build_plan
from illiad_exporter.shard import Shard, owner, parse_shard, select

from .exporter_process import fetch
from .peers import Peer, free_port

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


@pytest.mark.process
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


@pytest.mark.process
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


# -- the chart's StatefulSet, run as real processes ------------------------------------------


def _pod_commands(docs: list[dict], config_file: Path) -> list[tuple[list[str], dict[str, str]]]:
    """What the kubelet runs in each pod of the rendered StatefulSet: the container's args with
    $(SHARD_INDEX) expanded from the pod's index label, and its plain env."""
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    index_env = [e for e in container["env"] if e["name"] == "SHARD_INDEX"]
    assert index_env == [{"name": "SHARD_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}}]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    commands = []
    for index in range(statefulset["spec"]["replicas"]):
        args = [a.replace("$(SHARD_INDEX)", str(index)) for a in container["args"]]
        args = [f"--config.file={config_file}" if a.startswith("--config.file=") else a for a in args]
        args = [a for a in args if not a.startswith("--web.listen-address=")]  # each its own loopback port
        commands.append((args, env))
    return commands


def _sites_probed_by_the_shard_pods(helm: object, shards: int, sites: list[str], port: int, work: Path) -> Counter:
    values = {"vantage": "external", "shards": shards, "config": {
        "defaults": {"system_resolver": False, "timeout": "2s"},
        "sites": [{"name": s, "custom": [{"name": "door", "from": ["external"], "host": "127.0.0.1", "port": port}]}
                  for s in sites],
    }}
    docs = helm.template(values)  # type: ignore[attr-defined]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and "illiad.yml" in d.get("data", {})]
    config_file = work / f"illiad-{shards}.yml"
    config_file.write_text(configmap["data"]["illiad.yml"])
    probed: Counter = Counter()
    pods = []
    try:
        for args, env in _pod_commands(docs, config_file):
            assert args[0] == "serve" and f"--shard={len(pods)}/{shards}" in args
            port_ = free_port()
            peer = Peer([sys.executable, "-m", "illiad_exporter", *args, f"--web.listen-address=127.0.0.1:{port_}"],
                        port=port_, log=work / f"pod-{shards}-{len(pods)}.log", env={**os.environ, **env})
            pods.append((peer.start(), port_))
        for _, port_ in pods:
            status, text = fetch(f"http://127.0.0.1:{port_}/metrics")
            assert status == 200
            probed.update(s.labels["site"] for f in text_string_to_metric_families(text) for s in f.samples
                          if s.name == "illiad_port_up")
    finally:
        for peer, _ in pods:
            peer.stop()
    return probed


@pytest.mark.process
def test_the_charts_shard_pods_probe_every_site_exactly_once_before_and_after_a_resize(
    tmp_path: Path, refusing_port: int,
) -> None:
    """`shards: 3`, then `shards: 4`: the rendered StatefulSet's pods, run as real exporters
    on the rendered config, together probe each of the 24 sites once."""
    from .test_helm_chart import Helm

    helm = Helm()
    sites = [f"library-{i:02d}" for i in range(24)]
    for shards in (3, 4):
        probed = _sites_probed_by_the_shard_pods(helm, shards, sites, refusing_port, tmp_path)
        assert sorted(probed) == sites, f"shards={shards}: missing {set(sites) - set(probed)}"
        assert set(probed.values()) == {1}, f"shards={shards}: probed twice: {[s for s, n in probed.items() if n > 1]}"
