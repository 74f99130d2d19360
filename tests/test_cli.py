"""The command line, run as a user runs it: as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .exporter_process import loopback_site_config, only_test_hosts
from .peers import free_port, wait_for_port
from .test_server import write_config

pytestmark = pytest.mark.process  # every command runs as a process of its own

CLI = [sys.executable, "-m", "illiad_exporter"]
CONFIGS = Path(__file__).parent / "configs"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    if args[0] in ("check", "serve") and "--config.file" in args:  # what it may probe: only test hosts
        config = Path(args[args.index("--config.file") + 1])
        only_test_hosts(config, args[args.index("--vantage") + 1] if "--vantage" in args else "web_server")
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_check_exits_0_when_every_expectation_is_met(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    result = run("check", "--config.file", str(config), "--vantage", "web_server")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SITE", "PATH", "NEED", "EXPECT", "RESULT", "TARGET", "OBSERVED", "LATENCY", "DETAIL"]
    assert lines[1].split() == ["lib", "sql", "required", "open", "ok", "answers"]  # the path's verdict
    assert lines[2].split()[:3] == ["ok", f"127.0.0.1:{silent_port}", "open"]  # and its one target
    assert lines[3].split()[:3] == ["lib", "odyssey_outbound", "skipped"]
    assert lines[-1] == "1 path(s), 1 probe(s) from web_server: all expectations met"


def test_check_exits_1_and_names_the_reason_when_a_path_is_down(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    result = run("check", "--config.file", str(config), "--vantage", "staff_client", "--output", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    by_path = {r["path"]: r for r in report["results"]}
    assert by_path["web_https"]["reason"] == "refused" and by_path["web_https"]["met"] is False
    assert by_path["sql"]["up"] is True and by_path["sql"]["latency_seconds"] > 0
    paths = {p["path"]: (p["state"], p["required"]) for p in report["paths"]}
    assert paths == {"sql": ("met", True), "web_https": ("failed", True), "odyssey": ("failed", True)}


def test_a_listener_that_is_not_the_service_fails_check(tmp_path, nginx, refusing_port):
    """nginx's plain HTTP port on the SQL port (PRELOGIN fails) and on the OCLC port (the TLS
    handshake fails): connected, but not the service, so both paths fail, in the table, in
    the JSON (ok false, met false beside up false) and in the exit status."""
    path = loopback_site_config(tmp_path / "c.yml", switched_off=("atlas_update", "article_exchange",
                                                                   "odyssey_outbound"), paths=f"""\
      sql: {{port: {nginx.http_port}}}
      oclc_webservices: {{host: 127.0.0.1, port: {nginx.http_port}}}
""")
    table = run("check", "--config.file", str(path), "--vantage", "web_server")
    assert table.returncode == 1, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    assert [line.split()[:6] for line in lines[1:5]] == [
        ["lib", "sql", "required", "open", "FAIL", "down"],
        ["FAIL", f"127.0.0.1:{nginx.http_port}", "open", "(check", "failed)", lines[2].split()[5]],
        ["lib", "oclc_webservices", "required", "open", "FAIL", "down"],
        ["FAIL", f"127.0.0.1:{nginx.http_port}", "open", "(check", "failed)", lines[4].split()[5]],
    ]
    assert lines[2].split()[7] == "protocol:" and lines[4].split()[7] == "tls:"
    assert lines[-1] == "2 path(s), 2 probe(s) from web_server: SOME EXPECTATIONS NOT MET (2 failed)"

    report = json.loads(run("check", "--config.file", str(path), "--vantage", "web_server", "--output", "json").stdout)
    assert report["ok"] is False
    assert [(r["path"], r["observed"], r["up"], r["met"], r["reason"]) for r in report["results"]] == [
        ("sql", "open", False, False, "protocol"), ("oclc_webservices", "open", False, False, "tls")]
    assert [(p["path"], p["met"], p["state"]) for p in report["paths"]] == [
        ("sql", False, "failed"), ("oclc_webservices", False, "failed")]


def test_check_from_a_vantage_where_no_path_starts_says_so_and_exits_2(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    table = run("check", "--config.file", str(config), "--vantage", "sql_server")
    assert table.returncode == 2
    assert table.stdout.strip() == ("no enabled path starts at sql_server: nothing to check "
                                    "(see 'illiad-exporter catalog --vantage sql_server')")
    report = run("check", "--config.file", str(config), "--vantage", "sql_server", "--output", "json")
    assert report.returncode == 2
    assert json.loads(report.stdout)["ok"] is False and json.loads(report.stdout)["paths"] == []


def test_validate_exit_status_and_messages():
    good = run("validate", "--config.file", str(CONFIGS / "valid-minimal.yml"))
    assert good.returncode == 0
    assert good.stdout.startswith(f"{CONFIGS / 'valid-minimal.yml'}: valid; 1 site(s)")
    bad = run("validate", "--config.file", str(CONFIGS / "invalid-many-errors.yml"))
    assert bad.returncode == 1
    assert bad.stderr.count("invalid-many-errors.yml:") == 11
    assert bad.stderr.rstrip().endswith("11 error(s) in " + str(CONFIGS / "invalid-many-errors.yml"))


def test_catalog_formats():
    table = run("catalog").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "ROUTES", "PORTS"]
    assert len(table) == 18
    data = json.loads(run("catalog", "--format", "json", "--vantage", "external").stdout)
    assert [row["id"] for row in data] == ["sql_from_external", "web_https", "web_http", "odyssey", "iso_ill", "rdp"]
    assert data[0]["ports"] == [1433, 1344] and data[0]["expect"] == "closed"
    assert data[0]["source"] == [
        {"source": "vendor ports page", "fact": "only the web server and the staff clients need the SQL ports"},
        {"source": "inference", "fact": "closed from outside"},
    ]
    markdown = run("catalog", "--format", "markdown").stdout.splitlines()
    assert markdown[0] == ("| id | title | routes | ports | prober | need | expect | require | default | impact | "
                           "source | notes |")
    assert markdown[1].startswith("| --- |")
    (sql,) = [line for line in markdown if line.startswith("| sql |")]
    assert "| Staff clients and the web server cannot reach the ILLiad database: no request can be processed. |" in sql
    assert "| vendor ports page: web server and staff clients to SQL Server on 1433, or 1344 as the alternative |" in sql


def test_serve_answers_scrapes_and_exits_0_on_sigterm(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    only_test_hosts(config, "web_server")
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--config.file", str(config), "--vantage", "web_server",
         "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, alive=lambda: process.poll() is None)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert f'illiad_port_up{{expect="open",host="127.0.0.1",path="sql",port="{silent_port}"' in text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert json.loads(stderr.splitlines()[0])["msg"] == "listening"


def test_serve_refuses_to_start_on_a_bad_config():
    result = run("serve", "--config.file", str(CONFIGS / "invalid-yaml.yml"), "--vantage", "web_server",
                 "--web.listen-address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "invalid-yaml.yml:4:1: invalid YAML" in result.stderr


def test_vantage_is_required(tmp_path):
    result = run("check", "--config.file", str(loopback_site_config(tmp_path / "c.yml")))
    assert result.returncode == 2 and "--vantage is required" in result.stderr


def test_version_answers_before_or_after_the_subcommand():
    from illiad_exporter import __version__

    for args in (["--version"], ["--version", "serve"], ["serve", "--version"], ["check", "--version"],
                 ["catalog", "--version"], ["validate", "--version"], ["assets", "--version"]):
        result = run(*args)
        assert (result.returncode, result.stdout) == (0, f"illiad-exporter {__version__}\n"), args


def test_a_repeated_listen_address_serves_on_each(tmp_path, silent_port, refusing_port):
    """As exporter-toolkit's repeatable flag: every --web.listen-address is served, each logged."""
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    only_test_hosts(config, "web_server")
    ports = [free_port(), free_port()]
    process = subprocess.Popen(
        [*CLI, "serve", "--config.file", str(config), "--vantage", "web_server", "--log.format", "json",
         *[f"--web.listen-address=127.0.0.1:{port}" for port in ports]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for port in ports:
            wait_for_port(port, alive=lambda: process.poll() is None)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=10) as response:
                assert response.read() == b"Healthy\n"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    listening = [json.loads(line)["address"] for line in stderr.splitlines() if '"listening"' in line]
    assert listening == [f"127.0.0.1:{port}" for port in ports]


def test_listen_address_is_checked_before_start_and_a_taken_one_is_named(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    bad = run("serve", "--config.file", str(config), "--vantage", "web_server", "--web.listen-address", "127.0.0.1")
    assert bad.returncode == 2
    assert "argument --web.listen-address: not HOST:PORT, [IPv6]:PORT or :PORT: '127.0.0.1'" in bad.stderr
    free = free_port()
    # the second address is taken (the silent peer holds it): nothing is left serving on the first
    taken = run("serve", "--config.file", str(config), "--vantage", "web_server",
                "--web.listen-address", f"127.0.0.1:{free}", "--web.listen-address", f"127.0.0.1:{silent_port}")
    assert taken.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{silent_port}: " in taken.stderr
