"""`illiad-exporter check`, run as a user runs it, against real local peers of the web
server's protocol paths: slapd (LDAP), nginx as the ILLiad web server, PatronAPI and Symphony."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .exporter_process import loopback_site_config, only_test_hosts

CLI = [sys.executable, "-m", "illiad_exporter"]


def test_check_shows_the_library_peers_up_with_their_versions(tmp_path, slapd, nginx, library_nginx):
    ca = slapd.certs.ca
    config = tmp_path / "illiad.yml"
    loopback_site_config(config, timeout="3s", paths=f"""\
      ldap: {{host: 127.0.0.1, port: {slapd.ldaps_port}, tls_mode: ldaps, ca_file: "{ca}",
              bind_dn: "{slapd.user_dn}", password: {{env: ILLIAD_LDAP_PASSWORD}}}}
      patron_api: {{host: 127.0.0.1, port: {library_nginx.http_port}}}
      symphony_api: {{host: 127.0.0.1, port: {library_nginx.http_port}, base_path: /symws/}}
""", custom=f"""\
      - {{name: illiad_web_local, from: [web_server], role: web_server, port: {nginx.https_port},
          prober: illiad_web, ca_file: "{ca}"}}""")
    env = {**os.environ, "ILLIAD_LDAP_PASSWORD": slapd.user_password}
    only_test_hosts(config, "web_server")
    run = subprocess.run([*CLI, "check", "--config.file", str(config), "--vantage", "web_server", "--output", "json"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    by_path = {r["path"]: r for r in report["results"]}
    assert sorted(by_path) == ["illiad_web_local", "ldap", "patron_api", "symphony_api"]
    assert all(r["up"] and r["reason"] is None for r in by_path.values()), by_path
    assert by_path["ldap"]["prober"] == "ldap"
    assert by_path["ldap"]["info"] == {"ldap": {"ldap_version": "3", "starttls": "true",
                                                "naming_context": slapd.suffix, "vendor": ""}}
    assert by_path["ldap"]["tls"]["verified"] is True
    assert by_path["illiad_web_local"]["info"] == {"web_platform": {"version": "9.2.2.0"}}
    assert by_path["illiad_web_local"]["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert by_path["patron_api"]["prober"] == "patron_api"
    assert by_path["symphony_api"]["prober"] == "symphony_api"
    assert slapd.user_password not in run.stdout + run.stderr
