"""The core probers (tcp, tls, http) against real listeners on loopback."""

from __future__ import annotations

import time

import pytest

from illiad_exporter.probers import Reason

from .probing import make_target, probe


def test_tcp_open_port_is_up_with_connect_latency(silent_port):
    result = probe(make_target("tcp", silent_port))
    assert result.up and result.reason is None
    assert result.address == "127.0.0.1"
    assert 0 < result.connect_latency < 0.5
    assert result.phases["resolve"] == 0.0  # an address literal needs no resolution


def test_tcp_refused_port_says_refused_and_has_no_latency(refusing_port):
    result = probe(make_target("tcp", refusing_port))
    assert not result.up
    assert result.reason is Reason.REFUSED
    assert "refused" in result.detail
    assert result.connect_latency is None


def test_tcp_dropped_syn_times_out_within_the_timeout(dropping_port):
    started = time.monotonic()
    result = probe(make_target("tcp", dropping_port, timeout=0.5))
    elapsed = time.monotonic() - started
    assert result.reason is Reason.TIMEOUT
    assert 0.45 <= elapsed < 1.5
    assert result.connect_latency is None


def test_name_missing_from_hosts_table_fails_as_dns_without_a_query(refusing_port):
    target = make_target("tcp", refusing_port, host="sql.example.invalid")
    object.__setattr__(target, "system_resolver", False)
    result = probe(target)
    assert result.reason is Reason.DNS
    assert "hosts table" in result.detail


def test_hosts_table_address_is_used_instead_of_dns(silent_port):
    target = make_target("tcp", silent_port, host="sql.example.invalid")
    object.__setattr__(target, "static_addresses", ("127.0.0.1",))
    object.__setattr__(target, "system_resolver", False)
    result = probe(target)
    assert result.up and result.address == "127.0.0.1"


def test_ipv4_literal_with_ipv6_only_policy_is_a_dns_failure(silent_port):
    target = make_target("tcp", silent_port)
    object.__setattr__(target, "ip_protocol", "ip6")
    object.__setattr__(target, "ip_fallback", False)
    result = probe(target)
    assert result.reason is Reason.DNS
    assert "no ip6 address" in result.detail


def test_localhost_resolves_and_resolution_is_timed(silent_port):
    result = probe(make_target("tcp", silent_port, host="localhost"))
    assert result.up
    assert "resolve" in result.phases and result.phases["resolve"] >= 0


def test_tls_against_nginx_reports_version_and_chain_expiry(nginx):
    result = probe(make_target("tls", nginx.https_port, ca_file=str(nginx.certs.ca)))
    assert result.up, result.detail
    assert result.tls is not None
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.tls.verified
    days_left = (result.tls.cert_not_after - time.time()) / 86400
    assert 59 < days_left < 61  # the leaf (60 days) expires before the test CA
    assert result.phases["tls"] > 0


def test_tls_untrusted_certificate_fails_with_tls(nginx):
    result = probe(make_target("tls", nginx.https_port))  # system store does not know the test CA
    assert result.reason is Reason.TLS
    assert "certificate" in result.detail


def test_tls_insecure_skip_verify_still_reports_expiry(nginx):
    result = probe(make_target("tls", nginx.https_port, insecure_skip_verify=True))
    assert result.up
    assert result.tls is not None and not result.tls.verified
    assert result.tls.cert_not_after > time.time()


def test_tls_wrong_server_name_fails_verification(nginx):
    result = probe(make_target("tls", nginx.https_port, ca_file=str(nginx.certs.ca), server_name="illiad.example.edu"))
    assert result.reason is Reason.TLS


def test_tls_against_plain_http_port_fails_with_tls(nginx):
    result = probe(make_target("tls", nginx.http_port, ca_file=str(nginx.certs.ca)))
    assert result.reason is Reason.TLS


def test_https_logon_page_is_up(nginx):
    target = make_target("http", nginx.https_port, scheme="https", path="/illiad/logon.html",
                         ca_file=str(nginx.certs.ca))
    result = probe(target)
    assert result.up, result.detail
    assert result.tls is not None
    assert set(result.phases) == {"resolve", "connect", "tls", "handshake"}


def test_http_unexpected_status_is_http_status(nginx):
    result = probe(make_target("http", nginx.http_port, path="/status/500"))
    assert result.reason is Reason.HTTP_STATUS
    assert "500" in result.detail


def test_http_expected_status_list_accepts_a_404(nginx):
    result = probe(make_target("http", nginx.http_port, path="/nowhere", valid_status=[404]))
    assert result.up


def test_http_path_must_be_absolute():
    with pytest.raises(ValueError, match="path must start with '/'"):
        make_target("http", 80, path="illiad/logon.html")


def test_odyssey_and_iso_ill_connect_only(silent_port):
    for prober in ("odyssey", "iso_ill"):
        assert probe(make_target(prober, silent_port)).up
