"""End to end with the real programs: two exporters (their serve command) probing local peers
(tdspool for SQL, a plain listener for an Odyssey partner, nginx with TLS for OCLC), a real
Prometheus loading the bundled rule files and scraping them with the README's own two scrape
configs (one exporter per vantage; many sites through /probe plus a health job), a real
Alertmanager running the example config's routes and inhibitions, and a webhook receiver
served by this test. It measures how long a closed SQL, Odyssey or OCLC path takes to reach
the pager. Then every query of the Grafana dashboard against that Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from .exporter_process import only_test_hosts
from .peers import Peer, free_port, need_binary, nginx_peer, prometheus_peer, tdspool_peer

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_RECEIVERS = ("illiad-pager", "illiad-tickets", "illiad-chat", "illiad-exporter-pager", "illiad-exporter-owner")
DASHBOARD = ROOT / "grafana" / "illiad-ports.json"
# The whole chain runs this many times faster than in production: the README's 60 s scrape and
# evaluation intervals become 4 s, every rule's `for:` and every Alertmanager wait shrink by
# the same factor. Only durations change; the rules, routes and scrape configs are the
# shipped ones (alerts/tests runs the rules at their real durations with promtool).
TIME_SCALE = 15
# What a page may take beyond the rule's `for:` plus two evaluation intervals: the webhook
# call and this test's own polling.
SLACK = 2.0
# The README's site names and exporter addresses, and what stands for them here.
SINGLE_SITE, HOSTED_SITE = "e2e-library", "e2e-hosted"
# Dashboard queries allowed to return nothing here, each with the reason.
MAY_BE_EMPTY: dict[tuple[str, str], str] = {
    ("Odyssey in", "A"): "inbound Odyssey is probed from outside and from staff PCs, not from the web server",
    ("Article Exchange", "A"): "disabled in this config",
    ("Targets not as expected, with the reason", "B"): "no path that must stay closed answers here",
}
# Queries of the hourly availability records: their group runs at its own offset in the hour,
# which a test of minutes may or may not reach.
MAY_BE_EITHER = {("Availability of the required paths", "B"), ("Availability of the required paths", "C")}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def scaled(duration: str) -> str:
    """A Prometheus duration (30s, 5m, 12h) divided by TIME_SCALE, in milliseconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)", duration).groups()  # type: ignore[union-attr]
    return f"{round(int(value) * units[unit] * 1000 / TIME_SCALE)}ms"


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)", duration).groups()  # type: ignore[union-attr]
    return int(value) * units[unit]


def production_for(alertname: str) -> str:
    """The shipped rule's `for:` (the first rule of that name)."""
    for group in yaml.safe_load((ROOT / "alerts" / "illiad-alerts.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alertname:
                return rule["for"]
    raise KeyError(alertname)


def scaled_rules(target: Path) -> list[Path]:
    """The bundled rule files with every `for:` divided by TIME_SCALE."""
    out = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        text, count = re.subn(r"(?m)^(\s+for:) (\S+)$", lambda m: f"{m.group(1)} {scaled(m.group(2))}", path.read_text())
        assert count or "- alert:" not in text, f"{path.name} has alerts but no for: to scale"
        copy = target / path.name
        copy.write_text(text)
        out.append(copy)
    return out


def alertmanager_config(target: Path, webhook_port: int, *, scale: bool = True) -> Path:
    """The example config, its receivers pointed at this test's webhook and its waits divided
    by TIME_SCALE (or cut to a second when not `scale`); routes and inhibit rules as shipped."""
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    config["global"] = {"resolve_timeout": scaled(config["global"]["resolve_timeout"])}
    for receiver in config["receivers"]:
        if receiver["name"] in WEBHOOK_RECEIVERS:
            name = receiver["name"]
            receiver.clear()
            receiver.update(name=name, webhook_configs=[
                {"url": f"http://127.0.0.1:{webhook_port}/{name}", "send_resolved": True}])

    def walk(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scaled(route[key]) if scale else ("1h" if key == "repeat_interval" else "1s")
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    path = target / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Each target host gets its own name (pinned by the hosts table, never looked up). The two
# Odyssey partners: partner-a on 127.0.0.2, where nothing listens (down all along), and
# partner-b on 127.0.0.1, the listener this test closes.
HOSTS = {"sql.e2e.test": "127.0.0.1", "partner-a.e2e.test": "127.0.0.2", "partner-b.e2e.test": "127.0.0.1",
         "oclc.e2e.test": "127.0.0.1", "update.e2e.test": "127.0.0.1", "closed.e2e.test": "127.0.0.1"}


def exporter_config(target: Path, *, site: str, probe_on_metrics: bool, sql_port: int, sql_fallback_port: int,
                    odyssey_port: int, https_port: int, ca_file: Path, refused_port: int) -> Path:
    """Seen from web_server: SQL on two ports where either will do (tdspool, and a refused
    fallback), Odyssey to two partners where either will do (one down all along), OCLC (nginx
    with TLS), the update server refused throughout (a page of the site already firing when
    the others close), and a port that must stay closed and is (refused)."""
    path = target / f"{site}.yml"
    pinned = ", ".join(f"{name}: [{address}]" for name, address in HOSTS.items())
    path.write_text(f"""
defaults: {{timeout: 600ms, system_resolver: false, hosts: {{{pinned}}}}}
exporter: {{scrape_timeout_offset: 100ms, probe_on_metrics: {str(probe_on_metrics).lower()}}}
sites:
  - name: {site}
    hosts: {{web_server: 127.0.0.1, sql_server: sql.e2e.test}}
    paths:
      sql: {{ports: [{sql_port}, {sql_fallback_port}], require: any}}
      odyssey_outbound: {{hosts: [partner-a.e2e.test, partner-b.e2e.test], port: {odyssey_port}, require: any}}
      oclc_webservices: {{host: oclc.e2e.test, port: {https_port}, ca_file: "{ca_file}", server_name: localhost}}
      atlas_update: {{host: update.e2e.test, port: {refused_port}}}
      article_exchange: {{enabled: false}}
    custom:
      - {{name: must_stay_closed, from: [web_server], host: closed.e2e.test, port: {refused_port}, expect: closed}}
""")
    return path


class Listener:
    """A plain loopback listener that can be closed and opened again on the same port (the
    Odyssey Manager's port: the odyssey prober only connects and closes)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None

    def start(self) -> Listener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.sock = sock
        return self

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def readme_scrape_configs() -> list[list[dict[str, Any]]]:
    """The `scrape_configs` of each YAML example in the README's "Prometheus scrape configs"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Prometheus scrape configs\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    configs = [yaml.safe_load(block)["scrape_configs"] for block in blocks]
    assert len(configs) == 2, "the README shows the single-target and the multi-target pattern"
    return configs


def prometheus_config(target: Path, *, rules: list[Path], single: str, hosted: str, alertmanager_port: int) -> Path:
    """The README's two scrape configs as printed, with its example addresses and site names
    replaced by this test's exporters and site, and its intervals divided by TIME_SCALE."""
    addresses = {"illiad-web.example.edu:9968": single, "illiad-exporter.example.net:9968": hosted,
                 "main-library": HOSTED_SITE}
    jobs = []
    for job in (job for config in readme_scrape_configs() for job in config):
        for key in ("scrape_interval", "scrape_timeout"):
            if key in job:
                job[key] = scaled(job[key])
        for static in job["static_configs"]:
            static["targets"] = [addresses[t] for t in static["targets"] if t in addresses]
        job["static_configs"] = [s for s in job["static_configs"] if s["targets"]]
        for relabel in job.get("relabel_configs", []):
            if relabel.get("replacement") in addresses:
                relabel["replacement"] = addresses[relabel["replacement"]]
        jobs.append(job)
    assert [j["job_name"] for j in jobs] == ["illiad-ports", "illiad-sites", "illiad-exporter"]
    path = target / "prometheus.yml"
    path.write_text(yaml.safe_dump({
        # Prometheus' defaults (1m scrape and evaluation, 10s timeout), scaled like the rest.
        "global": {"scrape_interval": scaled("1m"), "evaluation_interval": scaled("1m"),
                   "scrape_timeout": scaled("10s")},
        "rule_files": [str(r) for r in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": jobs,
    }))
    return path


class Webhook:
    """Alertmanager's webhook receiver: remembers every notification by receiver, with the
    time it arrived."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any], float]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append((request.match_info["receiver"], await request.json(), time.monotonic()))
        return web.Response(text="ok")

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        """Serves on a loopback port (yielded) until the block ends."""
        app = web.Application()
        app.router.add_post("/{receiver}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        finally:
            await runner.cleanup()

    def find(self, receiver: str, status: str, **labels: str) -> tuple[dict[str, Any], float] | None:
        """The first alert notified to `receiver` with that status and labels, and when."""
        for name, payload, at in self.notifications:
            if name != receiver:
                continue
            for alert in payload["alerts"]:
                if alert["status"] == status and all(alert["labels"].get(k) == v for k, v in labels.items()):
                    return alert, at
        return None

    def names(self, receiver: str, status: str = "firing") -> set[str]:
        return {a["labels"]["alertname"] for name, p, _ in self.notifications if name == receiver
                for a in p["alerts"] if a["status"] == status}


async def wait_for(what: str, check, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class PromAPI:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def get(self, endpoint: str, **params: str) -> Any:
        async with self.session.get(self.base + endpoint, params=params) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            raise AssertionError(f"{endpoint} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def value(self, expr: str) -> list[dict[str, Any]]:
        return (await self.get("/api/v1/query", query=expr))["result"]


def dashboard_queries() -> list[tuple[str, str, str, bool]]:
    """(panel title, refId, expr, instant) for every target of every panel."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["refId"], target["expr"], bool(target.get("instant"))))
    return out


# The pages this test causes: alert -> (path closed, receiver).
PAGES = {"IlliadSqlPathDown": "sql", "IlliadOdysseyPathDown": "odyssey_outbound",
         "IlliadOclcPathDown": "oclc_webservices"}
# The jobs of the README's scrape configs that carry path results, and their instance.
PATH_JOBS = ("illiad-ports", "illiad-sites")


def test_closed_sql_odyssey_and_oclc_page_within_for_plus_two_evaluations_with_the_readme_scrape_configs(
    tmp_path, server_cert,
):
    """SQL closes first; once it has paged, Odyssey (every partner) and OCLC close while the
    site's SQL page is firing. Each reaches the pager webhook
    within its rule's `for:` plus two evaluation intervals (+ SLACK), through both README
    scrape patterns; the figures are printed. One partner down all along, 1344 refused while
    1433 answers, a port closed as it should be, and the health job of the multi-target pattern
    never page. All resolve when the paths open again."""
    prometheus = need_binary("prometheus", "prometheus")
    alertmanager = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    (sql_port, sql_fallback_port, https_port, http_port, single_port, hosted_port, am_port,
     refused_port) = (free_port() for _ in range(8))
    odyssey = Listener()
    configs = {
        site: exporter_config(tmp_path, site=site, probe_on_metrics=probe_on_metrics, sql_port=sql_port,
                              sql_fallback_port=sql_fallback_port, odyssey_port=odyssey.port,
                              https_port=https_port, ca_file=server_cert.ca, refused_port=refused_port)
        for site, probe_on_metrics in ((SINGLE_SITE, True), (HOSTED_SITE, False))
    }
    instances = {"illiad-ports": (SINGLE_SITE, f"127.0.0.1:{single_port}"), "illiad-sites": (HOSTED_SITE, HOSTED_SITE)}
    evaluation = seconds(scaled("1m"))  # the README's 60 s (Prometheus' default evaluation interval)
    webhook = Webhook()
    figures: list[str] = []

    async def scenario() -> None:
        async with webhook.serving() as webhook_port:
            await run_chain(webhook_port)

    async def run_chain(webhook_port: int) -> None:
        am_dir, prom_dir = tmp_path / "alertmanager", tmp_path / "prometheus"
        am_dir.mkdir()
        prom_dir.mkdir()
        am = Peer([alertmanager, f"--config.file={alertmanager_config(am_dir, webhook_port)}",
                   f"--web.listen-address=127.0.0.1:{am_port}", f"--storage.path={am_dir}/data",
                   "--cluster.listen-address="], port=am_port, log=am_dir / "log")
        prom_config = prometheus_config(prom_dir, rules=scaled_rules(prom_dir), single=f"127.0.0.1:{single_port}",
                                        hosted=f"127.0.0.1:{hosted_port}", alertmanager_port=am_port)
        prom = prometheus_peer(prometheus, prom_config, "--rules.alert.resend-delay=1s")
        prom_port = prom.port
        for config in configs.values():
            only_test_hosts(config, "web_server")
        exporters = [Peer([sys.executable, "-m", "illiad_exporter", "serve", f"--config.file={configs[site]}",
                           "--vantage", "web_server", f"--web.listen-address=127.0.0.1:{port}"],
                          port=port, log=tmp_path / f"exporter-{site}.log")
                     for site, port in ((SINGLE_SITE, single_port), (HOSTED_SITE, hosted_port))]
        sql = tdspool_peer(tmp_path / "tdspool", sql_port)
        oclc = nginx_peer(tmp_path / "nginx", cert=server_cert.cert, key=server_cert.key, https_port=https_port,
                          http_port=http_port)
        started = time.time()
        with sql, odyssey, oclc, exporters[0], exporters[1], am, prom:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                api = PromAPI(session, f"http://127.0.0.1:{prom_port}")

                async def ready(url: str) -> bool:
                    async with session.get(url) as response:
                        return response.status == 200

                async def verdicts(value: float, paths: str) -> bool:
                    result = await api.value(f'illiad_path_expectation_met{{path=~"{paths}"}}')
                    want = len(paths.split("|")) * len(PATH_JOBS)
                    return len(result) == want and all(float(r["value"][1]) == value for r in result)

                async def paged(name: str, job: str, since: float) -> float | None:
                    site, instance = instances[job]
                    found = webhook.find("illiad-pager", "firing", alertname=name, job=job, site=site,
                                         instance=instance)
                    return found[1] - since if found and found[1] >= since else None

                await wait_for("Prometheus ready", lambda: ready(f"http://127.0.0.1:{prom_port}/-/ready"), 30)
                await wait_for("Alertmanager ready", lambda: ready(f"http://127.0.0.1:{am_port}/-/ready"), 30)
                await wait_for("both scrape patterns to show SQL, Odyssey out and OCLC met",
                               lambda: verdicts(1.0, "sql|odyssey_outbound|oclc_webservices"), 30)

                async def close(name: str, peer: Any) -> float:
                    before = time.monotonic()
                    peer.stop()
                    closed = time.monotonic()
                    figures.append(f"{name}: closing took {closed - before:.2f} s")
                    return closed

                async def expect_pages(name: str, closed: float) -> None:
                    bound = seconds(scaled(production_for(name))) + 2 * evaluation + SLACK
                    for job in PATH_JOBS:
                        took = await wait_for(f"{name} ({job}) at the pager", lambda: paged(name, job, closed),
                                              bound + 30)
                        figures.append(f"{name} via {job}: {took:.2f} s from closing to the pager webhook "
                                       f"(for: {scaled(production_for(name))}, evaluation {evaluation:g} s, "
                                       f"bound {bound:.2f} s; x{TIME_SCALE}: {took * TIME_SCALE / 60:.1f} min "
                                       f"against for: {production_for(name)} + 2 min)")
                        assert took <= bound, figures[-1]

                # SQL first; then Odyssey and OCLC, while the SQL pages of both sites fire (and,
                # before OCLC's page, the update server's: it is refused all along).
                closed = await close("SQL", sql)
                await expect_pages("IlliadSqlPathDown", closed)
                odyssey_closed = await close("Odyssey", odyssey)
                oclc_closed = await close("OCLC", oclc)
                await asyncio.gather(expect_pages("IlliadOdysseyPathDown", odyssey_closed),
                                     expect_pages("IlliadOclcPathDown", oclc_closed))
                print("\n".join(["", *figures]))

                for name, path in PAGES.items():
                    for job in PATH_JOBS:
                        alert, _ = webhook.find("illiad-pager", "firing", alertname=name, job=job)  # type: ignore[misc]
                        site, instance = instances[job]
                        # the README's single-target config labels its target with the role
                        role = {"role": "web_server"} if job == "illiad-ports" else {}
                        assert alert["labels"] == {"alertname": name, "severity": "critical", "site": site,
                                                   "vantage": "web_server", "path": path, "required": "true",
                                                   "job": job, "instance": instance, **role}
                        assert "(refused)" in alert["annotations"]["description"]
                        assert alert["annotations"]["runbook_url"].endswith("#" + name.lower())
                sql_alert, _ = webhook.find("illiad-pager", "firing", alertname="IlliadSqlPathDown")  # type: ignore[misc]
                assert f"sql.e2e.test:{sql_port} (refused)" in sql_alert["annotations"]["description"]
                assert f"sql.e2e.test:{sql_fallback_port} (refused)" in sql_alert["annotations"]["description"]
                # Nothing else paged: not the partner down all along, not 1344 refused while 1433
                # answered, not the closed port, not the hosts (they refuse: reachable), not the
                # health job of the multi-target pattern.
                assert webhook.names("illiad-pager") == {*PAGES, "IlliadUpdatePathDown"}
                assert webhook.names("illiad-exporter-pager") == set()
                for name in ("IlliadExporterProbesNothing", "IlliadHostUnreachable", "IlliadClosedPathOpen",
                             "IlliadPathFlapping", "IlliadExporterDown"):
                    seen = await api.get("/api/v1/query_range", query=f'ALERTS{{alertname="{name}"}}',
                                         start=str(started), end=str(time.time()), step="1")
                    assert seen["result"] == [], f"{name} was pending or firing: {seen['result']}"
                planned = await api.value('illiad_exporter_planned_targets{job="illiad-exporter"}')
                assert planned and float(planned[0]["value"][1]) >= 5

                for peer in (sql, odyssey, oclc):  # and open again
                    peer.start()
                await wait_for("both scrape patterns to show the three paths met again",
                               lambda: verdicts(1.0, "sql|odyssey_outbound|oclc_webservices"), 30)

                async def resolved() -> bool:
                    return all(webhook.find("illiad-pager", "resolved", alertname=name, job=job)
                               for name in PAGES for job in PATH_JOBS)

                await wait_for("the pages resolved at the pager", resolved, 30)
                await check_dashboard_queries(api, started, sites={SINGLE_SITE, HOSTED_SITE})
                await check_dashboard_shows_the_verdict(api, sql_ports={sql_port, sql_fallback_port})

    asyncio.run(scenario())


async def check_dashboard_queries(api: PromAPI, started: float, *, sites: set[str], settle: float = 20.0) -> None:
    """Every dashboard query, with the variables as Grafana would fill them (their own
    label_values queries, All selected), evaluated as instant or range query like its panel.
    An error fails at once; an empty answer is asked again until `settle` seconds pass, as
    series that came back with a reopened path reach the recording rules a second later."""
    known = await api.get("/api/v1/label/site/values", **{"match[]": "illiad_path_info"})
    assert sites <= set(known)
    vantages = await api.get("/api/v1/label/vantage/values",
                             **{"match[]": f'illiad_path_info{{site=~"{"|".join(known)}"}}'})
    assert vantages == ["web_server"]
    variables = {"$site": "(" + "|".join(known) + ")", "$vantage": "(" + "|".join(vantages) + ")"}
    queries = dashboard_queries()
    assert len(queries) >= 20
    deadline = time.monotonic() + settle
    while True:
        now = time.time()
        empty, unexpected = [], []
        for title, ref, expr, instant in queries:
            query = expr
            span = max(1, int(now - started))  # Grafana's range built-ins, for the dashboard's range
            for name, value in {"$__range_s": str(span), "$__range": f"{span}s", **variables}.items():
                query = query.replace(name, value)
            assert "$" not in query, f"{title}: unsubstituted variable in {query}"
            if instant:
                result = (await api.get("/api/v1/query", query=query, time=str(now)))["result"]
            else:
                result = (await api.get("/api/v1/query_range", query=query, start=str(started), end=str(now),
                                        step="1"))["result"]
            if (title, ref) in MAY_BE_EITHER:
                continue
            if not result and (title, ref) not in MAY_BE_EMPTY:
                empty.append(f"{title} ({ref}): no data for {query}")
            if result and (title, ref) in MAY_BE_EMPTY:
                unexpected.append(f"{title} ({ref}): data although {MAY_BE_EMPTY[title, ref]}")
        if not empty or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert not empty, "\n".join(empty)
    assert not unexpected, "\n".join(unexpected)


def panel_query(title: str, ref: str = "A") -> str:
    """A dashboard query with every site and vantage selected."""
    expr = next(e for t, r, e, _ in dashboard_queries() if t == title and r == ref)
    return expr.replace("$site", ".*").replace("$vantage", ".*")


async def check_dashboard_shows_the_verdict(api: PromAPI, *, sql_ports: set[int]) -> None:
    """With the paths open again and the update server still refused: the checklist cells
    and the matrix carry the path verdict, the failing lists hold the update server only
    (never the port closed as it should be, nor 1344 refused while 1433 answers), and the
    targets table has one row per port of the SQL path."""
    cells = {r["metric"].get("vantage"): float(r["value"][1]) for r in await api.value(panel_query("SQL Server"))}
    assert cells == {"web_server": 1.0}
    cells = {r["metric"].get("vantage"): float(r["value"][1]) for r in await api.value(panel_query("Vendor update"))}
    assert cells == {"web_server": 0.0}
    matrix = {(r["metric"]["site"], r["metric"]["path"]): float(r["value"][1])
              for r in await api.value(panel_query("Path matrix"))}
    for site in (SINGLE_SITE, HOSTED_SITE):
        assert matrix[site, "must_stay_closed"] in (1.0, 3.0), "closed as it should be: met"
        assert matrix[site, "sql"] == 1.0 and matrix[site, "atlas_update"] == 0.0
    failing = {(r["metric"]["site"], r["metric"]["path"]) for r in await api.value(panel_query("Paths failing now"))}
    assert failing == {(SINGLE_SITE, "atlas_update"), (HOSTED_SITE, "atlas_update")}
    not_met = {(r["metric"]["path"], r["metric"]["port"])
               for r in await api.value(panel_query("Targets not as expected, with the reason"))}
    assert {path for path, _ in not_met} == {"atlas_update", "sql", "odyssey_outbound"}, not_met
    assert ("must_stay_closed", ) not in {(p, ) for p, _ in not_met}
    targets = {(r["metric"]["site"], r["metric"]["path"], r["metric"]["host"], r["metric"]["port"])
               for r in await api.value(panel_query("Targets"))}
    for site in (SINGLE_SITE, HOSTED_SITE):
        assert {port for s, p, _, port in targets if s == site and p == "sql"} == {str(p) for p in sql_ports}
        assert {host for s, p, host, _ in targets if s == site and p == "odyssey_outbound"} == {
            "partner-a.e2e.test", "partner-b.e2e.test"}


def test_the_example_inhibitions_hold_back_alerts_under_a_dead_exporter_and_flapping_under_an_outage(tmp_path):
    """Alerts posted straight to a real Alertmanager running the example config: the path
    alerts of a dead exporter, a path's flapping alert while the same path is down, the
    per-target view of an exporter shortage its counter already reports, and a certificate's
    warning under its critical are suppressed and never notified; the others go out, a host
    being unreachable holding back none of them."""
    alertmanager = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    am_port = free_port()
    webhook = Webhook()
    site = {"site": SINGLE_SITE, "vantage": "external", "job": "illiad-ext", "instance": "outside:9968"}
    web = {**site, "path": "web_https", "required": "true"}
    alerts = {
        "exporter-down": {"alertname": "IlliadExporterDown", "severity": "critical", "owner": "exporter",
                          "job": "illiad-ports", "instance": "illiad-web:9968"},
        "its-sql": {"alertname": "IlliadSqlPathDown", "severity": "critical", "job": "illiad-ports",
                    "instance": "illiad-web:9968", "site": SINGLE_SITE, "vantage": "web_server", "path": "sql",
                    "required": "true"},
        "host-down": {"alertname": "IlliadHostUnreachable", "severity": "warning", **site,
                      "host": "illiad.example.edu"},
        "its-web": {"alertname": "IlliadPublicWebDown", "severity": "critical", **web},
        "its-web-flapping": {"alertname": "IlliadPathFlapping", "severity": "critical", **web},
        "odyssey-flapping": {"alertname": "IlliadPathFlapping", "severity": "critical", **site, "path": "odyssey",
                             "required": "true"},
        "its-open-rdp": {"alertname": "IlliadClosedPathOpen", "severity": "critical", **site, "path": "rdp",
                         "required": "false"},
        "cannot-run": {"alertname": "IlliadExporterCannotRunProbes", "severity": "critical", "owner": "exporter",
                       "job": "illiad-sites", "instance": "law-library", "cause": "no_slot"},
        "probe-failing": {"alertname": "IlliadExporterProbeFailing", "severity": "critical", "owner": "exporter",
                          "job": "illiad-sites", "instance": "law-library"},
        "cert-7d": {"alertname": "IlliadTlsCertExpiring", "severity": "critical", **site, "path": "web_https",
                    "host": "illiad.example.edu", "port": "443", "expect": "open"},
        "cert-21d": {"alertname": "IlliadTlsCertExpiring", "severity": "warning", **site, "path": "web_https",
                     "host": "illiad.example.edu", "port": "443", "expect": "open"},
    }
    suppressed = {"its-sql", "its-web-flapping", "probe-failing", "cert-21d"}

    async def scenario() -> None:
        async with webhook.serving() as webhook_port:
            await run_alertmanager(webhook_port)

    async def run_alertmanager(webhook_port: int) -> None:
        am = Peer([alertmanager, f"--config.file={alertmanager_config(tmp_path, webhook_port, scale=False)}",
                   f"--web.listen-address=127.0.0.1:{am_port}", f"--storage.path={tmp_path}/data",
                   "--cluster.listen-address="], port=am_port, log=tmp_path / "log")
        base = f"http://127.0.0.1:{am_port}/api/v2/alerts"
        with am:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async def posted() -> bool:
                    body = [{"labels": labels, "annotations": {"summary": key}} for key, labels in alerts.items()]
                    async with session.post(base, json=body) as response:
                        return response.status == 200

                await wait_for("Alertmanager to take the alerts", posted, 20)

                async def states() -> dict[str, str] | None:
                    async with session.get(base) as response:
                        listed = await response.json()
                    got = {a["annotations"]["summary"]: a["status"]["state"] for a in listed}
                    return got if len(got) == len(alerts) else None

                got = await wait_for("Alertmanager to list every alert", states, 20)
                assert got == {key: "suppressed" if key in suppressed else "active" for key in alerts}

                async def all_notified() -> bool:
                    keys = {a["annotations"]["summary"] for _, p, _ in webhook.notifications for a in p["alerts"]}
                    return keys >= set(alerts) - suppressed

                await wait_for("notifications of the active alerts", all_notified, 20)
                await asyncio.sleep(2)  # a late notification of a suppressed alert would show by now
                notified = {(receiver, a["annotations"]["summary"]) for receiver, p, _ in webhook.notifications
                            for a in p["alerts"]}
                assert {key for _, key in notified} == set(alerts) - suppressed
                assert {receiver for receiver, _ in notified} == {"illiad-pager", "illiad-exporter-pager",
                                                                  "illiad-tickets"}
                assert ("illiad-exporter-pager", "exporter-down") in notified
                assert ("illiad-tickets", "host-down") in notified

    asyncio.run(scenario())
