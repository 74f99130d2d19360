"""Reloads: a bad config is refused and the running one keeps serving; reloads racing scrapes
never show half of a config; SIGHUP reloads the real process."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import aiohttp
import pytest

from .exporter_process import exporter, fetch, log_text, loopback_site_config, wait_until
from .test_server import running, samples, value


def site_config(path: Path, site: str, ports: dict[str, int], *, timeout: str = "2s") -> Path:
    custom = "\n".join(
        f"      - {{name: {name}, from: [web_server], host: 127.0.0.1, port: {port}, prober: tcp}}"
        for name, port in ports.items()
    )
    loopback_site_config(path, timeout=timeout, site=site, custom=custom)
    return path


def series(text: str) -> frozenset[tuple[str, str, str]]:
    """(site, path, port) of every path series in a scrape."""
    return frozenset(
        (labels["site"], labels["path"], labels["port"])
        for labels in (dict(k) for k in samples(text, "illiad_port_up"))
    )


@pytest.mark.slow  # 40 reloads under 8 scrapers: about 20 s
def test_reloads_racing_scrapes_never_mix_two_configs(tmp_path, silent_port, refusing_port):
    """Two configs differ in site name, path names and ports; while 40 reloads flip between
    them (some invalid), 8 scrapers scrape without pause. Every scrape's series are wholly
    one config's, and both configs were seen."""
    alpha_ports = {"a_sql": silent_port, "a_web": refusing_port}
    beta_ports = {"b_sql": refusing_port, "b_web": silent_port, "b_ldap": silent_port}
    alpha = frozenset(("alpha", name, str(port)) for name, port in alpha_ports.items())
    beta = frozenset(("beta", name, str(port)) for name, port in beta_ports.items())
    config = tmp_path / "c.yml"
    site_config(config, "alpha", alpha_ports)

    async def scenario() -> tuple[list[frozenset[tuple[str, str, str]]], list[int]]:
        async with running(config) as (url, state):
            seen: list[frozenset[tuple[str, str, str]]] = []
            reload_statuses: list[int] = []
            done = asyncio.Event()

            async def scraper(session: aiohttp.ClientSession) -> None:
                while not done.is_set():
                    async with session.get(url + "/metrics") as response:
                        assert response.status == 200
                        seen.append(series(await response.text()))

            async def reloader(session: aiohttp.ClientSession) -> None:
                for n, (site, ports) in zip(range(40), itertools.cycle(
                        [("beta", beta_ports), ("alpha", alpha_ports), ("broken", {})])):
                    if site == "broken":
                        config.write_text("sites:\n  - name: lib\n    paths: {sql: {port: 0}}\n")
                    else:
                        site_config(config, site, ports)
                    async with session.post(url + "/-/reload") as response:
                        reload_statuses.append(response.status)
                    # let the scrapers see this config (on a loaded machine they could miss it)
                    # but not all at once: some scrapes still straddle the next reload
                    seen_before = len(seen)
                    for _ in range(200):
                        if len(seen) >= seen_before + 1 + n % 3:
                            break
                        await asyncio.sleep(0.005)
                done.set()

            async with aiohttp.ClientSession() as session:
                await asyncio.gather(reloader(session), *(scraper(session) for _ in range(8)))
            return seen, reload_statuses

    seen, reload_statuses = asyncio.run(scenario())
    assert set(reload_statuses) == {200, 500}
    assert len(seen) >= 40
    mixed = [s for s in seen if s not in (alpha, beta)]
    assert mixed == []
    assert alpha in seen and beta in seen


def test_a_failed_reload_reports_0_and_logs_the_reason_then_a_good_one_recovers(tmp_path, silent_port, caplog):
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})

    async def scenario() -> None:
        async with running(config) as (url, state):
            config.write_text("sites:\n  - name: alpha\n    custom: [{name: x, from: [nowhere]}]\n")
            assert await state.reload() is not None
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/metrics") as response:
                    text = await response.text()
            assert value(text, "illiad_exporter_config_last_reload_successful") == 0.0
            assert series(text) == {("alpha", "a_sql", str(silent_port))}
            site_config(config, "beta", {"b_sql": silent_port})
            assert await state.reload() is None
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/metrics") as response:
                    text = await response.text()
            assert value(text, "illiad_exporter_config_last_reload_successful") == 1.0
            assert series(text) == {("beta", "b_sql", str(silent_port))}

    with caplog.at_level("ERROR", logger="illiad_exporter"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if r.getMessage().startswith("config reload failed")]
    assert len(failures) == 1
    assert "sites[0].custom[0].from[0]" in failures[0].errors  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sighup_reloads_the_running_process_and_refuses_a_bad_config(tmp_path, silent_port, refusing_port):
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path)
    with peer:
        assert series(fetch(url + "/metrics")[1]) == {("alpha", "a_sql", str(silent_port))}
        site_config(config, "beta", {"b_sql": refusing_port})
        peer.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: series(fetch(url + "/metrics")[1]) == {("beta", "b_sql", str(refusing_port))},
                   what="the new config after SIGHUP")

        config.write_text("sites:\n  - name: beta\n    paths: {sql: {port: 70000}}\n")
        peer.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

        def failed_reload_shows() -> str | None:
            text = fetch(url + "/metrics")[1]
            return text if value(text, "illiad_exporter_config_last_reload_successful") == 0.0 else None

        text = wait_until(failed_reload_shows, what="the failed reload to show")
        assert series(text) == {("beta", "b_sql", str(refusing_port))}  # the running config serves on
        assert peer.process.poll() is None  # type: ignore[union-attr]
    log = log_text(peer)
    assert "config reload failed, keeping the running config" in log
    assert "sites[0].paths.sql.port" in log and "less than or equal to 65535" in log
