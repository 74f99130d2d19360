"""The ILLiad web, PatronAPI and Symphony probers against real nginx servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from illiad_exporter.probers import Reason
from illiad_exporter.probers.patron_api import PROBE_BARCODE

from .certs import CertFiles
from .peers import free_port, nginx_peer
from .probing import make_target, probe

pytestmark = pytest.mark.peer("nginx")


@pytest.fixture(scope="module")
def legacy_tls_nginx(server_cert: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An ILLiad web server that still speaks only TLS 1.0 and 1.1 (security level 0 ciphers)."""
    https_port, http_port = free_port(), free_port()
    with nginx_peer(tmp_path_factory.mktemp("legacy-nginx"), cert=server_cert.cert, key=server_cert.key,
                    https_port=https_port, http_port=http_port, ssl_protocols="TLSv1 TLSv1.1",
                    ssl_ciphers="DEFAULT:@SECLEVEL=0"):
        yield https_port


# --- illiad_web ---------------------------------------------------------------------------

def test_illiad_web_reads_the_platform_version_and_tls_facts(nginx):
    result = probe(make_target("illiad_web", nginx.https_port, ca_file=str(nginx.certs.ca)))
    assert result.up, result.detail
    assert [(i.name, dict(i.labels)) for i in result.infos] == [("web_platform", {"version": "9.2.2.0"})]
    assert result.tls is not None and result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert set(result.phases) == {"resolve", "connect", "tls", "handshake"}


def test_illiad_web_without_web_platform_skips_the_version(nginx):
    result = probe(make_target("illiad_web", nginx.https_port, ca_file=str(nginx.certs.ca), web_platform=False))
    assert result.up, result.detail
    assert result.infos == []


def test_illiad_web_missing_logon_page_is_http_status(nginx):
    result = probe(make_target("illiad_web", nginx.https_port, ca_file=str(nginx.certs.ca),
                               logon_path="/illiad/missing.html"))
    assert result.reason is Reason.HTTP_STATUS
    assert result.detail == "GET /illiad/missing.html answered 404"


def test_illiad_web_missing_web_platform_is_http_status_with_a_hint(library_nginx, server_cert):
    result = probe(make_target("illiad_web", library_nginx.https_port, ca_file=str(server_cert.ca),
                               logon_path="/symws/rest/standard/version"))
    assert result.reason is Reason.HTTP_STATUS
    assert "answered 404" in result.detail and "web_platform: false" in result.detail


def test_illiad_web_platform_answer_without_a_version_is_protocol(nginx):
    result = probe(make_target("illiad_web", nginx.https_port, ca_file=str(nginx.certs.ca),
                               platform_path="/illiad/logon.html"))
    assert result.reason is Reason.PROTOCOL
    assert "no ILLiad Platform Version" in result.detail


def test_illiad_web_untrusted_certificate_is_tls(nginx):
    result = probe(make_target("illiad_web", nginx.https_port))
    assert result.reason is Reason.TLS
    assert "certificate" in result.detail


def test_illiad_web_reports_tls_below_1_2_as_tls_failure_with_the_version(legacy_tls_nginx, server_cert):
    result = probe(make_target("illiad_web", legacy_tls_nginx, ca_file=str(server_cert.ca)))
    assert result.reason is Reason.TLS
    assert result.tls is not None and result.tls.version == "TLSv1.1"
    assert result.detail == "negotiated TLSv1.1, older than min_tls_version TLSv1.2"


def test_illiad_web_accepts_old_tls_when_the_site_lowers_the_floor(legacy_tls_nginx, server_cert):
    result = probe(make_target("illiad_web", legacy_tls_nginx, ca_file=str(server_cert.ca),
                               min_tls_version="TLSv1"))
    assert result.up, result.detail
    assert result.tls is not None and result.tls.version == "TLSv1.1"
    assert dict(result.infos[0].labels) == {"version": "9.2.2.0"}


# --- patron_api ---------------------------------------------------------------------------

def test_patron_api_unknown_barcode_answer_is_up_and_pintest_is_never_requested(library_nginx):
    result = probe(make_target("patron_api", library_nginx.http_port))
    assert result.up, result.detail
    paths = library_nginx.requested_paths()
    assert f"/PATRONAPI/{PROBE_BARCODE}/dump" in paths
    assert not [p for p in paths if "pintest" in p.lower()]


def test_patron_api_record_dump_is_up_over_https(library_nginx, server_cert):
    result = probe(make_target("patron_api", library_nginx.https_port, scheme="https", ca_file=str(server_cert.ca),
                               barcode="21913000482538"))
    assert result.up, result.detail
    assert result.tls is not None and result.tls.verified


def test_patron_api_other_service_is_protocol(library_nginx, nginx):
    wrong = probe(make_target("patron_api", library_nginx.http_port, barcode="WRONGSERVICE"))
    assert wrong.reason is Reason.PROTOCOL
    assert wrong.detail.startswith("not a PatronAPI answer: b'<html>Welcome")
    not_found = probe(make_target("patron_api", nginx.http_port))  # the ILLiad web server, not PatronAPI
    assert not_found.reason is Reason.PROTOCOL
    assert not_found.detail == "not a PatronAPI answer: HTTP 404"


def test_patron_api_error_answer_is_protocol_with_its_message(library_nginx):
    result = probe(make_target("patron_api", library_nginx.http_port, barcode="21913000000001"))
    assert result.reason is Reason.PROTOCOL
    assert result.detail == "PatronAPI error ERRNUM=4 Access denied for this address"


def test_patron_api_barcode_cannot_reach_another_endpoint():
    with pytest.raises(ValueError, match="barcode"):
        make_target("patron_api", 4500, barcode="123/pintest")


# --- symphony_api -------------------------------------------------------------------------

def test_symphony_any_http_answer_from_the_base_url_is_up(library_nginx):
    result = probe(make_target("symphony_api", library_nginx.http_port, base_path="/symws/"))
    assert result.up, result.detail  # a 401 still shows the service listens
    assert library_nginx.requested_paths().count("/symws/") >= 1


def test_symphony_configured_request_with_expected_status(library_nginx):
    good = probe(make_target("symphony_api", library_nginx.http_port, request_path="/symws/rest/standard/version"))
    assert good.up, good.detail
    bad = probe(make_target("symphony_api", library_nginx.http_port, request_path="/symws/rest/other"))
    assert bad.reason is Reason.HTTP_STATUS
    assert bad.detail == "GET /symws/rest/other answered 401, expected 200"


def test_symphony_over_https_records_tls(library_nginx, server_cert):
    result = probe(make_target("symphony_api", library_nginx.https_port, scheme="https", ca_file=str(server_cert.ca)))
    assert result.up, result.detail
    assert result.tls is not None and result.tls.verified
