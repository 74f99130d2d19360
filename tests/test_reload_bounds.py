"""Reloads are bounded, against the real exporter process: a YAML alias
bomb, a huge file, a FIFO at the config path, a deep nesting, a config past a bound the
command line lowered and a load past its time bound are each refused at once with the bound
named, logged, and shown as illiad_exporter_config_last_reload_successful 0, while the
running config serves on; afterwards a good config reloads."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from .exporter_process import exporter, fetch, log_text, loopback_site_config, wait_until
from .test_reload import series, site_config
from .test_server import value

pytestmark = pytest.mark.process  # against the real exporter process

# nine levels of ten aliases: 10**9 values once expanded, from about 330 bytes
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
) + "sites: *i\n"


def yaml_values(text: str) -> int:
    return sum(1 for e in yaml.parse(text) if isinstance(e, (yaml.ScalarEvent, yaml.CollectionStartEvent)))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def reload_fails(url: str, peer, *, within: float, says: str) -> None:  # type: ignore[no-untyped-def]
    logged = log_text(peer).count("config reload failed")
    started = time.monotonic()
    status, text = fetch(url + "/-/reload", method="POST", timeout=within + 10)
    took = time.monotonic() - started
    assert status == 500 and says in text, text[-500:]
    assert took < within, f"the reload took {took:.1f}s"
    wait_until(lambda: log_text(peer).count("config reload failed") == logged + 1, timeout=5,
               what="one 'reload failed' line")
    assert says in log_text(peer).split("config reload failed")[-1]
    assert value(fetch(url + "/metrics")[1], "illiad_exporter_config_last_reload_successful") == 0.0


def test_hostile_config_files_are_refused_at_once_and_the_running_config_serves_on(tmp_path, silent_port,
                                                                                  refusing_port):
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path)
    with peer:
        rss_before = peak_rss_mib(peer.pid)
        config.write_text(ALIAS_BOMB)
        assert len(ALIAS_BOMB) < 600
        reload_fails(url, peer, within=5, says=f"{config}:1:10: g[1][5][8][8][8][8][1]: more than 3000000 YAML "
                                                "values (aliases counted each time they expand): refused; raise the "
                                                "bound with --config.max-values or $ILLIAD_EXPORTER_CONFIG_MAX_VALUES")

        config.write_text("sites:\n" + ("#" * 80 + "\n") * (50 * 1024 * 1024 // 81))  # 50 MB
        reload_fails(url, peer, within=5, says=f"{config}: config larger than 48000000 bytes (16 for each YAML value "
                                                "--config.max-values allows): refused unread; raise the bound with "
                                                "--config.max-values or $ILLIAD_EXPORTER_CONFIG_MAX_VALUES")

        config.write_text("sites: " + "[" * 20_000 + "]" * 20_000 + "\n")
        reload_fails(url, peer, within=5, says=f"{config}:1:1007: YAML nested more than 64 deep: refused; raise the "
                                                "bound with --config.max-depth or $ILLIAD_EXPORTER_CONFIG_MAX_DEPTH")

        config.write_text("sites:\n" + "- {name: x, hosts: {nowhere: a}}\n" * 300)  # errors by the hundred
        reload_fails(url, peer, within=5, says="stopped after 100 errors")

        config.unlink()
        os.mkfifo(config)  # nothing ever writes to it
        reload_fails(url, peer, within=5, says="not a regular file (a FIFO)")
        peer.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]  # SIGHUP is not hung either
        wait_until(lambda: log_text(peer).count("not a regular file (a FIFO)") == 2, timeout=5,
                   what="the SIGHUP reload to fail too")

        assert series(fetch(url + "/metrics")[1]) == {("alpha", "a_sql", str(silent_port))}
        assert peak_rss_mib(peer.pid) - rss_before < 64  # none of it was loaded into memory

        config.unlink()
        site_config(config, "beta", {"b_sql": refusing_port})
        status, _ = fetch(url + "/-/reload", method="POST")
        assert status == 200
        text = fetch(url + "/metrics")[1]
        assert value(text, "illiad_exporter_config_last_reload_successful") == 1.0
        assert series(text) == {("beta", "b_sql", str(refusing_port))}
    assert "Traceback" not in log_text(peer)


def test_a_reload_past_a_bound_the_command_line_set_keeps_the_running_config(tmp_path, silent_port, refusing_port):
    """serve --config.max-values 200 (the variable says 100,000: the flag wins): a config of
    more values is refused on reload, naming the bound and its flag; the running config
    serves on, and a config within the bound reloads."""
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path, "--config.max-values", "200",
                         env={"ILLIAD_EXPORTER_CONFIG_MAX_VALUES": "100000"})
    with peer:
        original = config.read_text()
        more = original + "".join(f"  - {{name: extra{i}, hosts: {{web_server: 127.0.0.1}}, paths: {{"
                                  f"oclc_webservices: {{enabled: false}}, atlas_update: {{enabled: false}}, "
                                  f"article_exchange: {{enabled: false}}}}}}\n" for i in range(10))
        config.write_text(more)
        assert yaml_values(original) < 200 < yaml_values(more) and len(more) < 200 * 16  # values, not bytes, cross
        reload_fails(url, peer, within=5, says="more than 200 YAML values (aliases counted each time they expand): "
                                               "refused; raise the bound with --config.max-values or "
                                               "$ILLIAD_EXPORTER_CONFIG_MAX_VALUES")
        assert series(fetch(url + "/metrics")[1]) == {("alpha", "a_sql", str(silent_port))}
        site_config(config, "beta", {"b_sql": refusing_port})
        assert fetch(url + "/-/reload", method="POST")[0] == 200
        text = fetch(url + "/metrics")[1]
        assert value(text, "illiad_exporter_config_last_reload_successful") == 1.0
        assert series(text) == {("beta", "b_sql", str(refusing_port))}


@pytest.mark.slow
def test_a_load_past_the_reload_timeout_fails_and_the_next_reload_works(tmp_path, silent_port):
    """reload_timeout 200ms; the new config has 10,000 paths (well over a second to load):
    the reload fails within about the bound, naming the config key that sets it, and the
    running config serves on."""
    config = loopback_site_config(
        tmp_path / "c.yml", custom=f"      - {{name: app, from: [web_server], host: 127.0.0.1, port: {silent_port}}}",
        top="exporter: {reload_timeout: 200ms}\n")
    peer, url = exporter(config, tmp_path)
    with peer:
        lines = ["exporter: {reload_timeout: 200ms}", "defaults: {system_resolver: false}", "sites:"]
        for s in range(1000):
            customs = ", ".join(f"{{name: p{i}, from: [web_server], host: 127.0.0.1, port: {1000 + i}}}"
                                for i in range(10))
            lines.append(f"  - {{name: site{s:04d}, custom: [{customs}]}}")
        original = config.read_text()
        config.write_text("\n".join(lines) + "\n")
        reload_fails(url, peer, within=3, says="the load took more than 200ms: stopped; raise the bound with "
                                               "exporter.reload_timeout in the config")
        assert value(fetch(url + "/metrics")[1], "illiad_port_up") is not None  # the old single path
        config.write_text(original)
        wait_until(lambda: fetch(url + "/-/reload", method="POST")[0] == 200, timeout=10,
                   what="a reload of the small config")
