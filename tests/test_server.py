"""The HTTP endpoints, served by aiohttp on a loopback port and scraped like Prometheus does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter.catalog import Role
from illiad_exporter.probers import Reason
from illiad_exporter.server import build_app
from illiad_exporter.state import ExporterState

from .exporter_process import PUBLIC_PATHS, loopback_site, loopback_site_config, only_test_hosts


def write_config(path: Path, *, sql_port: int, web_port: int, extra_sites: str = "", timeout: str = "2s") -> Path:
    """sql and web_https probed (tcp) at the given ports; odyssey stays on (its leg from the
    web server, odyssey_outbound, is skipped for want of an external host)."""
    return loopback_site_config(path, timeout=timeout, switched_off=PUBLIC_PATHS, more_sites=extra_sites, paths=f"""\
      sql: {{port: {sql_port}, prober: tcp}}
      web_https: {{port: {web_port}, prober: tcp}}
""")


@asynccontextmanager
async def running(config: Path, vantage: Role = Role.WEB_SERVER) -> AsyncIterator[tuple[str, ExporterState]]:
    only_test_hosts(config, vantage.value)
    state = ExporterState(config, vantage)
    state.load()
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def value(text: str, name: str, **labels: str) -> float | None:
    for key, v in samples(text, name).items():
        if all(dict(key).get(k) == want for k, want in labels.items()):
            return v
    return None


async def get(url: str, **kwargs) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


def test_metrics_probes_every_path_of_the_vantage(tmp_path, silent_port, refusing_port):
    async def scenario():
        async with running(write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)) as (url, _):
            status, text = await get(url + "/metrics")
            assert status == 200
            # from web_server: sql (up); web_https does not start here; odyssey has no external host
            assert samples(text, "illiad_port_up") == {
                (("expect", "open"), ("host", "127.0.0.1"), ("path", "sql"), ("port", str(silent_port)),
                 ("site", "lib"), ("vantage", "web_server")): 1.0,
            }
            assert value(text, "illiad_exporter_config_last_reload_successful") == 1.0
            assert value(text, "illiad_exporter_build_info") == 1.0
            assert value(text, "illiad_exporter_scrape_duration_seconds") is not None

    asyncio.run(scenario())


def test_staff_client_sees_refused_web_path_with_its_reason(tmp_path, silent_port, refusing_port):
    async def scenario():
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        async with running(config, Role.STAFF_CLIENT) as (url, _):
            _, text = await get(url + "/metrics")
            assert value(text, "illiad_port_up", path="web_https") == 0.0
            assert value(text, "illiad_probe_failure_reason", path="web_https", reason="refused") == 1.0
            assert value(text, "illiad_probe_failure_reason", path="web_https", reason="timeout") is None  # active only
            assert value(text, "illiad_port_latency_seconds", path="web_https") is None
            assert value(text, "illiad_port_up", path="sql") == 1.0

    asyncio.run(scenario())


def test_failure_reasons_all_gives_every_reason_with_zero_for_the_others(tmp_path, silent_port, refusing_port):
    async def scenario():
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        config.write_text("exporter: {failure_reasons: all}\n" + config.read_text())
        async with running(config, Role.STAFF_CLIENT) as (url, _):
            _, text = await get(url + "/metrics")
            reasons = {dict(k)["reason"]: v for k, v in samples(text, "illiad_probe_failure_reason").items()
                       if dict(k)["path"] == "web_https"}
            assert reasons == {reason.value: 1.0 if reason.value == "refused" else 0.0 for reason in Reason}
            assert value(text, "illiad_probe_failure_reason", path="sql", reason="refused") == 0.0  # up: all 0

    asyncio.run(scenario())


def test_a_silent_target_never_holds_the_scrape_past_its_timeout(tmp_path, dropping_port, silent_port):
    async def scenario():
        config = write_config(tmp_path / "c.yml", sql_port=dropping_port, web_port=silent_port, timeout="30s")
        async with running(config) as (url, _):
            started = time.monotonic()
            status, text = await get(url + "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
            elapsed = time.monotonic() - started
            assert status == 200
            assert 0.9 <= elapsed < 1.5  # 1.5 s less the 0.5 s offset
            assert value(text, "illiad_probe_failure_reason", path="sql", reason="timeout") == 1.0

    asyncio.run(scenario())


def test_probe_endpoint_answers_for_one_site_without_self_metrics(tmp_path, silent_port, refusing_port):
    other = loopback_site("branch", switched_off=PUBLIC_PATHS, paths=f"      sql: {{port: {refusing_port}}}\n")

    async def scenario():
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port, extra_sites=other)
        async with running(config) as (url, _):
            status, text = await get(url + "/probe", params={"site": "branch"})
            assert status == 200
            assert {dict(k)["site"] for k in samples(text, "illiad_port_up")} == {"branch"}
            assert value(text, "illiad_port_up", path="sql") == 0.0
            assert "illiad_exporter_" not in text and "process_" not in text
            assert await get(url + "/probe", params={"site": "nowhere"}) == (400, "unknown site: 'nowhere'\n")
            assert await get(url + "/probe") == (400, "missing parameter: site\n")

    asyncio.run(scenario())


def test_health_ready_and_landing_page(tmp_path, silent_port, refusing_port):
    async def scenario():
        async with running(write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)) as (url, _):
            assert await get(url + "/-/healthy") == (200, "Healthy\n")
            assert await get(url + "/-/ready") == (200, "Ready\n")
            await get(url + "/metrics")
            status, page = await get(url + "/")
            assert status == 200 and 'href="metrics"' in page and "sql" in page

    asyncio.run(scenario())


def test_a_bad_reload_keeps_the_running_config(tmp_path, silent_port, refusing_port):
    async def scenario():
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        async with running(config) as (url, _):
            config.write_text("sites:\n  - name: lib\n    paths: {sql: {port: 0}}\n")
            async with aiohttp.ClientSession() as session, session.post(url + "/-/reload") as response:
                assert response.status == 500
                assert "sites[0].paths.sql.port" in await response.text()
            _, text = await get(url + "/metrics")
            assert value(text, "illiad_exporter_config_last_reload_successful") == 0.0
            assert value(text, "illiad_port_up", path="sql", port=str(silent_port)) == 1.0  # old config serves

            write_config(config, sql_port=refusing_port, web_port=refusing_port)
            async with aiohttp.ClientSession() as session, session.post(url + "/-/reload") as response:
                assert response.status == 200
            _, text = await get(url + "/metrics")
            assert value(text, "illiad_exporter_config_last_reload_successful") == 1.0
            assert value(text, "illiad_port_up", path="sql", port=str(refusing_port)) == 0.0

    asyncio.run(scenario())


def test_metrics_probes_nothing_when_sites_are_scraped_through_probe(tmp_path, silent_port, refusing_port):
    """Multi-target pattern: /metrics is the exporter's health only, /probe does the probing."""
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    config.write_text(config.read_text().replace("defaults:", "exporter: {probe_on_metrics: false}\ndefaults:"))

    async def scenario():
        async with running(config) as (url, state):
            _, text = await get(url + "/metrics")
            assert samples(text, "illiad_port_up") == {}
            assert value(text, "illiad_exporter_build_info") == 1.0
            # what the config plans is still told, for IlliadExporterProbesNothing
            planned = len(state.snapshot.plan)  # type: ignore[union-attr]
            assert planned >= 1 and value(text, "illiad_exporter_planned_targets") == planned
            _, text = await get(url + "/probe", params={"site": "lib"})
            assert value(text, "illiad_port_up", path="sql") == 1.0

    asyncio.run(scenario())


def test_metrics_carry_the_standard_process_gc_and_platform_collectors(tmp_path, silent_port, refusing_port):
    """/metrics has what every prometheus_client exporter registers: process_*, python_gc_*
    (one series per generation) and python_info; /probe has none of them."""
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    config.write_text(config.read_text().replace("defaults:", "exporter: {probe_on_metrics: false}\ndefaults:"))

    async def scenario():
        async with running(config) as (url, _):
            _, text = await get(url + "/metrics")
            assert value(text, "process_resident_memory_bytes") > 0
            generations = samples(text, "python_gc_collections_total")
            assert sorted(dict(key)["generation"] for key in generations) == ["0", "1", "2"]
            assert samples(text, "python_gc_objects_collected_total")
            assert samples(text, "python_gc_objects_uncollectable_total")
            (info,) = samples(text, "python_info")
            assert dict(info)["implementation"] == "CPython" and dict(info)["major"] == "3"
            _, text = await get(url + "/probe", params={"site": "lib"})
            assert "python_gc_" not in text and "python_info" not in text

    asyncio.run(scenario())
