"""The command line, run as a user runs it: as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from .peers import free_port, wait_for_port
from .test_server import write_config

CLI = [sys.executable, "-m", "illiad_exporter"]
CONFIGS = Path(__file__).parent / "configs"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_check_exits_0_when_every_expectation_is_met(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    result = run("check", "--config.file", str(config), "--vantage", "web_server")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SITE", "PATH", "TARGET", "EXPECTED", "OBSERVED", "LATENCY", "REASON"]
    assert lines[1].split()[:5] == ["lib", "sql", f"127.0.0.1:{silent_port}", "open", "open"]
    assert lines[1].split()[-1] == "ok"
    assert "skipped" in lines[2] and "odyssey" in lines[2]
    assert lines[-1] == "1 probe(s) from web_server: all expectations met"


def test_check_exits_1_and_names_the_reason_when_a_path_is_down(tmp_path, silent_port, refusing_port):
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    result = run("check", "--config.file", str(config), "--vantage", "staff_client", "--output", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    by_path = {r["path"]: r for r in report["results"]}
    assert by_path["web_https"]["reason"] == "refused" and by_path["web_https"]["met"] is False
    assert by_path["sql"]["up"] is True and by_path["sql"]["latency_seconds"] > 0


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


def test_vantage_is_required():
    result = run("check", "--config.file", str(CONFIGS / "valid-minimal.yml"))
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
    bad = run("serve", "--config.file", str(CONFIGS / "valid-minimal.yml"), "--vantage", "web_server",
              "--web.listen-address", "127.0.0.1")
    assert bad.returncode == 2
    assert "argument --web.listen-address: not HOST:PORT, [IPv6]:PORT or :PORT: '127.0.0.1'" in bad.stderr
    config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
    free = free_port()
    # the second address is taken (the silent peer holds it): nothing is left serving on the first
    taken = run("serve", "--config.file", str(config), "--vantage", "web_server",
                "--web.listen-address", f"127.0.0.1:{free}", "--web.listen-address", f"127.0.0.1:{silent_port}")
    assert taken.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{silent_port}: " in taken.stderr
