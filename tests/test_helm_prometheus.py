"""The chart's ServiceMonitor and Probe, scraped by a real Prometheus: each rendered object
is turned into the scrape config prometheus-operator would generate (tests/operator_scrape.py)
and run against a real exporter that serves the rendered ConfigMap, on loopback. Every site
must be a target of its own (one `up` series per site) and no sample doubled (one series per
site and path, one sample per scrape, nothing probed through /metrics)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from .exporter_process import exporter
from .operator_scrape import probe_job, service_monitor_jobs
from .peers import need_binary, prometheus_peer, prometheus_query
from .test_helm_chart import Helm, config_text, one

pytestmark = pytest.mark.slow
SITES = ["alpha", "beta"]
POD = "web-illiad-port-exporter-7d9f8-abcde"


def loopback_config(open_port: int, closed_port: int) -> dict[str, Any]:
    """Two sites on 127.0.0.1 (names never reach DNS): alpha's sql listens, beta's is refused."""
    off = {path: {"enabled": False} for path in ("oclc_webservices", "atlas_update", "article_exchange", "odyssey")}
    return {
        "defaults": {"timeout": "1s", "system_resolver": False},
        "sites": [{"name": name, "hosts": {"web_server": "127.0.0.1", "sql_server": "127.0.0.1"},
                   "paths": {"sql": {"port": port, "prober": "tcp"}, **off}}
                  for name, port in (("alpha", open_port), ("beta", closed_port))],
    }


def by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(label, "") for label in labels): float(r["value"][1]) for r in result}


def test_every_site_is_one_target_and_no_sample_is_doubled(tmp_path: Path, silent_port: int,
                                                           refusing_port: int) -> None:
    prometheus = need_binary("prometheus", "prometheus")
    promtool = need_binary("promtool", "prometheus")
    helm = Helm()
    config = loopback_config(silent_port, refusing_port)
    monitored = helm.template({"vantage": "web_server", "config": config, "serviceMonitor": {
        "enabled": True, "sites": SITES, "selfMetrics": True, "interval": "1s", "scrapeTimeout": "1s"}}, release="web")
    probed = helm.template({"vantage": "web_server", "config": config, "probe": {
        "enabled": True, "sites": SITES, "interval": "1s", "scrapeTimeout": "1s"}}, release="probe")

    # The exporter serves the ConfigMap exactly as rendered: /metrics probes nothing there.
    rendered = config_text(monitored)
    assert yaml.safe_load(rendered)["exporter"] == {"probe_on_metrics": False}
    assert config_text(probed) == rendered
    (tmp_path / "illiad.yml").write_text(rendered)
    peer, _ = exporter(tmp_path / "illiad.yml", tmp_path)
    address = f"127.0.0.1:{peer.port}"

    monitor, probe = one(monitored, "ServiceMonitor"), one(probed, "Probe")
    jobs = [*service_monitor_jobs(monitor, one(monitored, "Service"), address=address, pod=POD),
            probe_job(probe, prober_address=address)]
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    prom_config = prom_dir / "prometheus.yml"
    prom_config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                           "scrape_configs": jobs}, sort_keys=False))
    checked = subprocess.run([promtool, "check", "config", str(prom_config)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prom = prometheus_peer(prometheus, prom_config)
    base = f"http://127.0.0.1:{prom.port}"
    sm_job, probe_job_name = monitor["metadata"]["name"], probe["spec"]["jobName"]
    assert sm_job != probe_job_name  # two releases: their series stay apart

    with peer, prom:
        deadline = time.monotonic() + 60
        counts: dict[tuple[str, ...], float] = {}
        while time.monotonic() < deadline:  # every target scraped a few times
            try:
                counts = by(prometheus_query(base, "count_over_time(up[1m])"), "job", "instance")
            except urllib.error.HTTPError:  # 503 while its storage starts
                counts = {}
            if len(counts) == 5 and min(counts.values()) >= 6:
                break
            time.sleep(1)
        assert len(counts) == 5 and min(counts.values()) >= 6, counts

        # one `up` series per site (instance and site the site's name), all up, plus the
        # ServiceMonitor's /metrics endpoint for the exporter's own health
        up = prometheus_query(base, "up")
        assert by(up, "job", "instance", "site") == {
            (sm_job, "alpha", "alpha"): 1.0, (sm_job, "beta", "beta"): 1.0, (sm_job, address, ""): 1.0,
            (probe_job_name, "alpha", "alpha"): 1.0, (probe_job_name, "beta", "beta"): 1.0,
        }
        assert {r["metric"]["pod"] for r in up if r["metric"]["job"] == sm_job} == {POD}

        # one series per job, site and path; the site's verdict; nothing from /metrics
        ports = prometheus_query(base, "illiad_port_up")
        assert by(ports, "job", "instance", "site", "path") == {
            (sm_job, "alpha", "alpha", "sql"): 1.0, (sm_job, "beta", "beta", "sql"): 0.0,
            (probe_job_name, "alpha", "alpha", "sql"): 1.0, (probe_job_name, "beta", "beta", "sql"): 0.0,
        }
        assert not [r for r in prometheus_query(base, '{__name__=~".+", exported_site!=""}')]
        assert prometheus_query(base, f'count by (job) ({{instance="{address}", __name__=~"illiad_port_.*"}})') == []

        # one sample per scrape: a site's series holds exactly as many samples as its target
        # had scrapes, and every scrape of a site brought the same number of samples (the
        # /metrics target's own count may change as self-metrics appear)
        window = "[20s]"
        samples = by(prometheus_query(base, f"count_over_time(illiad_port_up{window})"), "job", "instance")
        scrapes = by(prometheus_query(base, f"count_over_time(up{{instance=~'alpha|beta'}}{window})"), "job", "instance")
        assert samples == scrapes and len(samples) == 4
        changes = by(prometheus_query(base, f"changes(scrape_samples_scraped{{instance=~'alpha|beta'}}{window})"),
                     "job", "instance")
        assert len(changes) == 4 and set(changes.values()) == {0.0}, changes

        # `helm test`: the test pod's containers, run against this exporter, all pass
        test_pod = one(monitored, "Pod")
        assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        for container in test_pod["spec"]["containers"]:
            args = [f"--address={address}" if a.startswith("--address=") else a for a in container["args"]]
            ran = subprocess.run([sys.executable, "-m", "illiad_exporter", *args], capture_output=True, text=True,
                                 timeout=60)
            assert ran.returncode == 0, (container["name"], ran.stdout, ran.stderr)
        assert [c["args"][2] for c in test_pod["spec"]["containers"]] == [
            "--path=/metrics", "--path=/probe?site=alpha", "--path=/probe?site=beta"]


def test_behind_tls_and_basic_auth_every_site_is_scraped_with_the_secrets_credentials(
        tmp_path: Path, silent_port: int, refusing_port: int) -> None:
    """webConfig: the exporter serves TLS with basic auth (the web config the chart mounts);
    the ServiceMonitor's https scheme, CA and server name, and credentials from the Secrets,
    as prometheus-operator resolves them, get every site and /metrics scraped; the `helm
    test` containers, given the same Secret's credentials, pass."""
    import bcrypt
    import trustme

    prometheus = need_binary("prometheus", "prometheus")
    ca = trustme.CA()
    cert = ca.issue_cert("illiad-exporter")
    pki = tmp_path / "pki"
    pki.mkdir()
    cert.private_key_pem.write_to_path(str(pki / "tls.key"))
    (pki / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    password = "scrape secret"
    (pki / "web-config.yml").write_text(
        "tls_server_config: {cert_file: tls.crt, key_file: tls.key}\n"
        f"basic_auth_users: {{prometheus: '{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}'}}\n")
    secrets = {("illiad-exporter-scrape", "username"): "prometheus", ("illiad-exporter-scrape", "password"): password,
               ("illiad-exporter-web", "ca.crt"): ca.cert_pem.bytes().decode()}
    docs = Helm().template({"vantage": "web_server", "config": loopback_config(silent_port, refusing_port),
                            "webConfig": {"existingSecret": "illiad-exporter-web", "tls": True,
                                          "scrapeTlsConfig": {"ca": {"secret": {"name": "illiad-exporter-web",
                                                                                "key": "ca.crt"}},
                                                              "serverName": "illiad-exporter"},
                                          "basicAuthSecret": "illiad-exporter-scrape"},
                            "serviceMonitor": {"enabled": True, "sites": SITES, "selfMetrics": True,
                                               "interval": "1s", "scrapeTimeout": "1s"}}, release="web")
    (tmp_path / "illiad.yml").write_text(config_text(docs))
    peer, _ = exporter(tmp_path / "illiad.yml", tmp_path, "--web.config.file", str(pki / "web-config.yml"),
                       scheme="https")
    address = f"127.0.0.1:{peer.port}"
    jobs = service_monitor_jobs(one(docs, "ServiceMonitor"), one(docs, "Service"), address=address, pod=POD,
                                secrets=secrets, files=pki)
    assert {job["scheme"] for job in jobs} == {"https"}
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": jobs}, sort_keys=False))
    prom = prometheus_peer(prometheus, prom_dir / "prometheus.yml")
    base = f"http://127.0.0.1:{prom.port}"
    with peer, prom:
        deadline = time.monotonic() + 60
        up: dict[tuple[str, ...], float] = {}
        while time.monotonic() < deadline:
            try:
                up = by(prometheus_query(base, "up"), "instance")
            except urllib.error.HTTPError:  # 503 while its storage starts
                up = {}
            if len(up) == 3 and set(up.values()) == {1.0}:
                break
            time.sleep(1)
        assert up == {("alpha",): 1.0, ("beta",): 1.0, (address,): 1.0}
        assert by(prometheus_query(base, "illiad_port_up"), "site", "path") == {("alpha", "sql"): 1.0, ("beta", "sql"): 0.0}
        credentials = {"ILLIAD_EXPORTER_HEALTHCHECK_USERNAME": "prometheus",
                       "ILLIAD_EXPORTER_HEALTHCHECK_PASSWORD": password}
        for container in one(docs, "Pod")["spec"]["containers"]:
            args = [f"--address={address}" if a.startswith("--address=") else a for a in container["args"]]
            ran = subprocess.run([sys.executable, "-m", "illiad_exporter", *args], capture_output=True, text=True,
                                 timeout=60, env={**os.environ, **credentials})
            assert ran.returncode == 0, (container["name"], ran.stdout, ran.stderr)
            assert ran.stdout.startswith(f"healthy: https://{address}/")
