"""Each speaking prober against what is not its service: a server that never answers,
another protocol's real server, and scripted answers that are truncated, garbage or lie
about their length. Each ends with the right reason, within its timeout, and the detail
names what was wrong in one line. (test_hostile.py runs the table's every prober against
the same handful of hostile servers; this suite holds the cases each prober has of its own.)"""

from __future__ import annotations

import re
import struct
import time

import pytest

from illiad_exporter.probers import Reason

from .probing import make_target, probe
from .scripted import ScriptedServer


def exactly(detail: str) -> str:
    """A pattern matching ``detail`` and nothing else."""
    return f"^{re.escape(detail)}$"


# -- a server that accepts and never answers ------------------------------------------------

# (prober, options, seconds the probe may take with a 0.5 s timeout)
SILENT = [
    pytest.param("tls", {}, 1.5, id="tls"),
    pytest.param("http", {}, 1.5, id="http"),
    # a TLS handshake cut by the deadline is not waited on
    pytest.param("illiad_web", {}, 0.9, id="illiad_web"),
    pytest.param("symphony_api", {}, 1.5, id="symphony_api"),
    pytest.param("ldap", {}, 1.5, id="ldap"),
    pytest.param("ldap", {"tls_mode": "ldaps"}, 0.9, id="ldaps"),
    pytest.param("tds", {}, 1.5, id="tds"),
    pytest.param("rdp", {}, 1.5, id="rdp"),
    pytest.param("z3950", {}, 1.5, id="z3950"),
]


@pytest.mark.parametrize(("prober", "options", "within"), SILENT)
def test_a_server_that_never_answers_times_out_within_the_timeout(prober, options, within, silent_port):
    started = time.monotonic()
    result = probe(make_target(prober, silent_port, timeout=0.5, **options))
    assert result.reason is Reason.TIMEOUT
    assert time.monotonic() - started < within
    assert result.address == "127.0.0.1"  # it was open, just not answering


# -- another protocol's real server ---------------------------------------------------------

PORT_OF = {"nginx": lambda peer: peer.http_port, "slapd": lambda peer: peer.ldap_port, "yaz_ztest": lambda port: port}


def meets(prober: str, server: str, detail: str, *, id: str) -> object:  # noqa: A002 (pytest.param's name)
    """A case of a prober meeting a real server, marked with that peer: the test looks the
    server's fixture up by name, where pytest cannot see it."""
    return pytest.param(prober, server, detail, id=id, marks=pytest.mark.peer(server))


# (prober, the real server it meets, a pattern its detail matches)
WRONG_SERVICE = [
    meets("rdp", "nginx", "not a TPKT packet", id="rdp-to-http"),
    meets("rdp", "slapd", "", id="rdp-to-ldap"),
    meets("z3950", "nginx", "not a Z39.50 initResponse", id="z3950-to-http"),
    meets("z3950", "slapd", "", id="z3950-to-ldap"),
    meets("tds", "nginx", "HTTP", id="tds-to-http"),
    meets("tds", "yaz_ztest", "", id="tds-to-z3950"),
    meets("tds", "slapd", "", id="tds-to-ldap"),
    meets("ldap", "nginx", exactly("not an LDAP message: starts b'HT'"), id="ldap-to-http"),
    meets("symphony_api", "slapd", exactly("connection closed before an HTTP answer"), id="symphony-to-ldap"),
]


@pytest.mark.parametrize(("prober", "server", "detail"), WRONG_SERVICE)
def test_another_protocols_server_is_protocol(prober, server, detail, request):
    port = PORT_OF[server](request.getfixturevalue(server))
    result = probe(make_target(prober, port))
    assert result.reason is Reason.PROTOCOL
    assert re.search(detail, result.detail), result.detail
    assert result.address == "127.0.0.1"


# -- scripted misbehaving answers ----------------------------------------------------------


def tds_answer(payload: bytes, *, status: int = 1, packet_type: int = 0x04, length: int | None = None) -> bytes:
    """A TDS packet: the 8-byte header (``length`` as given, else the true one), then ``payload``."""
    length = 8 + len(payload) if length is None else length
    return struct.pack(">BBHHBB", packet_type, status, length, 0, 1, 0) + payload


# (prober, what the server sends, a pattern the detail matches)
MISBEHAVING = [
    # the first 10 of the 19 bytes of xrdp's Connection Confirm
    pytest.param("rdp", bytes.fromhex("030000130ed000001234"), "truncated", id="rdp-cut-short"),
    pytest.param("rdp", b"\x03\x00", "truncated", id="rdp-two-bytes"),
    pytest.param("rdp", b"\x00" * 19, "not a TPKT packet", id="rdp-zeros"),
    pytest.param("rdp", bytes(range(256)), "not a TPKT packet", id="rdp-garbage"),
    pytest.param("rdp", bytes.fromhex("030000130ed000001234000201080001"), "truncated", id="rdp-short-by-3"),
    pytest.param("z3950", bytes(range(256)), "not a Z39.50 initResponse", id="z3950-garbage"),
    # a referenceId claiming a megabyte: the probe stops reading at its bound
    pytest.param("z3950", bytes.fromhex("b5847fffffff 82830fffff") + b"\x00" * 70_000, "longer than 65536 bytes",
                 id="z3950-huge-length"),
    pytest.param("z3950", bytes.fromhex("b505 8c0101 0000"), "malformed initResponse", id="z3950-malformed"),
    pytest.param("tds", tds_answer(b"\x00\x00\x06\x00\x06\xff", length=60), "truncated", id="tds-cut-short"),
    pytest.param("tds", b"\x04\x01\x00", "truncated", id="tds-three-bytes"),
    pytest.param("tds", b"\x00" * 32, "not a TDS answer", id="tds-zeros"),
    pytest.param("tds", bytes(range(256)) * 4, "not a TDS answer", id="tds-garbage"),
    pytest.param("tds", tds_answer(b"\x00\x00\x06\x00\x06", length=4), "shorter than its header",
                 id="tds-length-below-header"),
    pytest.param("tds", b"\x04\x01\xff\xff\x00\x00\x01\x00" + b"\x00" * 100, "truncated", id="tds-claims-65535"),
    pytest.param("tds", tds_answer(b"\x01\x00\x06\x00\x01\xff\x00"), "no VERSION", id="tds-no-version"),
    pytest.param("tds", b"".join(tds_answer(b"x" * 100, status=0) for _ in range(9)), "more than 8 packets",
                 id="tds-endless-packets"),
    pytest.param("ldap", b"\x30\x84\x00\x00\x10\x00\x02\x01",
                 exactly("LDAP message truncated: 2 of 4096 bytes before close"), id="ldap-truncated"),
    pytest.param("ldap", b"SSH-2.0-OpenSSH_9.2\r\n", exactly("not an LDAP message: starts b'SS'"), id="ldap-garbage"),
    pytest.param("ldap", b"\x30\x84\x7f\xff\xff\xff", exactly("LDAP message of 2147483647 bytes, more than 65536"),
                 id="ldap-huge-length"),
    pytest.param("ldap", b"\x30\x89\x01", exactly("not an LDAP message: length of 9 bytes"), id="ldap-bad-length"),
    # a message with no operation in it
    pytest.param("ldap", b"\x30\x03\x02\x01\x01", "^malformed LDAP message: ", id="ldap-malformed-ber"),
    pytest.param("ldap", bytes.fromhex("300c02010761070a010004000400"), exactly("answer to message 7, expected 1"),
                 id="ldap-wrong-message-id"),
    pytest.param("ldap", b"\x30", exactly("LDAP message truncated: 1 of 2 bytes before close"), id="ldap-one-byte"),
    pytest.param("patron_api", b"\x00\x01garbage that is no HTTP\r\n\r\n", "^not an HTTP answer",
                 id="patron_api-garbage"),
]


@pytest.mark.parametrize(("prober", "reply", "detail"), MISBEHAVING)
def test_a_misbehaving_server_is_protocol_with_a_one_line_reason(prober, reply, detail):
    with ScriptedServer(reply) as server:
        result = probe(make_target(prober, server.port))
    assert result.reason is Reason.PROTOCOL
    assert re.search(detail, result.detail), result.detail
    assert "\n" not in result.detail
