"""--web.config.file (the exporter-toolkit format): TLS, mutual TLS and basic auth on every
endpoint, checked with real TLS clients (aiohttp over Python's ssl, and Debian's curl)
against the running exporter process."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme

from illiad_exporter.catalog import Role
from illiad_exporter.config import ConfigError
from illiad_exporter.server import build_app
from illiad_exporter.state import ExporterState
from illiad_exporter.webaccess import BasicAuth
from illiad_exporter.webconfig import load_web_config

from .certs import CertFiles, write_cert
from .exporter_process import exporter, log_text, only_test_hosts
from .peers import need_binary
from .test_reload import site_config

PASSWORD = "correct horse battery staple"
# What follows $2y$NN$ in a real hash (made with bcrypt.hashpw): any cost can be put before it.
SALT_AND_DIGEST = "MMCr8ttChrB8yt3h.CH8a.p4EoW1zqxDELD/YUMcH.Z3BjcuNCK0a"
# The salt's 22nd character has bits bcrypt requires to be zero (a hand-edited hash)
BAD_SALT_AND_DIGEST = SALT_AND_DIGEST[:21] + "b" + SALT_AND_DIGEST[22:]
ENDPOINTS = ["/", "/metrics", "/probe?site=alpha", "/-/healthy", "/-/ready", "/nowhere"]


@dataclass(frozen=True)
class Pki:
    server: CertFiles  # server cert for 127.0.0.1, and ca.pem of the trusted CA
    client: CertFiles  # client cert from the trusted CA
    foreign: CertFiles  # client cert from a CA the server does not trust


@pytest.fixture(scope="module")
def pki(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("webpki")
    return Pki(
        server=write_cert(tls_ca, base / "server", "server", "localhost", "127.0.0.1"),
        client=write_cert(tls_ca, base / "client", "client", "prometheus.example.test"),
        foreign=write_cert(trustme.CA(organization_name="someone else's CA"), base / "foreign", "client",
                            "prometheus.example.test"),
    )


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def mutual_tls_web_config(path: Path, pki: Pki, *, more: str = "") -> Path:
    """A web config serving TLS with the test server certificate and requiring a client
    certificate from the test CA; ``more``: YAML lines after it (indented two spaces to
    join tls_server_config, or further sections)."""
    path.write_text(f"""
tls_server_config:
  cert_file: {pki.server.cert}
  key_file: {pki.server.key}
  client_ca_file: {pki.server.ca}
  client_auth_type: RequireAndVerifyClientCert
{more}""")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_context(pki: Pki, client: CertFiles | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server.ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def fetch(url: str, *, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, str, dict[str, str]]:
    connector = aiohttp.TCPConnector(ssl=context if context is not None else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, headers=headers or {}) as response:
            return response.status, await response.text(), dict(response.headers)


@pytest.mark.process
def test_mutual_tls_and_basic_auth_guard_every_endpoint(tmp_path, pki, password_hash, silent_port):
    web_yml = mutual_tls_web_config(tmp_path / "web.yml", pki, more=f"""\
  min_version: TLS12
http_server_config:
  headers: {{X-Content-Type-Options: nosniff, X-Frame-Options: deny}}
basic_auth_users:
  prometheus: {password_hash}
""")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path, "--web.config.file", str(web_yml), scheme="https")
    with peer:
        async def scenario() -> None:
            good = client_context(pki, pki.client)
            for endpoint in ENDPOINTS:
                status, text, headers = await fetch(url + endpoint, context=good, headers=basic("prometheus", PASSWORD))
                assert status == (404 if endpoint == "/nowhere" else 200), (endpoint, text)
                assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "deny"
                for user, password in (("prometheus", "wrong"), ("nobody", PASSWORD), ("", "")):
                    status, text, headers = await fetch(url + endpoint, context=good, headers=basic(user, password))
                    assert (status, text, headers["WWW-Authenticate"]) == (401, "Unauthorized\n", "Basic"), endpoint
                status, _, _ = await fetch(url + endpoint, context=good)
                assert status == 401
            for client in (None, pki.foreign):  # no client certificate; one from another CA
                with pytest.raises(aiohttp.ClientError):
                    await fetch(url + "/-/healthy", context=client_context(pki, client),
                                headers=basic("prometheus", PASSWORD))
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                await fetch(url.replace("https:", "http:") + "/-/healthy", headers=basic("prometheus", PASSWORD))

        asyncio.run(scenario())
        assert "Traceback" not in log_text(peer)


@pytest.mark.peer("curl")
def test_curl_with_and_without_its_client_certificate(tmp_path, pki, password_hash, silent_port):
    curl = need_binary("curl", "curl")
    web_yml = mutual_tls_web_config(tmp_path / "web.yml", pki,
                                    more=f"basic_auth_users: {{prometheus: '{password_hash}'}}\n")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path, "--web.config.file", str(web_yml), scheme="https")

    def curl_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([curl, "--silent", "--show-error", "--max-time", "10", "--cacert", str(pki.server.ca),
                               "--write-out", "\n%{http_code}", *args], capture_output=True, text=True, timeout=20)

    with peer:
        mine = ["--cert", str(pki.client.cert), "--key", str(pki.client.key)]
        ok = curl_run(*mine, "--user", f"prometheus:{PASSWORD}", url + "/metrics")
        assert ok.returncode == 0 and ok.stdout.endswith("\n200"), ok.stderr
        assert 'illiad_port_up{' in ok.stdout
        wrong = curl_run(*mine, "--user", "prometheus:guess", url + "/-/healthy")
        assert wrong.returncode == 0 and wrong.stdout == "Unauthorized\n\n401"
        for args in ([], ["--cert", str(pki.foreign.cert), "--key", str(pki.foreign.key)]):
            refused = curl_run(*args, "--user", f"prometheus:{PASSWORD}", url + "/-/healthy")
            assert refused.returncode in (35, 52, 56), refused  # handshake failed, or closed before any answer
            assert refused.stdout.strip() in ("", "000")  # no HTTP answer at all


def test_successful_checks_are_cached_and_bcrypt_never_blocks_the_loop(tmp_path, silent_port):
    """A cost-11 hash (~0.2 s of CPU per check): while five uncached wrong passwords are
    being checked in the worker thread, a request with already-verified credentials is
    answered at once; bcrypt ran once for the repeated good password."""
    slow_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(11)).decode()
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users: {{prometheus: '{slow_hash}'}}\n")
    web_config = load_web_config(web_yml)
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})

    only_test_hosts(config, Role.WEB_SERVER.value)

    async def scenario() -> None:
        from aiohttp import web

        state = ExporterState(config, Role.WEB_SERVER)
        state.load()
        runner = web.AppRunner(build_app(state, web_config=web_config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        try:
            assert (await fetch(url + "/-/healthy", headers=basic("prometheus", PASSWORD)))[0] == 200
            auth = web_config.auth
            assert auth is not None and auth.bcrypt_checks == 1
            slow = [asyncio.create_task(fetch(url + "/-/healthy", headers=basic("prometheus", f"guess{i}")))
                    for i in range(5)]
            await asyncio.sleep(0.05)
            status, _, _ = await fetch(url + "/-/healthy", headers=basic("prometheus", PASSWORD))
            assert status == 200
            assert sum(t.done() for t in slow) <= 1  # answered while the bcrypt queue was still busy
            assert [r[0] for r in await asyncio.gather(*slow)] == [401] * 5
            assert auth.bcrypt_checks == 6  # the good password was checked once, then cached
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_unknown_users_cost_a_bcrypt_check_too():
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()})

    async def scenario() -> None:
        assert await auth.check("Basic " + base64.b64encode(b"nobody:x").decode()) is False
        assert auth.bcrypt_checks == 1
        for header in ("", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                       "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
            assert await auth.check(header) is False
        assert auth.bcrypt_checks == 1  # malformed headers are refused before bcrypt

    asyncio.run(scenario())


@pytest.mark.parametrize(("text", "errors"), [
    ("tls_server_config: {cert_file: cert.pem}\n",
     ["web.yml:1:1: tls_server_config: missing key_file"]),
    ("tls_server_config: {cert_file: nope.pem, key_file: nope.key}\n",
     ["web.yml:1:21: tls_server_config.cert_file: cannot read @DIR/nope.pem: no such file"]),
    ("tls_server_config:\n  cert_file: @CERT\n  key_file: @KEY\n  client_auth_type: RequireAnyClientCert\n",
     ["web.yml:4:3: tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate asked for but "
      "not verified) is not supported by this exporter (Python's ssl module has no equivalent); remove it; use "
      "RequireAndVerifyClientCert with client_ca_file"]),
    ("tls_server_config:\n  cert_file: @CERT\n  key_file: @KEY\n  client_auth_type: RequireAndVerifyClientCert\n",
     ["web.yml:4:3: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file"]),
    ("tls_server_config:\n  cert_file: @CERT\n  key_file: @KEY\n  client_ca_file: @CA\n",
     ["web.yml:4:3: tls_server_config.client_ca_file: a client CA is configured without a client_auth_type"]),
    ("tls_server_config:\n  cert_file: @CERT\n  key_file: @KEY\n  min_version: TLS14\n",
     ["web.yml:4:3: tls_server_config.min_version: unknown TLS version 'TLS14' (one of: TLS10, TLS11, TLS12, TLS13)"]),
    ("tls_server_config:\n  cert_file: @KEY\n  key_file: @KEY\n",
     ["web.yml:2:3: tls_server_config.cert_file: cannot load the certificate and key (@KEY, @KEY): not a PEM certificate chain with its matching private key"]),
    ("tls_server_config:\n  cert_file: @CERT\n  key_file: @KEY\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     ["web.yml:4:19: tls_server_config.cipher_suites[0]: TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite: Python's ssl "
      "cannot choose those (Go ignores them in this list); remove it, TLS 1.3 always offers its own suites"]),
    ("basic_auth_users:\n  prometheus: hunter2\n",
     ["web.yml:2:3: basic_auth_users.prometheus: not a bcrypt hash (expected $2y$10$... as made by htpasswd -nB "
      "or python -m bcrypt)"]),
    pytest.param("basic_auth_users:\n  slow: $2y$31$@SALTED\n", [
        "web.yml:2:3: basic_auth_users.slow: bcrypt cost 31 is above 14, the most this exporter accepts: each step "
        "doubles the CPU time of checking a password, and a login waits for it (cost 12: about 0.25 s; 31: about 36 "
        "hours); make the hash with a cost of 10 to 12 (htpasswd -nBC 12)"], id="bcrypt-cost-above-the-bound"),
    pytest.param("basic_auth_users:\n  fast: $2y$03$@SALTED\n", [
        "web.yml:2:3: basic_auth_users.fast: bcrypt cost 3 is below 4, bcrypt's minimum: no password would ever "
        "match it; make the hash again (htpasswd -nBC 12)"], id="bcrypt-cost-below-its-minimum"),
    pytest.param("basic_auth_users:\n  odd: $2b$10$@BADSALT\n  old: $2$10$@SALTED\n", [
        "web.yml:2:3: basic_auth_users.odd: not a hash bcrypt can check (its salt does not decode); make the hash "
        "again (htpasswd -nBC 12)",
        "web.yml:3:3: basic_auth_users.old: not a bcrypt hash (expected $2y$10$... as made by htpasswd -nB or "
        "python -m bcrypt)"], id="bcrypt-hashes-bcrypt-cannot-read"),
    ("basic_auth_user: {}\n", ["web.yml:1:1: basic_auth_user: unknown key"]),
    ("http_server_config: {headers: {X-Powered-By: me, X-Frame-Options: allow}}\n",
     ["web.yml:1:32: http_server_config.headers.X-Powered-By: HTTP header 'X-Powered-By' can not be configured",
      "web.yml:1:50: http_server_config.headers.X-Frame-Options: invalid value 'allow' (one of: deny, sameorigin)"]),
    ("[tls]\n", ["web.yml:1:1: the web config must be a mapping (tls_server_config, basic_auth_users, ...)"]),
    ("tls_server_config: {cert_file: [\n", None),
])
def test_bad_web_configs_are_refused_with_file_line_and_reason(tmp_path, pki, text, errors):
    def fill(template: str) -> str:
        return (template.replace("@CERT", str(pki.server.cert)).replace("@KEY", str(pki.server.key))
                .replace("@CA", str(pki.server.ca)).replace("@DIR", str(tmp_path))
                .replace("@SALTED", SALT_AND_DIGEST).replace("@BADSALT", BAD_SALT_AND_DIGEST))

    web_yml = tmp_path / "web.yml"
    web_yml.write_text(fill(text))
    with pytest.raises(ConfigError) as error:
        load_web_config(web_yml)
    lines = [line.replace(str(tmp_path) + "/", "") for line in str(error.value).splitlines()]
    if errors is None:
        assert len(lines) == 1 and lines[0].startswith("web.yml:2:1: invalid YAML")
    else:
        assert lines == [fill(e).replace(str(tmp_path) + "/", "") for e in errors]


@pytest.mark.process
@pytest.mark.parametrize(("users", "error"), [
    ("{prometheus: plain-text-password}", "basic_auth_users.prometheus: not a bcrypt hash"),
    (f"{{prometheus: $2y$31${SALT_AND_DIGEST}}}", "basic_auth_users.prometheus: bcrypt cost 31 is above 14"),
])
def test_serve_refuses_to_start_with_a_bad_web_config(tmp_path, silent_port, users, error):
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users: {users}\n")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    only_test_hosts(config, "web_server")
    result = subprocess.run(
        [sys.executable, "-m", "illiad_exporter", "serve", "--config.file", str(config), "--vantage", "web_server",
         "--web.config.file", str(web_yml), "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("invalid web config, not starting:\n")
    assert f"{web_yml}:1:20: {error}" in result.stderr
    assert users.split(": ")[1].rstrip("}") not in result.stderr  # not even a wrong secret is echoed


def test_relative_paths_are_relative_to_the_web_config_file(tmp_path, pki):
    web_dir = tmp_path / "etc"
    web_dir.mkdir()
    (web_dir / "tls.crt").write_bytes(Path(pki.server.cert).read_bytes())
    (web_dir / "tls.key").write_bytes(Path(pki.server.key).read_bytes())
    (web_dir / "web.yml").write_text("tls_server_config: {cert_file: tls.crt, key_file: tls.key}\n")
    loaded = load_web_config(web_dir / "web.yml")
    assert loaded.scheme == "https" and loaded.auth is None


async def serve_in_process(config: Path, web_config) -> tuple[object, str]:  # type: ignore[no-untyped-def]
    from aiohttp import web

    only_test_hosts(config, Role.WEB_SERVER.value)
    state = ExporterState(config, Role.WEB_SERVER)
    state.load()
    runner = web.AppRunner(build_app(state, web_config=web_config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=web_config.ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"{web_config.scheme}://127.0.0.1:{port}"


def test_rate_limit_answers_429_beyond_the_burst(tmp_path, silent_port):
    (tmp_path / "web.yml").write_text("rate_limit: {interval: 1m, burst: 3}\n")
    web_config = load_web_config(tmp_path / "web.yml")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})

    async def scenario() -> None:
        runner, url = await serve_in_process(config, web_config)
        try:
            statuses = [(await fetch(url + "/-/healthy"))[0] for _ in range(5)]
            assert statuses == [200, 200, 200, 429, 429]
        finally:
            await runner.cleanup()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_client_allowed_sans_admits_only_the_named_client(tmp_path, pki, tls_ca, silent_port):
    other = write_cert(tls_ca, tmp_path / "other", "other", "someone-else.example.test")
    mutual_tls_web_config(tmp_path / "web.yml", pki, more="  client_allowed_sans: [prometheus.example.test]\n")
    web_config = load_web_config(tmp_path / "web.yml")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})

    async def scenario() -> None:
        runner, url = await serve_in_process(config, web_config)
        try:
            assert (await fetch(url + "/-/healthy", context=client_context(pki, pki.client)))[0] == 200
            status, text, _ = await fetch(url + "/-/healthy", context=client_context(pki, other))
            assert (status, text) == (403, "Forbidden: client certificate not allowed\n")
        finally:
            await runner.cleanup()  # type: ignore[attr-defined]

    asyncio.run(scenario())


@pytest.mark.slow
def test_sighup_reloads_users_and_a_rotated_certificate_without_a_restart(tmp_path, pki, tls_ca, silent_port):
    """The certificate files are replaced (cert-manager style) and the password changed;
    after SIGHUP new connections see the new certificate and only the new password works.
    A web config that turns client authentication on is refused until a restart."""
    import signal as signals

    from .exporter_process import wait_until

    first = write_cert(tls_ca, tmp_path / "first", "tls", "127.0.0.1")
    second = write_cert(tls_ca, tmp_path / "second", "tls", "127.0.0.1")
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    live_cert.write_bytes(first.cert.read_bytes())
    live_key.write_bytes(first.key.read_bytes())
    new_hash = bcrypt.hashpw(b"rotated password", bcrypt.gensalt(4)).decode()
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"tls_server_config: {{cert_file: tls.crt, key_file: tls.key}}\n"
                       f"basic_auth_users: {{prometheus: '{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}'}}\n")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, url = exporter(config, tmp_path, "--web.config.file", str(web_yml), scheme="https")
    trust = ssl.create_default_context(cafile=str(pki.server.ca))

    def served_cert() -> bytes:
        port = int(url.rsplit(":", 1)[1])
        import socket as sockets

        with sockets.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True) or b""

    def status(password: str) -> int:
        return asyncio.run(fetch(url + "/-/healthy", context=trust, headers=basic("prometheus", password)))[0]

    def der(pem_file: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(pem_file.read_text().split("-----END CERTIFICATE-----")[0]
                                        + "-----END CERTIFICATE-----\n")

    with peer:
        assert served_cert() == der(first.cert) and status(PASSWORD) == 200
        live_cert.write_bytes(second.cert.read_bytes())
        live_key.write_bytes(second.key.read_bytes())
        web_yml.write_text(f"tls_server_config: {{cert_file: tls.crt, key_file: tls.key}}\n"
                           f"basic_auth_users: {{prometheus: '{new_hash}'}}\n")
        peer.process.send_signal(signals.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: served_cert() == der(second.cert), what="the rotated certificate")
        assert status("rotated password") == 200 and status(PASSWORD) == 401

        web_yml.write_text(web_yml.read_text().replace(
            "key_file: tls.key}", f"key_file: tls.key, client_ca_file: {pki.server.ca}, "
                                  "client_auth_type: RequireAndVerifyClientCert}"))
        peer.process.send_signal(signals.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "web config reload failed" in log_text(peer), what="the refused web config")
        assert status("rotated password") == 200  # still served, without client certificates
    assert "changing client_auth_type, client_ca_file needs a restart" in log_text(peer)
