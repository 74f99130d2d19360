"""The exporter's own shortages are reported as reason exporter, never as the library's
network fault: a probe that never got a slot, and a probe that could not
get a socket under a real descriptor limit (prlimit on the running process), each against
the real exporter process, and counted on /metrics by cause."""

from __future__ import annotations

import os
import subprocess

import pytest

from .exporter_process import exporter, fetch, loopback_site_config, settled_fds
from .peers import need_binary
from .test_server import samples, value

pytestmark = pytest.mark.process  # against the real exporter process


def custom_paths(port: int, count: int, *, prefix: str) -> str:
    return "\n".join(
        f"      - {{name: {prefix}{i}, from: [web_server], host: 127.0.0.1, port: {port}, prober: tcp}}"
        for i in range(count)
    )


def reasons(text: str) -> dict[str, str]:
    """path -> the reason whose series is 1 ("" when the path is up)."""
    found: dict[str, str] = {}
    for labels, v in samples(text, "illiad_probe_failure_reason").items():
        labels_d = dict(labels)
        found.setdefault(labels_d["path"], "")
        if v == 1.0:
            found[labels_d["path"]] = labels_d["reason"]
    return found


def test_a_healthy_path_waiting_behind_dead_ones_for_a_slot_is_reason_exporter(tmp_path, dropping_port, silent_port):
    """Two probe slots; another site's two dead paths (a dropping firewall, 5 s timeout) hold
    both for the whole 1.5 s scrape. The healthy path never ran: reason exporter, not timeout."""
    config = loopback_site_config(tmp_path / "c.yml", timeout="5s", site="dead",
                                  custom=custom_paths(dropping_port, 2, prefix="dead"),
                                  top="exporter: {max_concurrency: 2}\n")
    config.write_text(config.read_text() + f"""  - name: lib
    hosts: {{web_server: 127.0.0.1}}
    paths: {{sql: {{enabled: false}}, oclc_webservices: {{enabled: false}}, atlas_update: {{enabled: false}},
             article_exchange: {{enabled: false}}, odyssey: {{enabled: false}}}}
    custom:
{custom_paths(silent_port, 1, prefix="healthy")}
""")
    peer, url = exporter(config, tmp_path)
    with peer:
        status, text = fetch(url + "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert status == 200
        assert reasons(text) == {"dead0": "timeout", "dead1": "timeout", "healthy0": "exporter"}
        assert value(text, "illiad_exporter_probes_not_run_total", cause="no_slot") == 1.0
        assert value(text, "illiad_exporter_probes_not_run_total", cause="no_socket") == 0.0


@pytest.mark.peer("prlimit")
def test_a_probe_without_a_descriptor_is_reason_exporter_not_network(tmp_path, dropping_port):
    """The running exporter's descriptor limit is lowered (prlimit) to what it holds plus
    three: one for the scrape's connection, two for probes. Of eight probes to a dropping
    port, the two with a socket time out; the six without one are reason exporter."""
    prlimit = need_binary("prlimit", "util-linux")
    config = loopback_site_config(tmp_path / "c.yml", timeout="1s",
                                  custom=custom_paths(dropping_port, 8, prefix="p"))
    peer, url = exporter(config, tmp_path)
    with peer:
        fetch(url + "/-/ready")  # the process is warm
        limit = settled_fds(peer.pid) + 3  # once that connection's descriptor is gone
        subprocess.run([prlimit, f"--pid={peer.pid}", f"--nofile={limit}:{limit}"], check=True)
        status, text = fetch(url + "/metrics")
        found = reasons(text)
        assert status == 200
        assert sorted(found.values()) == ["exporter"] * 6 + ["timeout"] * 2, found
        assert value(text, "illiad_exporter_probes_not_run_total", cause="no_socket") == 6.0
        detail_shown = fetch(url + "/")[1]
        assert os.strerror(24).lower() in detail_shown.lower()  # "too many open files", on the status page
