"""Secrets come from the environment or a file and appear nowhere else: not in a metric, a
page, a log line (at debug level) or an error message, whatever happens."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from .exporter_process import exporter, fetch, log_text, loopback_site_config
from .test_server import value


def secret_config(path, slapd, password_file, refusing_port: int):  # type: ignore[no-untyped-def]
    loopback_site_config(path, timeout="2s", top="probe_allow: [\"127.0.0.1/32\"]\n", custom=f"""\
      - {{name: ldap_env, from: [web_server], host: 127.0.0.1, port: {slapd.ldap_port}, prober: ldap,
          bind_dn: "{slapd.user_dn}", password: {{env: ILLIAD_TEST_SECRET}}}}
      - {{name: ldap_file, from: [web_server], host: 127.0.0.1, port: {slapd.ldap_port}, prober: ldap,
          bind_dn: "{slapd.user_dn}", password: {{file: {password_file}}}}}
      - {{name: ldap_closed, from: [web_server], host: 127.0.0.1, port: {refusing_port}, prober: ldap,
          bind_dn: "{slapd.user_dn}", password: {{env: ILLIAD_TEST_SECRET}}}}""")
    return path


@pytest.mark.slow
def test_planted_secrets_appear_in_no_output(tmp_path, slapd, refusing_port):
    """The env secret is the right password (a bind that works), the file secret a wrong one
    (a bind refused: reason auth), a third path fails to connect; then a reload fails twice,
    once with a secret pasted inline. Every endpoint's body and headers, the debug log, and
    check/validate output are searched for both secrets."""
    env_secret = slapd.user_password  # only the env holds it; the config names the variable
    file_secret = f"file-secret-{uuid.uuid4().hex}"
    password_file = tmp_path / "ldap-password"
    password_file.write_text(file_secret + "\n")
    config = secret_config(tmp_path / "c.yml", slapd, password_file, refusing_port)
    env = {"ILLIAD_TEST_SECRET": env_secret}
    outputs: list[str] = []

    peer, url = exporter(config, tmp_path, "--log.level", "debug", env=env)
    with peer:
        status, metrics = fetch(url + "/metrics")
        assert status == 200
        assert value(metrics, "illiad_port_up", path="ldap_env") == 1.0
        assert value(metrics, "illiad_probe_failure_reason", path="ldap_file", reason="auth") == 1.0
        assert value(metrics, "illiad_probe_failure_reason", path="ldap_closed", reason="refused") == 1.0
        outputs.append(metrics)
        for endpoint in ("/", "/probe?site=lib", "/probe?site=lib&path=ldap_file", "/-/healthy", "/-/ready",
                         f"/probe?target=127.0.0.1:{slapd.ldap_port}&prober=ldap"):
            outputs.append("%s %s" % fetch(url + endpoint))
        # a failing reload: a broken key, then the file secret pasted inline by mistake
        config.write_text(config.read_text().replace("timeout: 2s", "timeout: never"))
        outputs.append("%s %s" % fetch(url + "/-/reload", method="POST"))
        config.write_text(config.read_text().replace(f"{{file: {password_file}}}", f'"{file_secret}"'))
        status, body = fetch(url + "/-/reload", method="POST")
        assert status == 500 and "inline secrets are not allowed" in body
        outputs.append(body)
        status, metrics = fetch(url + "/metrics")  # the running config still probes, secrets and all
        assert value(metrics, "illiad_exporter_config_last_reload_successful") == 0.0
        assert value(metrics, "illiad_probe_failure_reason", path="ldap_file", reason="auth") == 1.0
        outputs.append(metrics)
    outputs.append(log_text(peer))
    assert "ldap_file" in outputs[-1] and "level=debug" in outputs[-1]  # the debug log did talk about it

    config_ok = secret_config(tmp_path / "ok.yml", slapd, password_file, refusing_port)
    for args in (["check", "--output", "json", "--vantage", "web_server"], ["check", "--vantage", "web_server"],
                 ["validate"]):
        for config_file in (config_ok, config):
            result = subprocess.run([sys.executable, "-m", "illiad_exporter", *args, "--config.file", str(config_file),
                                     "--log.level", "debug"], capture_output=True, text=True, timeout=60,
                                    env={**os.environ, **env})
            outputs.append(result.stdout + result.stderr)

    everything = "\n".join(outputs)
    assert "auth" in everything and "refused" in everything  # the failures were reported...
    assert env_secret not in everything  # ...without the secrets
    assert file_secret not in everything
