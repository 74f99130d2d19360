"""The web config's cipher_suites and curve_preferences (Go's names, as a web config shared
with the node or blackbox exporter writes them), honoured by the running exporter: checked
with real TLS clients (Python's ssl and the openssl command) that offer only an excluded
suite or curve (refused) or an allowed one (served)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from illiad_exporter.webconfig import _GO_CIPHER_SUITES

from .certs import CertFiles, write_cert
from .exporter_process import exporter
from .peers import need_binary
from .test_reload import site_config
from .test_webconfig import Pki, pki  # noqa: F401 (the fixture)

ALLOWED = "ECDHE-ECDSA-AES128-GCM-SHA256"  # the test certificates have ECDSA keys
EXCLUDED = "ECDHE-ECDSA-AES256-GCM-SHA384"


def get_healthy(port: int, ca: Path, *, ciphers: str | None = None, curve: str | None = None,
                tls12_only: bool = False) -> tuple[str, str]:
    """GET /-/healthy over TLS; (the negotiated suite, the status line), or ssl.SSLError."""
    context = ssl.create_default_context(cafile=str(ca))
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if curve is not None:
        context.set_ecdh_curve(curve)  # the one key exchange group this client offers
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = tls.recv(4096).split(b"\r\n", 1)[0].decode()
        return tls.cipher()[0], status  # type: ignore[index]


def start(tmp_path: Path, server: CertFiles, silent_port: int, tls_lines: str):  # type: ignore[no-untyped-def]
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n{tls_lines}")
    config = site_config(tmp_path / "c.yml", "alpha", {"a_sql": silent_port})
    peer, _ = exporter(config, tmp_path, "--web.config.file", str(web_yml), scheme="https")
    return peer


@pytest.mark.peer("openssl")
def test_cipher_suites_serve_only_the_listed_tls12_suites(tmp_path, pki, silent_port):  # noqa: F811
    peer = start(tmp_path, pki.server, silent_port, "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n")
    with peer:
        ca = pki.server.ca
        assert get_healthy(peer.port, ca, ciphers=ALLOWED, tls12_only=True) == (ALLOWED, "HTTP/1.1 200 OK")
        with pytest.raises(ssl.SSLError):  # an alert or a closed connection: no HTTP answer
            get_healthy(peer.port, ca, ciphers=EXCLUDED, tls12_only=True)
        # TLS 1.3 keeps its own suites, as in Go: a modern client is served
        suite, status = get_healthy(peer.port, ca)
        assert suite.startswith("TLS_") and status == "HTTP/1.1 200 OK"

        openssl = need_binary("openssl", "openssl")

        def s_client(cipher: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{peer.port}", "-tls1_2",
                                   "-cipher", cipher, "-CAfile", str(ca), "-verify_return_error", "-brief"],
                                  input="", capture_output=True, text=True, timeout=20)

        served = s_client(ALLOWED)
        assert served.returncode == 0 and f"Ciphersuite: {ALLOWED}" in served.stderr, served.stderr
        refused = s_client(EXCLUDED)
        assert refused.returncode != 0 and "Ciphersuite:" not in refused.stderr, refused.stderr


@pytest.mark.peer("openssl")
def test_without_cipher_suites_the_same_client_is_served(tmp_path, pki, silent_port):  # noqa: F811
    """The contrast that makes the refusal above the web config's doing."""
    with start(tmp_path, pki.server, silent_port, "") as peer:
        assert get_healthy(peer.port, pki.server.ca, ciphers=EXCLUDED, tls12_only=True) == (
            EXCLUDED, "HTTP/1.1 200 OK")


@pytest.mark.peer("openssl")
def test_curve_preferences_offer_only_the_named_curve(tmp_path, silent_port):
    # An RSA certificate: with an ECDSA one, a TLS 1.2 client's curve list also limits the
    # certificate's curve, and a refusal would not show what the web config did.
    rsa = write_cert(trustme.CA(key_type=trustme.KeyType.RSA), tmp_path / "rsa", "server", "127.0.0.1",
                      key_type=trustme.KeyType.RSA)
    with start(tmp_path, rsa, silent_port, "  curve_preferences: [CurveP384]\n") as peer:
        for tls12_only in (True, False):
            assert get_healthy(peer.port, rsa.ca, curve="secp384r1", tls12_only=tls12_only)[1] == "HTTP/1.1 200 OK"
            for other in ("prime256v1", "X25519"):
                with pytest.raises(ssl.SSLError):
                    get_healthy(peer.port, rsa.ca, curve=other, tls12_only=tls12_only)
    with start(tmp_path, rsa, silent_port, "") as peer:  # contrast: by default those curves are served
        for other in ("prime256v1", "X25519"):
            assert get_healthy(peer.port, rsa.ca, curve=other, tls12_only=True)[1] == "HTTP/1.1 200 OK"
            assert get_healthy(peer.port, rsa.ca, curve=other)[1] == "HTTP/1.1 200 OK"


@pytest.mark.peer("openssl")
def test_go_suite_names_map_to_the_openssl_suites_of_the_same_standard_name():
    """The table agrees with OpenSSL's own IANA-name list for every suite this OpenSSL has."""
    openssl = need_binary("openssl", "openssl")
    listing = subprocess.run([openssl, "ciphers", "-stdname", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    standard = {}
    for line in listing.splitlines():
        iana, _, openssl_name = line.split()[:3]
        standard[iana] = openssl_name
    checked = 0
    for go_name, openssl_name in _GO_CIPHER_SUITES.items():
        iana = go_name if go_name.endswith(("_SHA", "_SHA256", "_SHA384")) else go_name + "_SHA256"
        if iana in standard:
            assert standard[iana] == openssl_name, go_name
            checked += 1
    assert checked >= 18  # all but RC4 and 3DES, which OpenSSL 3 leaves out


def test_what_python_cannot_honour_is_refused_at_start_with_file_line_and_reason(tmp_path, pki):  # noqa: F811
    from illiad_exporter.config import ConfigError
    from illiad_exporter.webconfig import load_web_config

    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"""tls_server_config:
  cert_file: {pki.server.cert}
  key_file: {pki.server.key}
  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    - TLS_CHACHA20_POLY1305_SHA256
    - TLS_RSA_WITH_3DES_EDE_CBC_SHA
    - TLS_ECDHE_WITH_MAGIC
  curve_preferences: [X25519, CurveP256]
""")
    with pytest.raises(ConfigError) as error:
        load_web_config(web_yml)
    assert str(error.value).replace(str(tmp_path) + "/", "").splitlines() == [
        "web.yml:6:7: tls_server_config.cipher_suites[1]: TLS_CHACHA20_POLY1305_SHA256 is a TLS 1.3 suite: "
        "Python's ssl cannot choose those (Go ignores them in this list); remove it, TLS 1.3 always offers its own "
        "suites",
        f"web.yml:7:7: tls_server_config.cipher_suites[2]: TLS_RSA_WITH_3DES_EDE_CBC_SHA (DES-CBC3-SHA) is not "
        f"available in {ssl.OPENSSL_VERSION}, which this Python uses",
        "web.yml:8:7: tls_server_config.cipher_suites[3]: unknown cipher suite 'TLS_ECDHE_WITH_MAGIC' (Go's "
        "crypto/tls names, e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)",
        "web.yml:9:3: tls_server_config.curve_preferences: Python's ssl can offer one curve only "
        "(SSLContext.set_ecdh_curve), not a list of 2; keep the one to use",
    ]
    web_yml.write_text(f"tls_server_config: {{cert_file: {pki.server.cert}, key_file: {pki.server.key}, "
                       "curve_preferences: [CurveP224]}\n")
    with pytest.raises(ConfigError, match=r"web.yml:1:\d+: tls_server_config.curve_preferences\[0\]: unknown or "
                                          r"unsupported curve 'CurveP224' \(one of: CurveP256, CurveP384, "
                                          r"CurveP521, X25519\)"):
        load_web_config(web_yml)
