"""Explanations: the impact, a diagnosis per failure reason, TLS interception told apart
from other certificate problems, and the exact rule to ask for. The texts are checked
word for word from facts; the facts themselves come from real probes of real peers (nginx
with a certificate this host does not trust, a refused loopback port), and the status page
that shows them is rendered by a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter.catalog import BY_ID, CATALOG
from illiad_exporter.explain import PathFacts, TargetFacts, explain, kernel_source_address, target_facts
from illiad_exporter.probers import PROBERS, ProbeFailure, ProbeResult
from illiad_exporter.report import ReportError, build_matrix, load_runs

from .exporter_process import loopback_site_config
from .peers import free_port, need_binary
from .probing import make_target
from .test_server import get, running
from .test_statuspage import ARTIFACTS, rendered_status_page

HOSTS = {"web_server": "illiad.example.edu", "sql_server": "sql.example.edu", "staff_client": "staff.example.edu"}
WEB, SQL, OCLC = "198.18.1.10", "198.18.2.10", "198.19.2.10"


def facts(path: str, *targets: TargetFacts, vantage: str = "web_server", expect: str = "open", prober: str = "tcp",
          title: str = "A path", **kwargs: object) -> PathFacts:
    return PathFacts(site="lib", vantage=vantage, path=path, title=title, impact="Something breaks.", expect=expect,
                     required=True, prober=prober, met=False, targets=targets, site_hosts=HOSTS, **kwargs)


def failed(host: str, port: int, reason: str, detail: str = "", address: str = SQL, source: str = WEB,
           **kwargs: object) -> TargetFacts:
    return TargetFacts(host, port, False, "closed", reason, detail, (address,), source, **kwargs)  # type: ignore[arg-type]


def test_a_timeout_to_an_up_host_says_a_rule_drops_that_port() -> None:
    e = explain(facts("sql", failed("sql.example.edu", 1433, "timeout"), hosts_answering=frozenset({"sql.example.edu"})))
    assert e is not None
    assert [d.text for d in e.diagnoses] == [
        f"No answer from sql.example.edu ({SQL}) port 1433 from {WEB} in time: a firewall on the way (the network's "
        "or sql.example.edu's own) drops the packets, or the host is down. Other paths from here reach "
        "sql.example.edu, so it is up: a rule drops port 1433."]
    assert [(r.network, r.windows_host, r.powershell) for r in e.rules] == [(
        f"allow TCP from {WEB} to {SQL} port 1433", "sql.example.edu",
        f'New-NetFirewallRule -DisplayName "ILLiad sql from {WEB}" -Direction Inbound -Protocol TCP '
        f"-LocalAddress {SQL} -LocalPort 1433 -RemoteAddress {WEB} -Action Allow")]


def test_a_timeout_after_the_connection_was_accepted_blames_the_service_and_asks_for_no_rule() -> None:
    """Connected in microseconds, then silence: no firewall dropped anything."""
    connected = TargetFacts("sql.example.edu", 1433, False, "open", "timeout", "connected, then no answer within 2s",
                            (SQL,), WEB)
    e = explain(facts("sql", connected, prober="tds", hosts_answering=frozenset({"sql.example.edu"})))
    assert e is not None
    assert [d.text for d in e.diagnoses] == [
        f"sql.example.edu ({SQL}) port 1433 accepted the connection from {WEB}, but no answer from SQL Server (TDS) "
        "came in time (connected, then no answer within 2s): the network lets the connection through, so no "
        "firewall rule helps. The service is slow or hung, or another one that waits for the client to speak holds "
        "the port: check what listens on sql.example.edu:1433, and its load."]
    assert e.rules == ()
    assert e.note == "No firewall rule to ask for: the network let the connection through, or it never started."


def test_a_path_out_to_the_world_gets_an_outbound_rule_on_the_host_it_leaves() -> None:
    e = explain(facts("oclc_webservices", failed("webservices.oclc.org", 443, "refused", address=OCLC)))
    assert e is not None
    assert e.diagnoses[0].text.endswith("a firewall on the way rejects it (this host's outbound rules, or the "
                                        "perimeter's), or nothing listens on that side.")
    assert [(r.network, r.windows_host, r.powershell) for r in e.rules] == [(
        f"allow TCP from {WEB} to {OCLC} port 443", "illiad.example.edu",
        f'New-NetFirewallRule -DisplayName "ILLiad oclc_webservices to {OCLC}" -Direction Outbound -Protocol TCP '
        f"-LocalAddress {WEB} -RemoteAddress {OCLC} -RemotePort 443 -Action Allow")]


def test_a_path_that_leaves_the_site_stays_outbound_when_a_lab_points_it_at_the_web_server() -> None:
    """The quick start points OCLC at 127.0.0.1, the web server's own address: the rule is
    still the web server's outbound one, not an inbound rule for OCLC's port on it."""
    e = explain(facts("oclc_webservices", failed("illiad.example.edu", 443, "refused", address=WEB),
                      leaves_site=True))
    assert e is not None
    assert [(r.windows_host, r.powershell) for r in e.rules] == [(
        "illiad.example.edu",
        f'New-NetFirewallRule -DisplayName "ILLiad oclc_webservices to {WEB}" -Direction Outbound -Protocol TCP '
        f"-LocalAddress {WEB} -RemoteAddress {WEB} -RemotePort 443 -Action Allow")]


def test_the_catalog_says_which_legs_leave_the_site() -> None:
    leaving = sorted((p.id, role.value) for p in CATALOG for role in p.routes if p.leaves_site(role))
    assert leaving == [
        ("article_exchange", "web_server"), ("atlas_update", "staff_client"), ("atlas_update", "web_server"),
        ("iso_ill_outbound", "web_server"), ("oclc_webservices", "staff_client"),
        ("oclc_webservices", "web_server"), ("odyssey_outbound", "web_server")]


def test_from_outside_to_a_partner_no_host_firewall_of_the_site_is_involved() -> None:
    e = explain(facts("odyssey_partner", failed("partner.example.org", 7968, "timeout", address="198.19.1.10",
                                                source="198.19.9.9"), vantage="external"))
    assert e is not None
    assert [(r.network, r.powershell) for r in e.rules] == [
        ("allow TCP from 198.19.9.9 to 198.19.1.10 port 7968", "")]


@pytest.mark.parametrize(("reason", "detail", "says"), [
    ("unreachable", "connect to 198.18.2.10:1433: no route to host", "a router has no route to it, or a firewall "
                                                                      "answers 'unreachable'"),
    ("dns", "cannot resolve sql.example.edu: Name or service not known", "No firewall rule helps until it resolves"),
    ("protocol", "not a TDS answer: it starts b'HTTP/1.1 400 Bad'", "what answered is a web server (it answered "
                                                                     "with HTTP), not SQL Server (TDS)"),
    ("protocol", "answer truncated: 0 of 8 bytes before close", "a listener that closed the connection without "
                                                                "answering"),
    ("network", "reading: connection reset by peer", "a firewall or intrusion prevention system"),
    ("http_status", "GET /illiad/logon.html answered 500", "the network is fine"),
    ("auth", "bind refused: invalid credentials", "refused the configured login"),
    ("browser", "no instance ILLIAD in the Browser's answer", "UDP 1434 is blocked"),
    ("exporter", "no free probe slot before the scrape deadline", "its own limit, not the network"),
    ("error", "KeyError", "a bug, logged with its traceback"),
])
def test_each_reason_gets_its_own_diagnosis(reason: str, detail: str, says: str) -> None:
    e = explain(facts("sql", failed("sql.example.edu", 1433, reason, detail), prober="tds"))
    assert e is not None and len(e.diagnoses) == 1
    assert e.diagnoses[0].reason == reason and says in e.diagnoses[0].text, e.diagnoses[0].text
    # Only a connection the network stopped gets a firewall rule.
    assert bool(e.rules) == (reason == "unreachable")


@pytest.mark.parametrize(("path", "detail", "interception"), [
    ("oclc_webservices", "certificate not trusted: unable to get local issuer certificate", True),
    ("atlas_update", "certificate not trusted: self-signed certificate in certificate chain", True),
    ("oclc_webservices", "certificate not trusted: Hostname mismatch, certificate is not valid for "
                         "'webservices.oclc.org'.", True),
    ("oclc_webservices", "certificate not trusted: certificate has expired", False),
    ("web_https", "certificate not trusted: unable to get local issuer certificate", False),  # the site's own server
])
def test_tls_interception_is_told_apart_from_other_certificate_problems(path: str, detail: str,
                                                                        interception: bool) -> None:
    e = explain(facts(path, failed("webservices.oclc.org", 443, "tls", detail, address=OCLC,
                                   tls_issuer="CN=Campus Firewall CA", tls_subject="CN=webservices.oclc.org"),
                      prober="tls", title="OCLC web services", direct=BY_ID[path].direct))
    assert e is not None
    assert e.diagnoses[0].reason == ("interception" if interception else "tls")
    if interception:
        assert "An intercepting proxy or firewall sits on this path" in e.diagnoses[0].text
        assert "CN=Campus Firewall CA" in e.diagnoses[0].text
        assert [r.network for r in e.rules] == [
            f"exempt TCP from {WEB} to {OCLC} port 443 from TLS inspection and proxying (OCLC web services: a "
            "direct connection)"]
    else:
        assert "intercept" not in e.diagnoses[0].text and e.rules == ()
        assert "The certificate presented is issued by CN=Campus Firewall CA" in e.diagnoses[0].text


def test_a_path_that_must_be_closed_and_is_open_gets_the_rule_that_closes_it() -> None:
    opened = TargetFacts("sql.example.edu", 1433, False, "open", None, "", (SQL,), "198.19.1.10")
    e = explain(facts("sql_from_external", opened, vantage="external", expect="closed",
                      title="SQL Server must not be reachable from outside"))
    assert e is not None
    assert [d.text for d in e.diagnoses] == [
        f"sql.example.edu ({SQL}) port 1433 accepted a connection from 198.19.1.10, and must not: SQL Server must "
        "not be reachable from outside. A firewall must block it."]
    assert [(r.network, r.powershell) for r in e.rules] == [(
        f"block TCP from 198.19.1.10 to {SQL} port 1433",
        'New-NetFirewallRule -DisplayName "ILLiad sql_from_external from 198.19.1.10" -Direction Inbound '
        f"-Protocol TCP -LocalAddress {SQL} -LocalPort 1433 -RemoteAddress 198.19.1.10 -Action Block")]


def test_a_path_that_meets_its_expectation_has_nothing_to_explain() -> None:
    ok = TargetFacts("sql.example.edu", 1433, True, "open", None, "", (SQL,), WEB)
    assert explain(PathFacts("lib", "web_server", "sql", "t", "i", "open", True, "tds", True, (ok,))) is None


def test_the_kernel_names_the_source_address_it_would_use_without_sending_anything() -> None:
    assert kernel_source_address("127.0.0.1") == "127.0.0.1"
    assert kernel_source_address("::1") in ("::1", None)  # None where IPv6 is off


def test_a_refused_probe_records_the_address_tried_and_the_source_is_the_kernels_pick() -> None:
    target = make_target("tcp", free_port())
    result = ProbeResult()
    asyncio.run(_probe(target, result))
    seen = target_facts(target, result, False)
    assert (seen.reason, seen.addresses, seen.source) == ("refused", ("127.0.0.1",), "127.0.0.1")


def test_a_tls_probe_of_a_server_whose_ca_is_not_trusted_records_who_issued_its_certificate(nginx, tls_ca) -> None:
    """No ca_file: the test CA is unknown to this host, as an interceptor's CA is."""
    target = make_target("tls", nginx.https_port, host="localhost")
    result = ProbeResult()
    asyncio.run(_probe(target, result))
    assert result.reason is not None and result.reason.value == "tls", result
    assert result.detail.startswith("certificate not trusted")
    assert result.facts["tls_issuer"] == x509.load_pem_x509_certificate(tls_ca.cert_pem.bytes()).subject.rfc4514_string()
    assert result.facts["tls_subject"] != ""
    assert result.facts["source"] == "127.0.0.1"
    assert result.tls is None  # the verdict and the TLS metrics stay those of the verified try


async def _probe(target, result: ProbeResult) -> None:  # type: ignore[no-untyped-def]
    try:
        result.up = await asyncio.wait_for(PROBERS[target.prober].probe(target, result), 5)
    except ProbeFailure as failure:
        result.fail(failure.reason, failure.detail)


# -- report ------------------------------------------------------------------------------


def test_report_names_every_bad_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ReportError) as error:
        load_runs([str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(tmp_path / "c.json")])
    assert str(error.value).splitlines() == [
        f"{tmp_path}/a.json:1:2: not JSON: Expecting property name enclosed in double quotes",
        f"{tmp_path}/b.json: not the output of 'illiad-exporter check --output json' (needs \"vantage\" and "
        "\"paths\")",
        f"{tmp_path}/c.json: cannot read: No such file or directory",
    ]


def test_two_runs_from_the_same_role_are_two_columns(tmp_path: Path) -> None:
    for name in ("pc1", "pc2"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"vantage": "staff_client", "paths": [
            {"site": "lib", "path": "sql", "met": name == "pc1"}]}))
    matrix = build_matrix(load_runs([str(tmp_path / "pc1.json"), str(tmp_path / "pc2.json")]))
    assert [r.label for r in matrix.runs] == ["staff_client (pc1)", "staff_client (pc2)"]
    assert [(run.label, entry["path"]) for run, entry in matrix.failures()] == [("staff_client (pc2)", "sql")]


# -- the status page ---------------------------------------------------------------------


class Explained(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.diagnoses: list[str] = []
        self.rules: list[str] = []
        self.details_open: list[bool] = []
        self._take: str = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-explained-path" in a:
            self.paths.append(a["data-explained-path"] or "")
        if tag == "p" and "diagnosis" in (a.get("class") or ""):
            self.diagnoses.append(a.get("data-reason") or "")
        if tag == "details":
            self.details_open.append("open" in a)
        self._take = "rule" if tag == "pre" else ""

    def handle_data(self, data: str) -> None:
        if self._take == "rule":
            self.rules.append(data)
            self._take = ""


def refused_sql_config(path: Path, port: int) -> Path:
    """Site main-library, whose web and SQL servers are named (pinned to 127.0.0.1), with its
    sql path probed by tcp at ``port``, where nothing listens."""
    path.write_text(f"""
defaults: {{timeout: 2s, system_resolver: false, hosts: {{sql.test: [127.0.0.1], web.test: [127.0.0.1]}}}}
sites:
  - name: main-library
    hosts: {{web_server: web.test, sql_server: sql.test}}
    paths:
      sql: {{port: {port}, prober: tcp}}
      oclc_webservices: {{enabled: false}}
      atlas_update: {{enabled: false}}
      article_exchange: {{enabled: false}}
""")
    return path


@pytest.mark.peer("chromium")
def test_the_status_page_shows_impact_and_diagnosis_of_a_failing_path_and_the_rule_on_demand(tmp_path: Path) -> None:
    binary = need_binary("chromium", "chromium")
    closed = free_port()
    config = refused_sql_config(tmp_path / "c.yml", closed)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page-explained.png"
    screenshot.unlink(missing_ok=True)
    dom = rendered_status_page(config, binary, screenshot)
    seen = Explained()
    seen.feed(dom)
    assert seen.paths == ["sql"]
    assert seen.diagnoses == ["refused"]
    assert seen.details_open == [False]  # the rule is there, folded until asked for
    assert seen.rules == [
        f"allow TCP from 127.0.0.1 to 127.0.0.1 port {closed}",
        f'New-NetFirewallRule -DisplayName "ILLiad sql from 127.0.0.1" -Direction Inbound -Protocol TCP '
        f"-LocalAddress 127.0.0.1 -LocalPort {closed} -RemoteAddress 127.0.0.1 -Action Allow",
    ]
    assert "Impact:" in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.process
def test_check_output_markdown_is_a_ticket_with_the_table_and_the_explanations(tmp_path: Path) -> None:
    closed = free_port()
    config = refused_sql_config(tmp_path / "c.yml", closed)
    done = subprocess.run([sys.executable, "-m", "illiad_exporter", "check", "--config.file", str(config),
                           "--vantage", "web_server", "--output", "markdown"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1, done.stderr
    text = done.stdout
    assert text.startswith("## ILLiad network paths from web_server\n")
    assert "### sql (required) from web_server, site main-library: ILLiad database (SQL Server)" in text
    assert f"```\nallow TCP from 127.0.0.1 to 127.0.0.1 port {closed}\n```" in text
    assert "```powershell\nNew-NetFirewallRule -DisplayName \"ILLiad sql from 127.0.0.1\"" in text


def test_the_runbook_has_a_section_per_catalog_path_quoting_its_impact() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "runbooks.md").read_text()
    paths_part = text.split("\n# Paths\n", 1)[1]
    sections = {chunk.split("\n", 1)[0]: chunk for chunk in paths_part.split("\n### Path: ")[1:]}
    assert list(sections) == [p.id for p in CATALOG]
    for path in CATALOG:
        assert f"**Impact:** {path.impact}\n" in sections[path.id], path.id


def test_metrics_carry_the_impact_and_diagnosis_of_each_failing_path_for_the_alerts(tmp_path: Path) -> None:
    closed = free_port()
    config = refused_sql_config(tmp_path / "c.yml", closed)

    async def scenario() -> str:
        async with running(config) as (url, _):
            return (await get(url + "/metrics"))[1]

    text = asyncio.run(scenario())
    found = [s.labels for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "illiad_path_explanation_info"]
    assert found == [{
        "site": "main-library", "vantage": "web_server", "path": "sql", "impact": BY_ID["sql"].impact,
        "diagnosis": f"sql.test (127.0.0.1) port {closed} refused the connection from 127.0.0.1 (TCP reset): nothing "
                     f"listens on port {closed}, or a host firewall rejects it. Check that the service runs on "
                     f"sql.test and listens on {closed}, then the firewall of sql.test.",
    }]


def test_a_closed_path_the_exporter_could_not_probe_is_unknown_not_open() -> None:
    """A probe the exporter could not run says nothing about the network: no 'accepted a
    connection', no rule, and the explanation says the state is unknown."""
    not_run = TargetFacts("sql.example.edu", 1433, None, "closed", "exporter",
                          "no free probe slot before the scrape deadline", (SQL,), "198.19.1.10")
    path = PathFacts("lib", "external", "sql_from_external", "SQL closed from outside", "i", "closed", True, "tcp",
                     None, (not_run,), HOSTS)
    e = explain(path)
    assert e is not None
    assert [d.reason for d in e.diagnoses] == ["exporter"] and e.rules == ()
    assert e.note == "The path's state is unknown: the exporter could not probe it."


def _report(tmp_path: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "illiad_exporter", "report", *files], capture_output=True,
                          text=True, timeout=30, cwd=tmp_path)


@pytest.mark.process
def test_report_on_json_nested_too_deeply_is_a_one_line_error_exit_2(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    done = _report(tmp_path, "deep.json")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("error: deep.json: not JSON this report reads: nested too deeply for Python's JSON "
                           f"parser (it stops near {sys.getrecursionlimit():,} levels)\n")


def _run_with(entry: object) -> str:
    return json.dumps({"vantage": "web_server", "paths": [{"site": "lib", "path": "sql", "met": True}, entry]})


@pytest.mark.process
@pytest.mark.parametrize(("text", "error"), [
    pytest.param(_run_with({"site": "lib", "path": "x", "met": False, "explanation": {"diagnosis": ["refused"]}}),
                 "paths[1].explanation.diagnosis[0]: not an object", id="a-diagnosis-not-an-object"),
    pytest.param(_run_with({"site": "lib", "path": "x", "explanation": {"rules": [{"powershell": "x"}]}}),
                 "paths[1].explanation.rules[0]: has no network", id="a-rule-without-its-network-line"),
    pytest.param(_run_with({"site": "lib", "path": "x", "explanation": {
        "diagnosis": [{"reason": "refused", "target": "h:1", "text": 7}]}}),
                 "paths[1].explanation.diagnosis[0].text: not a string", id="a-number-for-a-text"),
    pytest.param(_run_with({"site": [[["lib"]]], "path": "x"}), "paths[1].site: not a string",
                 id="a-nested-list-for-a-site"),
    pytest.param(_run_with({"site": "lib", "path": "x", "met": "yes"}), "paths[1].met: not true or false or null",
                 id="a-text-for-met"),
    pytest.param('{"vantage": "web_server", "checked_at": [1], "paths": []}', "checked_at: not a string",
                 id="a-list-for-checked-at"),
    pytest.param('{"vantage": "web_server", "paths": [], "n": ' + "1" * 5000 + "}",
                 "not JSON this report reads: Exceeds the limit (4300 digits) for integer string conversion: value "
                 "has 5000 digits", id="a-number-of-5000-digits"),
    pytest.param(b"\xff\xfe{}", "not JSON: not UTF-8 text (byte 0)", id="not-utf-8"),
])
def test_report_refuses_what_check_never_writes_with_where_it_is(tmp_path: Path, text: str | bytes,
                                                                 error: str) -> None:
    """Every shape the report reads is checked before anything is rendered (a list where
    text belongs once ended in a traceback): one line naming the file and the place, exit 2."""
    (tmp_path / "bad.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    done = _report(tmp_path, "bad.json")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: bad.json: {error}\n")


@pytest.mark.process
def test_check_explains_tls_and_tds_servers_that_accept_and_stay_silent_as_slow_services(tmp_path: Path,
                                                                                        silent_port: int) -> None:
    """A hand-made server that accepts and never answers (no real peer does that on purpose):
    the TLS handshake and the TDS pre-login both time out after the connection was accepted.
    check --explain says so, blames no firewall and gives no rule; the detail says it connected."""
    config = loopback_site_config(tmp_path / "c.yml", timeout="1s", custom=f"""\
      - {{name: slow_tls, from: [web_server], role: sql_server, port: {silent_port}, prober: tls}}
      - {{name: slow_sql, from: [web_server], role: sql_server, port: {silent_port}, prober: tds}}""")
    done = subprocess.run([sys.executable, "-m", "illiad_exporter", "check", "--config.file", str(config),
                           "--vantage", "web_server", "--explain"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    explained = done.stdout.split("\n\n", 2)[2]
    for path, service in (("slow_tls", "a TLS server"), ("slow_sql", "SQL Server (TDS)")):
        block = next(b for b in explained.split("\n\n") if b.startswith(f"{path} (required)"))
        assert block.splitlines()[2:] == [
            f"  Diagnosis (timeout): 127.0.0.1 port {silent_port} accepted the connection from 127.0.0.1, but no "
            f"answer from {service} came in time (connected, then no answer within 1s): the network lets the "
            "connection through, so no firewall rule helps. The service is slow or hung, or another one that waits "
            f"for the client to speak holds the port: check what listens on 127.0.0.1:{silent_port}, and its load.",
            "  No firewall rule to ask for: the network let the connection through, or it never started."], block
    assert "firewall on the way" not in done.stdout and "Network rule" not in done.stdout
