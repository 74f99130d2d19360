"""End to end with the real programs: the exporter (its serve command) probing local peers,
a real Prometheus loading the bundled rule files and scraping it every second, a real
Alertmanager running the example config's routes and inhibitions, and a webhook receiver
served by this test. Then every query of the Grafana dashboard against that Prometheus."""

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

from .peers import Peer, free_port, need_binary, nginx_peer, tdspool_peer

ROOT = Path(__file__).resolve().parent.parent
SITE = "e2e-library"
WEBHOOK_RECEIVERS = ("illiad-pager", "illiad-tickets", "illiad-chat")
DASHBOARD = ROOT / "grafana" / "illiad-ports.json"
# Dashboard queries allowed to return nothing here, each with the reason. None: this run keeps
# one path down (atlas_update) so the "failing now" and "alerts firing" panels have data too.
MAY_BE_EMPTY: dict[str, str] = {}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def short_rules(target: Path) -> list[Path]:
    """The bundled rule files with every `for:` cut to 2 s, so an alert fires within seconds;
    alerts/tests (promtool) covers the real durations."""
    out = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        text, count = re.subn(r"(?m)^(\s+for:) \S+$", r"\1 2s", path.read_text())
        assert count or "recording" in path.name
        copy = target / path.name
        copy.write_text(text)
        out.append(copy)
    return out


def alertmanager_config(target: Path, webhook_port: int) -> Path:
    """The example config, its receivers pointed at this test's webhook and its waits cut to
    a second; routes and inhibit rules stay as shipped."""
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    config["global"] = {"resolve_timeout": "10s"}
    for receiver in config["receivers"]:
        if receiver["name"] in WEBHOOK_RECEIVERS:
            name = receiver["name"]
            receiver.clear()
            receiver.update(name=name, webhook_configs=[
                {"url": f"http://127.0.0.1:{webhook_port}/{name}", "send_resolved": True}])
    route = next(r for r in config["route"]["routes"] if 'alertname=~"Illiad.+"' in r["matchers"])
    route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for child in route["routes"]:
        child.pop("repeat_interval", None)
    path = target / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Each target host gets its own name (pinned to loopback by the hosts table, never looked up),
# so closing one path never makes a host "wholly unreachable", which would inhibit its alert.
HOSTS = {"sql_server": "sql.e2e.test", "external": "partner.e2e.test", "oclc": "oclc.e2e.test",
         "update": "update.e2e.test"}


def exporter_config(target: Path, *, sql_port: int, odyssey_port: int, https_port: int, ca_file: Path,
                    refused_port: int) -> Path:
    """Seen from web_server: SQL (tdspool), Odyssey (a listener), OCLC (nginx with TLS), and
    the update server refused throughout, so some panels show a failing path."""
    path = target / "illiad.yml"
    pinned = ", ".join(f"{name}: [127.0.0.1]" for name in HOSTS.values())
    path.write_text(f"""
defaults: {{timeout: 800ms, system_resolver: false, hosts: {{{pinned}}}}}
exporter: {{scrape_timeout_offset: 100ms}}
sites:
  - name: {SITE}
    hosts: {{web_server: 127.0.0.1, sql_server: {HOSTS["sql_server"]}, external: {HOSTS["external"]}}}
    paths:
      sql: {{port: {sql_port}}}
      odyssey_outbound: {{port: {odyssey_port}}}
      oclc_webservices: {{host: {HOSTS["oclc"]}, port: {https_port}, ca_file: "{ca_file}", server_name: localhost}}
      atlas_update: {{host: {HOSTS["update"]}, port: {refused_port}}}
      article_exchange: {{enabled: false}}
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


def prometheus_config(target: Path, *, rules: list[Path], exporter_port: int, alertmanager_port: int) -> Path:
    path = target / "prometheus.yml"
    path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(r) for r in rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [{"job_name": "illiad-ports", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
    }))
    return path


class Webhook:
    """Alertmanager's webhook receiver: remembers every notification by receiver."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append((request.match_info["receiver"], await request.json()))
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

    def find(self, receiver: str, status: str, **labels: str) -> dict[str, Any] | None:
        for name, payload in self.notifications:
            if name != receiver:
                continue
            for alert in payload["alerts"]:
                if alert["status"] == status and all(alert["labels"].get(k) == v for k, v in labels.items()):
                    return alert
        return None


async def wait_for(what: str, check, timeout: float, interval: float = 0.5):
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

    async def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.base + endpoint, params=params) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            raise AssertionError(f"{endpoint} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def value(self, expr: str) -> list[dict[str, Any]]:
        return (await self.get("/api/v1/query", query=expr))["result"]


def dashboard_queries() -> list[tuple[str, str, bool]]:
    """(panel title, expr, instant) for every target of every panel."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], bool(target.get("instant"))))
    return out


def test_closed_sql_odyssey_and_oclc_paths_notify_through_alertmanager_resolve_and_feed_the_dashboard(
    tmp_path, server_cert,
):
    """SQL, Odyssey and OCLC close together: the SQL and Odyssey alerts reach the pager, the
    OCLC one the ticket receiver, each with its labels; all resolve when the paths open
    again. The rule files run with every `for:` cut to 2 s (see short_rules)."""
    prometheus = need_binary("prometheus", "prometheus")
    alertmanager = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    sql_port, https_port, http_port, exporter_port, am_port, prom_port, refused_port = (
        free_port() for _ in range(7))
    odyssey = Listener()
    config = exporter_config(tmp_path, sql_port=sql_port, odyssey_port=odyssey.port, https_port=https_port,
                             ca_file=server_cert.ca, refused_port=refused_port)
    webhook = Webhook()
    expected = {  # alertname -> (receiver, path, host, port)
        "IlliadSqlPathDown": ("illiad-pager", "sql", HOSTS["sql_server"], sql_port),
        "IlliadOdysseyPathDown": ("illiad-pager", "odyssey_outbound", HOSTS["external"], odyssey.port),
        "IlliadOclcPathDown": ("illiad-tickets", "oclc_webservices", HOSTS["oclc"], https_port),
    }

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
        prom_config = prometheus_config(prom_dir, rules=short_rules(prom_dir), exporter_port=exporter_port,
                                        alertmanager_port=am_port)
        prom = Peer([prometheus, f"--config.file={prom_config}", f"--web.listen-address=127.0.0.1:{prom_port}",
                     f"--storage.tsdb.path={prom_dir}/data", "--rules.alert.resend-delay=1s"],
                    port=prom_port, log=prom_dir / "log")
        exporter = Peer([sys.executable, "-m", "illiad_exporter", "serve", f"--config.file={config}",
                         "--vantage", "web_server", f"--web.listen-address=127.0.0.1:{exporter_port}"],
                        port=exporter_port, log=tmp_path / "exporter.log")
        sql = tdspool_peer(tmp_path / "tdspool", sql_port)
        oclc = nginx_peer(tmp_path / "nginx", cert=server_cert.cert, key=server_cert.key, https_port=https_port,
                          http_port=http_port)
        paths = (sql, odyssey, oclc)
        started = time.time()
        with sql, odyssey, oclc, exporter, am, prom:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                api = PromAPI(session, f"http://127.0.0.1:{prom_port}")

                async def ready(url: str) -> bool:
                    async with session.get(url) as response:
                        return response.status == 200

                async def paths_up(value: float) -> bool:
                    result = await api.value(f'illiad_port_up{{site="{SITE}", path=~"sql|odyssey_outbound|oclc_webservices"}}')
                    return len(result) == 3 and all(float(r["value"][1]) == value for r in result)

                def notified(status: str):
                    async def check() -> bool:
                        return all(webhook.find(receiver, status, alertname=name)
                                   for name, (receiver, *_) in expected.items())
                    return check

                await wait_for("Prometheus ready", lambda: ready(f"http://127.0.0.1:{prom_port}/-/ready"), 30)
                await wait_for("Alertmanager ready", lambda: ready(f"http://127.0.0.1:{am_port}/-/ready"), 30)
                await wait_for("Prometheus to see the three paths up", lambda: paths_up(1.0), 30)

                for peer in paths:  # the paths close
                    peer.stop()
                await wait_for("Prometheus to see the three paths down", lambda: paths_up(0.0), 20)
                await wait_for("the three alerts at their receivers", notified("firing"), 30)
                for name, (receiver, path, host, port) in expected.items():
                    alert = webhook.find(receiver, "firing", alertname=name)
                    assert alert is not None
                    assert alert["labels"] == {
                        "alertname": name, "severity": "critical" if receiver == "illiad-pager" else "warning",
                        "site": SITE, "vantage": "web_server", "path": path, "host": host, "port": str(port),
                        "expect": "open", "job": "illiad-ports", "instance": f"127.0.0.1:{exporter_port}",
                    }
                    assert "Reason: refused." in alert["annotations"]["description"]
                    assert alert["annotations"]["runbook_url"].endswith("#" + name.lower())
                    other = "illiad-tickets" if receiver == "illiad-pager" else "illiad-pager"
                    assert webhook.find(other, "firing", alertname=name) is None, f"{name} also went to {other}"
                assert webhook.find("illiad-pager", "firing", alertname="IlliadHostUnreachable") is None

                for peer in paths:  # and open again
                    peer.start()
                await wait_for("Prometheus to see the three paths up again", lambda: paths_up(1.0), 20)
                await wait_for("the three alerts resolved at their receivers", notified("resolved"), 30)

                async def ticketed():  # the update server was refused throughout: a ticket
                    return webhook.find("illiad-tickets", "firing", alertname="IlliadUpdatePathDown")

                await wait_for("IlliadUpdatePathDown at the ticket webhook", ticketed, 20)
                await check_dashboard_queries(api, started)

    asyncio.run(scenario())


async def check_dashboard_queries(api: PromAPI, started: float, *, settle: float = 20.0) -> None:
    """Every dashboard query, with the variables as Grafana would fill them (their own
    label_values queries, All selected), evaluated as instant or range query like its panel.
    An error fails at once; an empty answer is asked again until `settle` seconds pass, as
    series that came back with a reopened path reach the recording rules a second later."""
    sites = await api.get("/api/v1/label/site/values", **{"match[]": "illiad_path_info"})
    assert SITE in sites
    vantages = await api.get("/api/v1/label/vantage/values", **{"match[]": f'illiad_path_info{{site=~"{SITE}"}}'})
    assert vantages == ["web_server"]
    variables = {"$site": "(" + "|".join(sites) + ")", "$vantage": "(" + "|".join(vantages) + ")"}
    queries = dashboard_queries()
    assert len(queries) >= 15
    deadline = time.monotonic() + settle
    while True:
        now = time.time()
        empty = []
        for title, expr, instant in queries:
            query = expr
            for name, value in variables.items():
                query = query.replace(name, value)
            assert "$" not in query, f"{title}: unsubstituted variable in {query}"
            if instant:
                result = (await api.get("/api/v1/query", query=query, time=str(now)))["result"]
            else:
                result = (await api.get("/api/v1/query_range", query=query, start=str(started), end=str(now),
                                        step="1"))["result"]
            if not result and title not in MAY_BE_EMPTY:
                empty.append(f"{title}: no data for {query}")
        if not empty or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert not empty, "\n".join(empty)


def test_the_example_inhibitions_hold_back_path_alerts_under_a_dead_exporter_or_an_unreachable_host(tmp_path):
    """Alerts posted straight to a real Alertmanager running the example config: the path
    alerts of a dead exporter, the per-port alerts of an unreachable host and a certificate's
    warning under its critical are suppressed and never notified; the others go out."""
    alertmanager = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    am_port = free_port()
    webhook = Webhook()
    web_labels = {"site": SITE, "vantage": "external", "job": "illiad-ext", "instance": "outside:9968",
                  "host": "illiad.example.edu"}
    path = {"path": "web_https", "port": "443", "expect": "open"}
    alerts = {
        "exporter-down": {"alertname": "IlliadExporterDown", "severity": "critical", "job": "illiad-ports",
                          "instance": "illiad-web:9968"},
        "its-sql": {"alertname": "IlliadSqlPathDown", "severity": "critical", "job": "illiad-ports",
                    "instance": "illiad-web:9968", "site": SITE, "vantage": "web_server", "path": "sql",
                    "host": "sql.example.edu", "port": "1433", "expect": "open"},
        "host-down": {"alertname": "IlliadHostUnreachable", "severity": "critical", **web_labels},
        "its-web": {"alertname": "IlliadPublicWebDown", "severity": "critical", **web_labels, **path},
        "its-open-rdp": {"alertname": "IlliadClosedPathOpen", "severity": "critical", **web_labels,
                         "path": "rdp", "port": "3389", "expect": "closed"},
        "other-host": {"alertname": "IlliadOdysseyPathDown", "severity": "critical", **web_labels,
                       "host": "partner.example.org", "path": "odyssey", "port": "7968", "expect": "open"},
        "cert-7d": {"alertname": "IlliadTlsCertExpiring", "severity": "critical", **web_labels, **path},
        "cert-21d": {"alertname": "IlliadTlsCertExpiring", "severity": "warning", **web_labels, **path},
    }
    suppressed = {"its-sql", "its-web", "cert-21d"}

    async def scenario() -> None:
        async with webhook.serving() as webhook_port:
            await run_alertmanager(webhook_port)

    async def run_alertmanager(webhook_port: int) -> None:
        am = Peer([alertmanager, f"--config.file={alertmanager_config(tmp_path, webhook_port)}",
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
                    keys = {a["annotations"]["summary"] for _, p in webhook.notifications for a in p["alerts"]}
                    return keys >= set(alerts) - suppressed

                await wait_for("notifications of the active alerts", all_notified, 20)
                await asyncio.sleep(2)  # a late notification of a suppressed alert would show by now
                notified = {(receiver, a["annotations"]["summary"]) for receiver, p in webhook.notifications
                            for a in p["alerts"]}
                assert {key for _, key in notified} == set(alerts) - suppressed
                assert {receiver for receiver, _ in notified} == {"illiad-pager"}

    asyncio.run(scenario())
