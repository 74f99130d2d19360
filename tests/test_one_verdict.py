"""One verdict everywhere: for the same real listeners, `check` (table and JSON), /metrics,
/probe and the status page say the same about every path, because all of them judge by
verdict.py. The peers: FreeTDS (tdspool) as SQL Server, nginx with TLS as OCLC, nginx's plain
HTTP port where SQL Server or a TLS service should be, a listener that accepts and says
nothing, and ports where nothing listens."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .exporter_process import PUBLIC_PATHS, loopback_site_config
from .test_server import get, running

CLI = [sys.executable, "-m", "illiad_exporter"]

# (site, path) -> (verdict, required)
EXPECTED = {
    ("a", "sql"): ("met", "true"),  # 1433-style port refused, tdspool answers on the other: require any
    ("a", "oclc_webservices"): ("met", "true"),  # nginx, TLS verified
    ("a", "atlas_update"): ("failed", "true"),  # a plain HTTP port: the TLS handshake fails
    ("a", "odyssey_outbound"): ("met", "true"),  # one partner of two answers
    ("a", "rdp_support"): ("failed", "true"),  # must be closed, but a listener accepts
    ("b", "sql"): ("failed", "true"),  # a plain HTTP port: PRELOGIN fails
    ("b", "odyssey_outbound"): ("failed", "true"),  # the only partner refuses
    ("b", "both_ports"): ("failed", "false"),  # require all: one of two ports refused
}


def write_config(path: Path, *, tds: int, https: int, http: int, ca: Path, listener: int, refused: int) -> Path:
    # partner-down.test is 127.0.0.2, where nothing listens (the listener binds 127.0.0.1 only)
    path.write_text(f"""
defaults:
  timeout: 2s
  system_resolver: false
  hosts: {{partner-up.test: [127.0.0.1], partner-down.test: [127.0.0.2]}}
sites:
  - name: a
    hosts: {{web_server: 127.0.0.1, sql_server: 127.0.0.1}}
    paths:
      sql: {{ports: [{refused}, {tds}]}}
      oclc_webservices: {{host: 127.0.0.1, port: {https}, ca_file: "{ca}", server_name: localhost}}
      atlas_update: {{host: 127.0.0.1, port: {http}}}
      article_exchange: {{enabled: false}}
      odyssey_outbound: {{hosts: [partner-down.test, partner-up.test], port: {listener}}}
    custom:
      - {{name: rdp_support, from: [web_server], host: 127.0.0.1, port: {listener}, expect: closed}}
  - name: b
    hosts: {{web_server: 127.0.0.1, sql_server: 127.0.0.1}}
    paths:
      sql: {{port: {http}}}
      oclc_webservices: {{enabled: false}}
      atlas_update: {{enabled: false}}
      article_exchange: {{enabled: false}}
      odyssey_outbound: {{hosts: [partner-down.test], port: {listener}}}
    custom:
      - {{name: both_ports, from: [web_server], host: 127.0.0.1, ports: [{listener}, {refused}], required: false}}
""")
    return path


def from_check_json(config: Path) -> tuple[int, dict[tuple[str, str], tuple[str, str]]]:
    done = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", "web_server", "--output", "json"],
                          capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert report["ok"] is False
    return done.returncode, {(p["site"], p["path"]): (p["state"], str(p["required"]).lower()) for p in report["paths"]}


def from_check_table(config: Path) -> tuple[int, dict[tuple[str, str], tuple[str, str]]]:
    done = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", "web_server"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    header = lines[0]
    cut = [header.index(word) for word in ("SITE", "PATH", "NEED", "EXPECT", "RESULT", "TARGET")]
    words = {"ok": "met", "FAIL": "failed", "UNKNOWN": "unknown"}
    found = {}
    for line in lines[1:]:
        if not line.strip():
            break
        site, path, need, _, result = (line[a:b].strip() for a, b in zip(cut, cut[1:]))
        if path:  # a path's row; its targets' rows leave PATH empty
            found[(site, path)] = (words[result], str(need == "required").lower())
    return done.returncode, found


def from_metrics(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "illiad_path_expectation_met":
                labels = sample.labels
                assert labels["vantage"] == "web_server"
                found[(labels["site"], labels["path"])] = ("met" if sample.value == 1 else "failed", labels["required"])
    return found


class PathRows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[tuple[str, str], tuple[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-verdict" in a:
            self.found[(a["data-verdict-site"], a["data-verdict-path"])] = (a["data-verdict"], a["data-required"])


def from_status_page(page: str) -> dict[tuple[str, str], tuple[str, str]]:
    rows = PathRows()
    rows.feed(page)
    return rows.found


def test_check_metrics_probe_and_status_page_give_every_path_the_same_verdict(
    tmp_path, tdspool, nginx, silent_port, refusing_port,
):
    config = write_config(tmp_path / "illiad.yml", tds=tdspool.port, https=nginx.https_port, http=nginx.http_port,
                          ca=nginx.certs.ca, listener=silent_port, refused=refusing_port)

    json_status, by_json = from_check_json(config)
    table_status, by_table = from_check_table(config)

    async def scrape() -> tuple[str, str, str]:
        async with running(config) as (url, _):
            _, metrics = await get(url + "/metrics")
            _, page = await get(url + "/")
            _, probe_a = await get(url + "/probe?site=a")
            _, probe_b = await get(url + "/probe?site=b")
            return metrics, page, probe_a + probe_b

    metrics, page, probed = asyncio.run(scrape())

    assert by_json == EXPECTED
    assert by_table == EXPECTED
    assert from_metrics(metrics) == EXPECTED
    assert from_metrics(probed) == EXPECTED
    assert from_status_page(page) == EXPECTED
    assert json_status == table_status == 1  # some path fails


def test_with_sql_on_its_alternative_port_only_every_view_calls_the_path_met(tmp_path, tdspool, refusing_port):
    """The vendor's "1433 or 1344": the first port refused, the second answered by tdspool."""
    config = loopback_site_config(tmp_path / "illiad.yml", site="a", switched_off=(*PUBLIC_PATHS, "odyssey_outbound"),
                                  paths=f"      sql: {{ports: [{refusing_port}, {tdspool.port}]}}\n")
    done = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", "web_server", "--output", "json"],
                          capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"] is True
    assert [(r["port"], r["up"], r["met"]) for r in report["results"]] == [
        (refusing_port, False, False), (tdspool.port, True, True)]

    async def scrape() -> str:
        async with running(config) as (url, _):
            return (await get(url + "/metrics"))[1]

    assert from_metrics(asyncio.run(scrape())) == {("a", "sql"): ("met", "true")}


@pytest.mark.process
def test_a_path_the_exporter_could_not_finish_probing_is_unknown_not_closed(tmp_path, dropping_port):
    """One probe slot (exporter.max_concurrency: 1) and three partners behind a dropping
    firewall: two time out in turn, and no slot is free for the third before the deadline
    (reason exporter). Under require: any the third might have answered, so the path is
    unknown: check says so and exits 1."""
    config = tmp_path / "illiad.yml"
    config.write_text(f"""
defaults:
  timeout: 1s
  system_resolver: false
  hosts: {{p1.test: [127.0.0.1], p2.test: [127.0.0.1], p3.test: [127.0.0.1]}}
exporter: {{max_concurrency: 1}}
sites:
  - name: a
    hosts: {{web_server: 127.0.0.1}}
    paths:
      oclc_webservices: {{enabled: false}}
      atlas_update: {{enabled: false}}
      article_exchange: {{enabled: false}}
      odyssey_outbound: {{hosts: [p1.test, p2.test, p3.test], port: {dropping_port}}}
""")
    done = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", "web_server"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:6] == ["a", "odyssey_outbound", "required", "open", "(any)", "UNKNOWN"]
    assert "unknown (exporter: no free probe slot before the scrape deadline" in lines[1]
    assert [line.split()[:2] for line in lines[2:5]] == [
        ["FAIL", f"p1.test:{dropping_port}"], ["FAIL", f"p2.test:{dropping_port}"],
        ["UNKNOWN", f"p3.test:{dropping_port}"]]
    assert lines[-1] == ("1 path(s), 3 probe(s) from web_server: SOME EXPECTATIONS NOT MET "
                         "(1 unknown (the exporter could not judge them))")
