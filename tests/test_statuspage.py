"""The status page at /: the latest results as self-contained HTML, rendered by a real
headless Chromium, and never a probe of its own."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from illiad_exporter import statuspage
from illiad_exporter.catalog import Expect, Require
from illiad_exporter.probers import ProbeResult, Reason
from illiad_exporter.scrape import Outcome

from .peers import free_port, need_binary
from .probing import make_target
from .test_server import get, running

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


class Rows(HTMLParser):
    """Collects the data-* attributes of the page's path rows and matrix cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.paths: list[dict[str, str]] = []
        self.cells: list[dict[str, str]] = []
        self.summary: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-state" in a:
            self.rows.append(a)
        if tag == "tr" and "data-verdict" in a:
            self.paths.append(a)
        if "data-matrix-path" in a:
            self.cells.append({"path": a["data-matrix-path"], "site": a["data-matrix-site"], "class": a["class"]})
        if a.get("id") == "summary":
            self.summary = a.get("data-summary")
        if tag in ("script", "img", "iframe", "object") or (tag == "link" and a.get("rel") == "stylesheet"):
            self.external.append(tag)
        if "src" in a or "srcset" in a:
            self.external.append(tag)


def parse(page: str) -> Rows:
    rows = Rows()
    rows.feed(page)
    return rows


def by_path(rows: Rows) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["data-site"], r["data-path"]): r for r in rows.rows}


def verdicts(rows: Rows) -> dict[tuple[str, str], tuple[str, str]]:
    """(site, path) -> (the path's verdict, whether it is required), from the path rows."""
    return {(r["data-verdict-site"], r["data-verdict-path"]): (r["data-verdict"], r["data-required"])
            for r in rows.paths}


class CountingListener:
    """A loopback listener that accepts, holds and counts every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def count(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return len(self.accepted)
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    counting = CountingListener()
    try:
        yield counting
    finally:
        counting.close()


def write_config(path: Path, *, open_port: int, closed_port: int, https_port: int, ca_file: Path) -> Path:
    """Two sites seen from web_server: every state the page can show."""
    path.write_text(f"""
defaults: {{timeout: 2s, system_resolver: false, hosts: {{"<b>evil": [127.0.0.1]}}}}
sites:
  - name: main-library
    hosts: {{web_server: 127.0.0.1, sql_server: 127.0.0.1, external: 127.0.0.1}}
    paths:
      sql: {{port: {open_port}, prober: tcp}}
      oclc_webservices: {{host: 127.0.0.1, port: {https_port}, ca_file: "{ca_file}", server_name: localhost}}
      atlas_update: {{host: 127.0.0.1, port: {closed_port}}}
      article_exchange: {{enabled: false}}
      odyssey_outbound: {{hosts: [127.0.0.1], port: {open_port}}}
    custom:
      - {{name: sql_exposed, from: [web_server], host: 127.0.0.1, port: {open_port}, expect: closed}}
      - {{name: rdp_closed, from: [web_server], host: 127.0.0.1, port: {closed_port}, expect: closed}}
  - name: law-library
    hosts: {{web_server: 127.0.0.1, sql_server: "<b>evil"}}
    paths:
      sql: {{port: {closed_port}, prober: tcp}}
      oclc_webservices: {{enabled: false}}
      atlas_update: {{enabled: false}}
      article_exchange: {{enabled: false}}
""")
    return path


EXPECTED = {
    ("main-library", "sql"): ("up", "true"),
    ("main-library", "oclc_webservices"): ("up", "true"),
    ("main-library", "atlas_update"): ("down", "false"),
    ("main-library", "odyssey_outbound"): ("up", "true"),
    ("main-library", "sql_exposed"): ("open", "false"),
    ("main-library", "rdp_closed"): ("closed", "true"),
    ("law-library", "sql"): ("down", "false"),
}
# the same, path by path (each path here has one target), and whether the path is required
EXPECTED_PATHS = {
    ("main-library", "sql"): ("met", "true"),
    ("main-library", "oclc_webservices"): ("met", "true"),
    ("main-library", "atlas_update"): ("failed", "true"),
    ("main-library", "odyssey_outbound"): ("met", "true"),
    ("main-library", "sql_exposed"): ("failed", "true"),
    ("main-library", "rdp_closed"): ("met", "true"),
    ("law-library", "sql"): ("failed", "true"),
}


def test_before_any_scrape_the_page_lists_every_path_as_not_probed_and_probes_nothing(tmp_path, listener, nginx):
    port = listener.port

    async def scenario():
        config = write_config(tmp_path / "c.yml", open_port=port, closed_port=free_port(),
                              https_port=nginx.https_port, ca_file=nginx.certs.ca)
        async with running(config) as (url, _):
            status, page = await get(url + "/")
            await get(url + "/")
            return status, page

    status, page = asyncio.run(scenario())
    assert status == 200
    rows = parse(page)
    assert rows.summary == "unprobed" and "No scrape yet" in page
    assert {(r["data-site"], r["data-path"]) for r in rows.rows} == set(EXPECTED)
    assert {r["data-state"] for r in rows.rows} == {"unprobed"}
    assert set(verdicts(rows).values()) == {("unprobed", "true")}
    assert listener.count() == 0


def test_the_page_shows_the_latest_scrape_and_a_page_view_never_probes(tmp_path, nginx, listener):
    """Three page views after one scrape: the listener sees the scrape's connections only."""

    async def scenario():
        config = write_config(tmp_path / "c.yml", open_port=listener.port, closed_port=free_port(),
                              https_port=nginx.https_port, ca_file=nginx.certs.ca)
        async with running(config) as (url, _):
            await get(url + "/metrics")
            await asyncio.sleep(0.2)
            after_scrape = listener.count()
            pages = [(await get(url + "/"))[1] for _ in range(3)]
            await asyncio.sleep(0.2)
            return after_scrape, listener.count(), pages[-1]

    after_scrape, after_pages, page = asyncio.run(scenario())
    assert after_scrape == 3  # sql, odyssey_outbound and sql_exposed all point at the listener
    assert after_pages == after_scrape
    rows = parse(page)
    assert {k: (r["data-state"], r["data-met"]) for k, r in by_path(rows).items()} == EXPECTED
    assert verdicts(rows) == EXPECTED_PATHS
    assert rows.summary == "failing" and "3 of 7 probed paths are NOT as expected (3 required)." in page
    # each path's one line of impact, from the catalog
    assert ("If closed: Staff clients and the web server cannot reach the ILLiad database: no request can be "
            "processed.") in page
    assert by_path(rows)[("main-library", "atlas_update")]["data-port"]
    assert "<b>refused</b>" in page
    assert re.search(r"\d{4}-\d\d-\d\d \(\d+ days\)", page), "the nginx certificate's expiry is shown"
    assert {(c["site"], c["path"]): c["class"] for c in rows.cells}[("law-library", "sql")] == "state bad req"


def test_everything_from_config_and_probes_is_escaped():
    target = make_target("tcp", 1, host="<b>evil", path_id="sql", site="lib", expect=Expect.OPEN)
    result = ProbeResult()
    result.fail(Reason.PROTOCOL, "<script>alert('x')</script> & more")
    page = statuspage.render(
        targets_by_site={"lib": (target,)}, outcomes_by_site={"lib": [Outcome(target, result, time.time())]},
        vantage="web_server", version="1<2", now=time.time(), reload_error="bad <key>",
    )
    assert "<script>" not in page and "<b>evil" not in page and "bad <key>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&lt;b&gt;evil" in page and "1&lt;2" in page and "bad &lt;key&gt;" in page
    assert parse(page).external == []


# -- in a real browser ----------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-proxy-server", "--dns-prefetch-disable",
    # Nothing but loopback, and no name lookups at all.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


async def chromium(binary: str, *args: str, timeout: float = 60.0) -> str:
    """Runs headless Chromium with a fresh profile; stopped by its own process group."""
    with tempfile.TemporaryDirectory(prefix="illiad-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
        return out.decode()


def rendered_status_page(config: Path, binary: str, screenshot: Path) -> str:
    """Scrape once (the page shows the latest results), then the status page's DOM as
    headless Chromium renders it; its screenshot goes to ``screenshot``."""

    async def scenario() -> str:
        async with running(config) as (url, _):
            await get(url + "/metrics")
            dom = await chromium(binary, "--dump-dom", url + "/")
            await chromium(binary, f"--screenshot={screenshot}", "--window-size=1280,900", "--hide-scrollbars",
                           url + "/")
            return dom

    return asyncio.run(scenario())


@pytest.mark.peer("chromium")
def test_headless_chromium_renders_each_paths_state_and_saves_a_screenshot(tmp_path, nginx, listener):
    binary = need_binary("chromium", "chromium")
    port = listener.port
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    config = write_config(tmp_path / "c.yml", open_port=port, closed_port=free_port(),
                          https_port=nginx.https_port, ca_file=nginx.certs.ca)
    dom = rendered_status_page(config, binary, screenshot)
    rows = parse(dom)
    assert {k: (r["data-state"], r["data-met"]) for k, r in by_path(rows).items()} == EXPECTED
    assert verdicts(rows) == EXPECTED_PATHS
    assert rows.summary == "failing"
    assert rows.external == []
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_path_of_several_targets_is_one_verdict_and_an_exporter_fault_is_unknown():
    """1433 refused but 1344 answering meets a require-any SQL path; an optional path whose
    only probe the exporter could not run is unknown, not failed."""
    now = time.time()
    sql = [make_target("tds", port, path_id="sql", require=Require.ANY) for port in (1433, 1344)]
    refused, answered = ProbeResult(), ProbeResult(up=True, address="127.0.0.1", port=1344)
    refused.fail(Reason.REFUSED, "connection refused")
    ldap = make_target("ldap", 389, path_id="ldap")
    crashed = ProbeResult()
    crashed.fail(Reason.EXPORTER, "no free probe slot before the scrape deadline")
    page = statuspage.render(
        targets_by_site={"lib": (*sql, ldap)},
        outcomes_by_site={"lib": [Outcome(sql[0], refused, now), Outcome(sql[1], answered, now),
                                  Outcome(ldap, crashed, now)]},
        vantage="web_server", version="1", now=now, required=frozenset({("lib", "sql")}),
        impact={("lib", "sql"): "No request can be processed."},
    )
    rows = parse(page)
    assert verdicts(rows) == {("lib", "sql"): ("met", "true"), ("lib", "ldap"): ("unknown", "false")}
    assert [(r["data-port"], r["data-met"]) for r in rows.rows if r["data-path"] == "sql"] == [
        ("1433", "false"), ("1344", "true")]
    assert "1 of 2 answer; down: 127.0.0.1:1433 (refused: connection refused)" in page
    assert "open (any one)" in page and "If closed: No request can be processed." in page
    assert rows.summary == "unknown"
    assert "1 could not be judged: the exporter failed to probe them." in page
