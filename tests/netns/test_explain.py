"""What broke and what to ask for, through real firewalls: ``check --explain`` on each
ILLiad host of the namespace site names the failure as the wire showed it (a drop is a
timeout, a reject is refused, a private CA on the OCLC path is an interceptor) and gives the
exact rule, the real addresses filled in; ``report`` merges three vantages into one page,
which a real headless Chromium renders."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from illiad_exporter.catalog import BY_ID

from ..peers import need_binary, nginx_argv
from ..readme_blocks import lab_block, without_latency
from ..test_statuspage import ARTIFACTS, chromium
from .lab import VANTAGES, Lab, NetnsPeer
from .topology import BY_ROLE

README_EXAMPLE = "illiad-exporter check --config.file illiad.yml --vantage web_server --explain"

pytestmark = [pytest.mark.netns, pytest.mark.slow]

WEB, SQL, STAFF, EXTERNAL, PUBLIC = (BY_ROLE[r].address for r in
                                     ("web_server", "sql_server", "staff_client", "external", "public"))
ROUTER_ON_WEB_LAN = "198.18.1.1"  # the router's address on the web server's link
INTERCEPT_PORT = 8443


def run_check(lab: Lab, role: str, *options: str) -> tuple[int, str]:
    done = subprocess.run(
        ["ip", "netns", "exec", lab.netns(role), sys.executable, "-m", "illiad_exporter", "check",
         "--config.file", str(lab.config), "--vantage", role, *options],
        capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), f"check from {role} failed to run ({done.returncode}):\n{done.stderr}"
    return done.returncode, done.stdout


def explained(output: str, path: str) -> list[str]:
    """The lines of one path's explanation under the check table."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{path} (")), None)
    assert start is not None, f"no explanation of {path}:\n{output}"
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


def save(name: str, text: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(text)


@pytest.mark.parametrize(("host", "rule", "reason", "diagnosis"), [
    ("router", f"ip saddr {WEB} ip daddr {SQL} tcp dport 1433 drop", "timeout",
     f"No answer from sql.example.edu ({SQL}) port 1433 from {WEB} in time: a firewall on the way (the network's "
     "or sql.example.edu's own) drops the packets, or the host is down."),
    ("sql_server", f"ip saddr {WEB} tcp dport 1433 reject with tcp reset", "refused",
     f"sql.example.edu ({SQL}) port 1433 refused the connection from {WEB} (TCP reset): nothing listens on port "
     "1433, or a host firewall rejects it. Check that the service runs on sql.example.edu and listens on 1433, "
     "then the firewall of sql.example.edu."),
])
def test_sql_closed_to_the_web_server_is_diagnosed_as_the_wire_showed_it_with_the_rule_that_opens_it(
        lab: Lab, host: str, rule: str, reason: str, diagnosis: str) -> None:
    lab.firewall(host, "forward" if host == "router" else "input", rule)
    rc, output = run_check(lab, "web_server", "--explain")
    save(f"check-explain-sql-{reason}.txt", output)

    assert rc == 1, output
    block = explained(output, "sql")
    assert block[0] == "sql (required) from web_server, site main-library: ILLiad database (SQL Server)"
    assert block[1] == f"Impact: {BY_ID['sql'].impact}"
    assert block[2:] == [
        f"Diagnosis ({reason}): {diagnosis}",
        f"Network rule: allow TCP from {WEB} to {SQL} port 1433",
        f'Windows firewall on sql.example.edu: New-NetFirewallRule -DisplayName "ILLiad sql from {WEB}" '
        f"-Direction Inbound -Protocol TCP -LocalAddress {SQL} -LocalPort 1433 -RemoteAddress {WEB} -Action Allow",
    ]
    # Only the failing path is explained: every other path from the web server works.
    assert [line for line in output.splitlines() if " from web_server, site " in line] == [block[0]]
    if reason == "timeout":  # the README shows this run
        assert without_latency(output) == lab_block(README_EXAMPLE)


@pytest.fixture
def interceptor(lab: Lab, tmp_path: Path) -> Iterator[x509.Certificate]:
    """A transparent TLS-inspecting proxy in the router: the web server's HTTPS to the
    OCLC/vendor stand-in is redirected to an nginx there, which shows a certificate for the
    real names from the campus firewall's own CA. Yields that CA's certificate."""
    ca = trustme.CA(organization_name="Campus Firewall TLS Inspection")
    leaf = ca.issue_cert("webservices.oclc.org", "update.atlas-sys.com", "ill.sd00.worldcat.org")
    cert, key = tmp_path / "intercept.pem", tmp_path / "intercept.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    argv = nginx_argv(tmp_path / "nginx-intercept", cert=cert, key=key, https_port=INTERCEPT_PORT, http_port=8080,
                      host=ROUTER_ON_WEB_LAN)
    proxy = NetnsPeer(lab.netns("router"), argv, address=ROUTER_ON_WEB_LAN, port=INTERCEPT_PORT,
                      log=tmp_path / "nginx-intercept.log")
    proxy.start()
    try:
        lab.topology.nft("router", f"""
table ip intercept {{
    chain prerouting {{
        type nat hook prerouting priority dstnat;
        ip saddr {WEB} ip daddr {PUBLIC} tcp dport 443 redirect to :{INTERCEPT_PORT}
    }}
}}
""")
        yield x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    finally:
        proxy.stop()


def test_an_intercepting_proxy_on_the_oclc_path_is_named_with_its_issuer_and_the_exemption_to_ask_for(
        lab: Lab, interceptor: x509.Certificate) -> None:
    issuer = interceptor.subject.rfc4514_string()
    rc, output = run_check(lab, "web_server", "--explain")
    save("check-explain-interception.txt", output)

    assert rc == 1, output  # an open port that fails its TLS check is not the service
    block = explained(output, "oclc_webservices")
    title = block[0].split(": ", 1)[1]
    assert block[2:] == [
        "Diagnosis (interception): An intercepting proxy or firewall sits on this path: connecting to "
        f"webservices.oclc.org ({PUBLIC}) port 443, the certificate presented for webservices.oclc.org is issued "
        f"by {issuer}, a CA this host does not trust (a private CA). {title} must be a direct connection: exempt "
        "it from TLS inspection and proxying.",
        f"Network rule: exempt TCP from {WEB} to {PUBLIC} port 443 from TLS inspection and proxying ({title}: a "
        "direct connection)",
    ]
    assert "Campus Firewall TLS Inspection" in issuer
    # The vendor's update server goes through the same proxy, and is named the same way.
    assert explained(output, "atlas_update")[2].startswith("Diagnosis (interception): An intercepting proxy")
    # A staff PC is not behind it: its OCLC path is direct and verified.
    rc_staff, staff = run_check(lab, "staff_client", "--explain")
    assert "oclc_webservices (" not in staff, staff


def test_sql_reachable_from_outside_gets_the_rule_that_closes_it(lab: Lab) -> None:
    lab.topology.nft("router", "flush ruleset")  # the perimeter rule is gone
    rc, output = run_check(lab, "external", "--explain")
    save("check-explain-closed-open.txt", output)

    assert rc == 1, output
    block = explained(output, "sql_from_external")
    assert block[2:] == [
        f"Diagnosis (open): sql.example.edu ({SQL}) port 1433 accepted a connection from {EXTERNAL}, and must not: "
        f"{block[0].split(': ', 1)[1]}. A firewall must block it.",
        f"Network rule: block TCP from {EXTERNAL} to {SQL} port 1433",
        f'Windows firewall on sql.example.edu: New-NetFirewallRule -DisplayName "ILLiad sql_from_external from '
        f'{EXTERNAL}" -Direction Inbound -Protocol TCP -LocalAddress {SQL} -LocalPort 1433 -RemoteAddress '
        f"{EXTERNAL} -Action Block",
    ]


class ReportCells(HTMLParser):
    """The matrix cells (site, path, vantage) -> state, and the explained failures, of a report's DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], str] = {}
        self.failures: list[tuple[str, str, str]] = []
        self.rules: list[str] = []
        self._in_rule = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-state" in a:
            self.cells[(a["data-site"], a["data-path"], a["data-vantage"])] = a["data-state"]
        if tag == "section" and "failure" in a.get("class", ""):
            self.failures.append((a["data-site"], a["data-path"], a["data-vantage"]))
        self._in_rule = tag == "pre"

    def handle_data(self, data: str) -> None:
        if self._in_rule:
            self.rules.append(data)
            self._in_rule = False


def test_a_report_from_three_vantages_shows_every_path_and_explains_what_each_firewall_blocks(lab: Lab) -> None:
    # The campus firewall drops Odyssey from the internet to the web server, and the SQL
    # Server's own firewall rejects the staff subnet.
    lab.firewall("web_server", "input", "ip saddr 198.19.0.0/16 tcp dport 7968 drop")
    lab.firewall("sql_server", "input", f"ip saddr {STAFF} tcp dport 1433 reject with tcp reset")
    runs = ARTIFACTS / "report-from-the-lab"  # the README's example is made here
    runs.mkdir(parents=True, exist_ok=True)
    names = []
    for role in VANTAGES:
        rc, output = run_check(lab, role, "--output", "json")
        assert rc == (0 if role == "web_server" else 1), output
        names.append(f"{role}.json")
        (runs / names[-1]).write_text(output)
    markdown = subprocess.run([sys.executable, "-m", "illiad_exporter", "report", *names], cwd=runs,
                              capture_output=True, text=True, timeout=30, check=True).stdout
    subprocess.run([sys.executable, "-m", "illiad_exporter", "report", "--format", "html", "-o", "report.html",
                    *names], cwd=runs, capture_output=True, text=True, timeout=30, check=True)
    (runs / "report.md").write_text(markdown)
    page = runs / "report.html"

    paths = {p["path"] for name in names for p in json.loads((runs / name).read_text())["paths"]}
    assert "| main-library | odyssey | required | - | OK | FAIL |" in markdown
    assert "| main-library | sql | required | OK | FAIL | - |" in markdown
    assert f"allow TCP from {EXTERNAL} to {WEB} port 7968" in markdown
    assert (f'New-NetFirewallRule -DisplayName "ILLiad odyssey from {EXTERNAL}" -Direction Inbound -Protocol TCP '
            f"-LocalAddress {WEB} -LocalPort 7968 -RemoteAddress {EXTERNAL} -Action Allow") in markdown
    assert (f'New-NetFirewallRule -DisplayName "ILLiad sql from {STAFF}" -Direction Inbound -Protocol TCP '
            f"-LocalAddress {SQL} -LocalPort 1433 -RemoteAddress {STAFF} -Action Allow") in markdown

    binary = need_binary("chromium", "chromium")
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    dom = asyncio.run(chromium(binary, "--dump-dom", page.as_uri()))
    asyncio.run(chromium(binary, f"--screenshot={screenshot}", "--window-size=1280,1600", "--hide-scrollbars",
                         page.as_uri()))
    seen = ReportCells()
    seen.feed(dom)
    assert {path for _, path, _ in seen.cells} == paths
    failing = {key for key, state in seen.cells.items() if state == "failed"}
    assert failing == {("main-library", "odyssey", "external"), ("main-library", "sql", "staff_client")}
    assert seen.cells[("main-library", "odyssey", "staff_client")] == "met"
    assert seen.cells[("main-library", "odyssey_outbound", "web_server")] == "met"
    assert seen.cells[("main-library", "sql_from_external", "web_server")] == ""  # does not start there
    assert seen.failures == [("main-library", "sql", "staff_client"), ("main-library", "odyssey", "external")]
    assert seen.rules == [
        f"allow TCP from {STAFF} to {SQL} port 1433",
        f'New-NetFirewallRule -DisplayName "ILLiad sql from {STAFF}" -Direction Inbound -Protocol TCP '
        f"-LocalAddress {SQL} -LocalPort 1433 -RemoteAddress {STAFF} -Action Allow",
        f"allow TCP from {EXTERNAL} to {WEB} port 7968",
        f'New-NetFirewallRule -DisplayName "ILLiad odyssey from {EXTERNAL}" -Direction Inbound -Protocol TCP '
        f"-LocalAddress {WEB} -LocalPort 7968 -RemoteAddress {EXTERNAL} -Action Allow",
    ]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
