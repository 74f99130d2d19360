"""Name lookups cannot starve probes, against the real exporter process
run in a mount namespace of its own whose /etc/resolv.conf names a local resolver that
drops every query (a UDP and TCP sink on a loopback address)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from illiad_exporter.probers.resolver import HostsFile

from .exporter_process import exporter, fetch, loopback_site_config
from .peers import need_binary, need_root
from .test_exporter_side import reasons

SINK_ADDRESS = "127.77.0.53"


@pytest.fixture
def dropping_resolver() -> Iterator[str]:
    """A DNS server that reads every query and never answers; yields its address."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket()
    udp.bind((SINK_ADDRESS, 53))
    tcp.bind((SINK_ADDRESS, 53))
    tcp.listen(64)
    stop = threading.Event()
    queries = [0]

    def drain() -> None:
        udp.settimeout(0.2)
        while not stop.is_set():
            try:
                udp.recv(4096)
                queries[0] += 1
            except OSError:
                pass

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield SINK_ADDRESS
    finally:
        stop.set()
        thread.join(2)
        udp.close()
        tcp.close()
    assert queries[0] > 0, "the exporter never asked the dropping resolver"


def in_namespace_with_resolver(tmp_path: Path, nameserver: str) -> list[str]:
    """A command prefix: a private mount namespace whose /etc/resolv.conf names ``nameserver``."""
    need_root("a mount namespace with its own /etc/resolv.conf")
    unshare = need_binary("unshare", "util-linux")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\n")
    return [unshare, "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]


@pytest.mark.peer("unshare")
def test_dead_names_are_dns_and_starve_neither_local_names_nor_logins(tmp_path, silent_port, dropping_resolver):
    """500 paths to names the dropping resolver never answers, one to localhost (in
    /etc/hosts) and one to a name of the config's hosts table, with basic auth on. The
    scrape ends by its deadline with the local paths up and every dead name reason dns (not
    timeout); a first login during the scrape is answered at once."""
    dead = "\n".join(f"      - {{name: dead{i}, from: [web_server], host: dead{i}.example.test, port: 80}}"
                     for i in range(500))
    config = loopback_site_config(tmp_path / "c.yml", timeout="2s", custom="\n".join([
        dead,
        f"      - {{name: local, from: [web_server], host: localhost, port: {silent_port}}}",
        f"      - {{name: pinned, from: [web_server], host: lab.test, port: {silent_port}}}",
    ]), hosts='{"lab.test": [127.0.0.1]}')
    config.write_text(config.read_text().replace("system_resolver: false", "system_resolver: true"))
    password = "first-login-9"
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users: {{prometheus: '{bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()}'}}\n")
    auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()}
    peer, url = exporter(config, tmp_path, "--web.config.file", str(web_yml),
                         prefix=in_namespace_with_resolver(tmp_path, dropping_resolver), resolver_on_loopback=True)
    with peer:
        scrape: dict[str, object] = {}

        def scraper() -> None:
            started = time.monotonic()
            scrape["answer"] = fetch(url + "/metrics", headers={**auth, "X-Prometheus-Scrape-Timeout-Seconds": "4"})
            scrape["took"] = time.monotonic() - started

        thread = threading.Thread(target=scraper)
        thread.start()
        time.sleep(0.5)  # the dead lookups hold the resolver's threads now
        started = time.monotonic()
        fresh = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode(),
                 "Cache-Control": "no-cache"}
        status, _ = fetch(url + "/-/healthy", headers=fresh)
        login_took = time.monotonic() - started
        thread.join(20)
        status_metrics, text = scrape["answer"]  # type: ignore[misc]
    assert status == 200 and login_took < 2.0, login_took
    assert status_metrics == 200 and scrape["took"] < 4.5, scrape["took"]  # type: ignore[operator]
    found = reasons(text)
    assert "local" not in found and "pinned" not in found, {k: found.get(k) for k in ("local", "pinned")}  # up
    assert {found[f"dead{i}"] for i in range(500)} == {"dns"}


def test_the_hosts_file_is_read_without_regard_to_case_and_again_when_it_changes(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n198.18.0.9  Lab.Test lab2.test. # a comment\n::1 localhost\nbad line\n")
    table = HostsFile(hosts)
    assert table.addresses("LAB.test") == ["198.18.0.9"]
    assert table.addresses("lab2.test") == ["198.18.0.9"]
    assert table.addresses("localhost") == ["127.0.0.1", "::1"]
    assert table.addresses("nowhere.test") == []
    hosts.write_text("198.18.0.10 lab.test\n")
    assert table.addresses("lab.test") == ["198.18.0.10"]
