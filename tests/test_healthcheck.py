"""`illiad-exporter healthcheck` against the running exporter under each kind of web config:
healthy whenever the exporter serves, unhealthy when it does not (stopped, or something else
holds the port)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .exporter_process import exporter
from .test_reload import site_config
from .test_webconfig import PASSWORD, Pki, password_hash, pki  # noqa: F401 (fixtures)

pytestmark = pytest.mark.process  # the exporter and the healthcheck command, each a process

CLI = [sys.executable, "-m", "illiad_exporter", "healthcheck"]


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("ILLIAD_EXPORTER_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, env={**clean, **(env or {})})


def web_configs(pki: Pki, password_hash: str) -> dict[str, str]:  # noqa: F811
    tls = f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
    mtls = tls + f"  client_ca_file: {pki.server.ca}\n  client_auth_type: RequireAndVerifyClientCert\n"
    return {
        "plain": "",
        "basic-auth": f"basic_auth_users: {{prometheus: '{password_hash}'}}\n",
        "tls": tls,
        "mtls": mtls,
        "mtls-tls12": mtls + "  max_version: TLS12\n",
        "tls-basic-auth": tls + f"basic_auth_users: {{prometheus: '{password_hash}'}}\n",
    }


EXPECTED = {
    "plain": "serving (200)",
    "basic-auth": "serving (401, asks for basic auth)",
    "tls": "serving (200)",
    "mtls": "serving (TLS handshake answered; a client certificate is required to go further)",
    "mtls-tls12": "serving (200)",  # with the client certificate: TLS 1.2 refuses the handshake without one
    "tls-basic-auth": "serving (401, asks for basic auth)",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_healthy_while_serving_and_unhealthy_once_stopped(tmp_path: Path, pki, password_hash, silent_port,  # noqa: F811
                                                          kind: str) -> None:
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(web_configs(pki, password_hash)[kind])
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    scheme = "https" if "tls" in kind else "http"
    peer, _ = exporter(config, tmp_path, *(["--web.config.file", str(web_yml)] if kind != "plain" else []))
    address = f"127.0.0.1:{peer.port}"
    with peer:
        url = f"{scheme}://{address}/-/healthy"
        client = {}
        if kind == "mtls-tls12":
            client = {"ILLIAD_EXPORTER_HEALTHCHECK_CERT_FILE": str(pki.client.cert),
                      "ILLIAD_EXPORTER_HEALTHCHECK_KEY_FILE": str(pki.client.key)}
            refused = healthcheck("--address", address, "--web.config.file", str(web_yml))
            assert refused.returncode == 1
            assert refused.stdout.startswith(f"unhealthy: {url}: TLS failed: ")
            assert refused.stdout.endswith("(mutual TLS: set ILLIAD_EXPORTER_HEALTHCHECK_CERT_FILE and "
                                           "ILLIAD_EXPORTER_HEALTHCHECK_KEY_FILE)\n")
        told = healthcheck("--address", address, "--web.config.file", str(web_yml), env=client)
        assert (told.returncode, told.stdout) == (0, f"healthy: {url}: {EXPECTED[kind]}\n"), told.stderr
        # the same from the environment the container sets, and with no web config at all
        from_env = healthcheck("--address", address, env={**client, "ILLIAD_EXPORTER_WEB_CONFIG": str(web_yml)})
        assert from_env.stdout == told.stdout
        if not kind.startswith("mtls"):
            guessed = healthcheck("--address", address)
            assert (guessed.returncode, guessed.stdout) == (0, f"healthy: {url}: {EXPECTED[kind]}\n")
        if "basic-auth" in kind:  # with credentials only a 200 counts: a wrong password is unhealthy
            env = {"ILLIAD_EXPORTER_HEALTHCHECK_USERNAME": "prometheus"}
            good = healthcheck("--address", address, env={**env, "ILLIAD_EXPORTER_HEALTHCHECK_PASSWORD": PASSWORD})
            assert good.stdout == f"healthy: {url}: serving (200)\n"
            bad = healthcheck("--address", address, env={**env, "ILLIAD_EXPORTER_HEALTHCHECK_PASSWORD": "guess"})
            assert (bad.returncode, bad.stdout) == (1, f"unhealthy: {url}: answered 401\n")
    stopped = healthcheck("--address", address, "--web.config.file", str(web_yml))
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"unhealthy: {scheme}://{address}/-/healthy: ")
    assert "refused" in stopped.stdout.lower()


def test_unhealthy_when_the_port_holds_something_that_does_not_answer(silent_port) -> None:
    told = healthcheck("--address", f"127.0.0.1:{silent_port}", "--timeout", "1")
    assert told.returncode == 1
    assert told.stdout == f"unhealthy: http://127.0.0.1:{silent_port}/-/healthy: timed out\n"


def test_expect_metric_scrapes_and_requires_the_metric(tmp_path: Path, silent_port) -> None:
    """What the chart's `helm test` runs: a scrape of /metrics and of /probe?site= that must
    carry the named metrics."""
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    with exporter(config, tmp_path)[0] as peer:
        address = f"127.0.0.1:{peer.port}"
        ok = healthcheck("--address", address, "--path", "/probe?site=alpha", "--expect-metric", "illiad_port_up")
        assert (ok.returncode, ok.stdout) == (0, f"healthy: http://{address}/probe?site=alpha: serving (200)\n")
        missing = healthcheck("--address", address, "--path", "/metrics", "--expect-metric", "illiad_no_such")
        assert (missing.returncode, missing.stdout) == (
            1, f"unhealthy: http://{address}/metrics: 200, but no illiad_no_such in the answer\n")
        unknown = healthcheck("--address", address, "--path", "/probe?site=nowhere", "--expect-metric", "up")
        assert (unknown.returncode, unknown.stdout) == (1, f"unhealthy: http://{address}/probe?site=nowhere: "
                                                           "answered 400\n")
