"""The LDAP prober against a real slapd (ldap://, ldaps://, StartTLS, binds) and against
hand-made servers that misbehave as no real one does on purpose (the wrong service and
malformed answers: test_prober_wrong_servers.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from illiad_exporter.metrics import ProbeCollector
from illiad_exporter.probers import ProbeFailure, ProbeResult, Reason
from illiad_exporter.probers.ldap import LdapOptions, LdapSession
from illiad_exporter.probers.net import Connection
from illiad_exporter.scrape import Outcome

from .probing import make_target, probe
from .scripted import ScriptedServer


def ldap_info(result) -> dict[str, str]:
    infos = [dict(i.labels) for i in result.infos if i.name == "ldap"]
    assert len(infos) == 1, result.infos
    return infos[0]


# --- against slapd ------------------------------------------------------------------------

def test_anonymous_root_dse_read_on_plain_ldap(slapd):
    result = probe(make_target("ldap", slapd.ldap_port))
    assert result.up, result.detail
    assert ldap_info(result) == {"ldap_version": "3", "starttls": "true", "naming_context": slapd.suffix,
                                 "vendor": ""}
    assert result.tls is None
    assert set(result.phases) == {"resolve", "connect", "handshake"}


def test_ldaps_negotiates_tls_first_and_records_tls_facts(slapd):
    result = probe(make_target("ldap", slapd.ldaps_port, tls_mode="ldaps", ca_file=str(slapd.certs.ca)))
    assert result.up, result.detail
    assert result.tls is not None and result.tls.verified
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.phases["tls"] > 0
    assert ldap_info(result)["naming_context"] == slapd.suffix


def test_starttls_upgrades_the_plain_port(slapd):
    result = probe(make_target("ldap", slapd.ldap_port, tls_mode="starttls", ca_file=str(slapd.certs.ca)))
    assert result.up, result.detail
    assert result.tls is not None and result.tls.verified
    assert ldap_info(result)["starttls"] == "true"


def test_starttls_with_an_untrusted_certificate_is_tls(slapd):
    result = probe(make_target("ldap", slapd.ldap_port, tls_mode="starttls"))
    assert result.reason is Reason.TLS
    assert "certificate not trusted" in result.detail


def test_ldaps_against_the_plain_port_is_tls(slapd):
    result = probe(make_target("ldap", slapd.ldap_port, tls_mode="ldaps", ca_file=str(slapd.certs.ca)))
    assert result.reason is Reason.TLS


def test_port_636_means_ldaps_unless_told_otherwise():
    assert LdapOptions().mode_for(636) == "ldaps"
    assert LdapOptions().mode_for(389) == "none"
    assert LdapOptions(tls_mode="starttls").mode_for(636) == "starttls"


def test_authenticated_bind_with_password_from_env(slapd, monkeypatch):
    monkeypatch.setenv("ILLIAD_TEST_LDAP_PASSWORD", slapd.user_password)
    result = probe(make_target("ldap", slapd.ldaps_port, tls_mode="ldaps", ca_file=str(slapd.certs.ca),
                               bind_dn=slapd.user_dn, password={"env": "ILLIAD_TEST_LDAP_PASSWORD"}))
    assert result.up, result.detail
    assert ldap_info(result)["naming_context"] == slapd.suffix


def test_authenticated_bind_with_password_and_dn_from_files(slapd, tmp_path):
    (tmp_path / "password").write_text(slapd.user_password + "\n")
    (tmp_path / "dn").write_text(slapd.user_dn)
    result = probe(make_target("ldap", slapd.ldap_port, tls_mode="starttls", ca_file=str(slapd.certs.ca),
                               bind_dn={"file": str(tmp_path / "dn")}, password={"file": str(tmp_path / "password")}))
    assert result.up, result.detail


def test_wrong_password_is_auth_and_the_server_is_still_described(slapd, monkeypatch):
    monkeypatch.setenv("ILLIAD_TEST_LDAP_PASSWORD", "not-the-password")
    result = probe(make_target("ldap", slapd.ldap_port, bind_dn=slapd.user_dn,
                               password={"env": "ILLIAD_TEST_LDAP_PASSWORD"}))
    assert result.reason is Reason.AUTH
    assert result.detail == "authenticated bind refused: invalidCredentials (49)"
    assert ldap_info(result)["ldap_version"] == "3"


def test_empty_password_secret_is_auth_not_a_silent_anonymous_bind(slapd, tmp_path):
    (tmp_path / "password").write_text("\n")
    result = probe(make_target("ldap", slapd.ldap_port, bind_dn=slapd.user_dn,
                               password={"file": str(tmp_path / "password")}))
    assert result.reason is Reason.AUTH
    assert result.detail == "the password secret is empty"


def test_bind_dn_without_password_is_a_config_error():
    with pytest.raises(ValueError, match="both bind_dn and password"):
        make_target("ldap", 389, bind_dn="cn=x,dc=y")
    with pytest.raises(ValueError, match="inline secrets are not allowed"):
        make_target("ldap", 389, bind_dn="cn=x,dc=y", password="hunter2")


def test_planted_password_never_appears_in_detail_metrics_or_logs(slapd, monkeypatch, caplog):
    planted = "Pl4nted-LDAP-secret-9f27"
    monkeypatch.setenv("ILLIAD_TEST_LDAP_PASSWORD", planted)
    caplog.set_level(logging.DEBUG)
    target = make_target("ldap", slapd.ldap_port, bind_dn=slapd.user_dn, password={"env": "ILLIAD_TEST_LDAP_PASSWORD"})
    result = probe(target)
    assert result.reason is Reason.AUTH  # the planted value is not the user's password
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector([Outcome(target, result, 0.0)]))
    metrics = generate_latest(registry).decode()
    assert "illiad_ldap_info{" in metrics
    seen = [result.detail, repr(result), metrics, caplog.text, repr(target), str(target.options)]
    assert not [text for text in seen if planted in text]


# --- hand-made misbehaving servers --------------------------------------------------------

# A real bindResponse (success) to message 1, as slapd sends it.
BIND_OK = bytes.fromhex("300c02010161070a010004000400")


def test_notice_of_disconnection_is_protocol_with_the_servers_words():
    # extendedResp with messageID 0, unavailable (52), "shutting down"
    body = bytes.fromhex("020100") + bytes([0x78, 0x14]) + bytes.fromhex("0a0134") + bytes.fromhex("0400") + \
        bytes([0x04, 13]) + b"shutting down"
    message = bytes([0x30, len(body)]) + body
    with ScriptedServer(message) as server:
        result = probe(make_target("ldap", server.port))
    assert result.reason is Reason.PROTOCOL
    assert result.detail == "server ended the session: unavailable (52), server said: shutting down"


def test_server_that_answers_the_bind_then_goes_silent_times_out_within_the_timeout():
    with ScriptedServer(BIND_OK, hold=True) as server:
        started = time.monotonic()
        result = probe(make_target("ldap", server.port, timeout=0.5))
        elapsed = time.monotonic() - started
    assert result.reason is Reason.TIMEOUT
    assert elapsed < 1.5
    assert result.phases["handshake"] > 0  # the bind was answered and timed


def test_starttls_refused_by_the_server_is_tls():
    # extendedResp to message 1: protocolError (2), "unsupported extended operation"
    words = b"unsupported extended operation"
    body = bytes.fromhex("020101") + bytes([0x78, 7 + len(words)]) + bytes.fromhex("0a01020400") + \
        bytes([0x04, len(words)]) + words
    with ScriptedServer(bytes([0x30, len(body)]) + body) as server:
        result = probe(make_target("ldap", server.port, tls_mode="starttls"))
    assert result.reason is Reason.TLS
    assert result.detail == "StartTLS refused: protocolError (2), server said: unsupported extended operation"


def test_anonymous_bind_refused_is_auth():
    # bindResponse to message 1: inappropriateAuthentication (48), "anonymous bind disallowed"
    words = b"anonymous bind disallowed"
    body = bytes.fromhex("020101") + bytes([0x61, 7 + len(words)]) + bytes.fromhex("0a01300400") + \
        bytes([0x04, len(words)]) + words
    with ScriptedServer(bytes([0x30, len(body)]) + body) as server:
        result = probe(make_target("ldap", server.port))
    assert result.reason is Reason.AUTH
    assert result.detail == ("anonymous bind refused: inappropriateAuthentication (48), "
                             "server said: anonymous bind disallowed")


# --- the message reader never crashes on what a server sends --------------------------------

def receive_from(data: bytes):
    """Run the prober's message reader over ``data`` as if a server had sent it."""
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        session = LdapSession(Connection(reader, None, "127.0.0.1"), ProbeResult())  # type: ignore[arg-type]
        return await session.receive(1)

    return asyncio.run(run())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=64),
    # well framed (0x30, a true length), with a body of anything: the BER decoder's turn
    st.binary(max_size=120).map(lambda body: bytes([0x30, len(body)]) + body),
    # a real bindResponse with one byte changed
    st.tuples(st.integers(0, len(BIND_OK) - 1), st.integers(0, 255)).map(
        lambda change: BIND_OK[:change[0]] + bytes([change[1]]) + BIND_OK[change[0] + 1:]),
))
def test_any_answer_is_read_or_refused_with_a_reason_never_a_crash(data):
    try:
        op_name, _ = receive_from(data)
    except ProbeFailure as failure:
        assert failure.reason in (Reason.PROTOCOL, Reason.AUTH)
        assert failure.detail and "\n" not in failure.detail
    else:
        assert isinstance(op_name, str)
