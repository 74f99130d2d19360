"""`illiad-exporter check`, run as a user runs it, against the real SQL Server (FreeTDS),
Z39.50 (yaz-ztest) and Remote Desktop (xrdp) peers: up, with what each says of itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .exporter_process import PUBLIC_PATHS, loopback_site_config, only_test_hosts

CLI = [sys.executable, "-m", "illiad_exporter"]


def write_config(path: Path, *, sql_port: int, z3950_port: int, rdp_port: int) -> Path:
    """Only sql, z3950 and rdp, to the given ports, from every vantage."""
    return loopback_site_config(
        path, timeout="3s",
        switched_off=("web_https", "web_http", *PUBLIC_PATHS, "odyssey", "iso_ill", "sql_from_external"),
        paths=f"""\
      sql: {{port: {sql_port}}}
      z3950: {{host: 127.0.0.1, port: {z3950_port}}}
      rdp: {{host: 127.0.0.1, port: {rdp_port}, expect: open}}
""")


def check(config: Path, vantage: str) -> tuple[int, dict]:
    only_test_hosts(config, vantage)
    done = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", vantage, "--output", "json"],
                          capture_output=True, text=True, timeout=30)
    return done.returncode, json.loads(done.stdout)


def test_check_shows_sql_z3950_and_rdp_peers_up_with_their_versions(tmp_path, tdspool, yaz_ztest, xrdp):
    config = write_config(tmp_path / "illiad.yml", sql_port=tdspool.port, z3950_port=yaz_ztest, rdp_port=xrdp)

    status, report = check(config, "staff_client")
    assert status == 0 and report["ok"] is True, report
    by_path = {r["path"]: r for r in report["results"]}
    assert set(by_path) == {"sql", "z3950"}
    assert by_path["sql"]["up"] and by_path["sql"]["prober"] == "tds"
    assert by_path["sql"]["info"] == {"sqlserver": {"version": "10.0.1600", "encryption": "not_supported"}}
    assert by_path["z3950"]["up"] and by_path["z3950"]["prober"] == "z3950"
    z_info = by_path["z3950"]["info"]["z3950"]
    assert z_info["implementation_name"] == "GFS/YAZ" and z_info["implementation_version"].startswith("5.")

    status, report = check(config, "external")
    assert status == 0, report
    rdp_results = [r for r in report["results"] if r["path"] == "rdp"]
    assert rdp_results and all(r["up"] and r["prober"] == "rdp" for r in rdp_results)
    assert all(r["info"] == {"rdp": {"selected_protocol": "ssl", "negotiation_failure": ""}} for r in rdp_results)


def test_check_fails_the_catalog_rdp_expectation_when_an_rdp_server_answers(tmp_path, tdspool, yaz_ztest, xrdp):
    """The catalog expects Remote Desktop closed from outside: a live RDP server breaks that."""
    config = write_config(tmp_path / "illiad.yml", sql_port=tdspool.port, z3950_port=yaz_ztest, rdp_port=xrdp)
    config.write_text(config.read_text().replace(", expect: open}", "}"))
    status, report = check(config, "external")
    assert status == 1
    (rdp_result, *_) = [r for r in report["results"] if r["path"] == "rdp"]
    assert rdp_result["expect"] == "closed" and rdp_result["observed"] == "open" and rdp_result["met"] is False
