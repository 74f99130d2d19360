"""The rdp prober: the X.224 Connection Request codec and probes against a real xrdp (wrong
and misbehaving services: test_prober_wrong_servers.py)."""

from __future__ import annotations

import pytest

from illiad_exporter.probers import Reason, rdp
from illiad_exporter.probers.rdp import Negotiation, RdpError

from .peers import free_port, xrdp_peer
from .probing import make_target, probe

# What Debian's xrdp answered the probe's default Connection Request on this machine: TPKT
# (19 bytes), X.224 CC with SRC-REF 0x1234, RDP_NEG_RSP with EXTENDED_CLIENT_DATA_SUPPORTED,
# selectedProtocol PROTOCOL_SSL.
XRDP_CONFIRM_SSL = bytes.fromhex("030000130ed000001234000201080001000000")
# The same layout with RDP_NEG_FAILURE SSL_REQUIRED_BY_SERVER (MS-RDPBCGR 2.2.1.2.2).
CONFIRM_SSL_REQUIRED = bytes.fromhex("030000130ed000001234000300080001000000")


def test_connection_request_layout_follows_ms_rdpbcgr():
    # TPKT (3, 0, length 19), X.224 CR (LI 14, 0xE0, refs 0, class 0), RDP_NEG_REQ
    # (type 1, flags 0, length 8, requestedProtocols SSL|HYBRID|HYBRID_EX = 0x0B).
    assert rdp.connection_request(0x0B).hex() == "030000130ee00000000000010008000b000000"


def test_confirm_decoder_reads_the_selected_protocol():
    assert rdp.decode_confirm(XRDP_CONFIRM_SSL) == Negotiation(selected_protocol="ssl")


def test_confirm_decoder_reads_a_negotiation_failure_code():
    assert rdp.decode_confirm(CONFIRM_SSL_REQUIRED) == Negotiation(failure="SSL_REQUIRED_BY_SERVER")


def test_confirm_without_negotiation_data_means_standard_rdp_security():
    assert rdp.decode_confirm(bytes.fromhex("0300000b06d00000123400")) == Negotiation(negotiated=False)


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (bytes.fromhex("0400000b06d00000123400"), "not a TPKT packet"),
        (bytes.fromhex("0300ffff06d00000123400"), "not that of a Connection Confirm"),
        (bytes.fromhex("0300000b06f00000123400"), "not a Connection Confirm"),
        (bytes.fromhex("0300000b09d00000123400"), "length indicator"),
        (bytes.fromhex("0300000f0ad000001234000201"), "TPKT length 15 but 13 bytes"),
        (bytes.fromhex("0300000f0ad0000012340002010800"), "negotiation data of 4 bytes"),
        (bytes.fromhex("030000130ed000001234000201090001000000"), "length field 9"),
        (bytes.fromhex("030000130ed000001234000701080001000000"), "neither a response nor a failure"),
    ],
)
def test_confirm_decoder_rejects_malformed_packets(packet, why):
    with pytest.raises(RdpError, match=why):
        rdp.decode_confirm(packet)


def test_rdp_against_xrdp_reports_the_selected_protocol(xrdp):
    result = probe(make_target("rdp", xrdp))
    assert result.up, result.detail
    assert [(f.name, dict(f.labels)) for f in result.infos] == [
        ("rdp", {"selected_protocol": "ssl", "negotiation_failure": ""})
    ]
    assert result.phases["handshake"] > 0


def test_rdp_offering_only_standard_security_to_xrdp_selects_rdp(xrdp):
    result = probe(make_target("rdp", xrdp, request_protocols=["rdp"]))
    assert result.up
    assert dict(result.infos[0].labels) == {"selected_protocol": "rdp", "negotiation_failure": ""}


@pytest.mark.peer("xrdp")
def test_rdp_negotiation_failure_from_xrdp_is_protocol_with_the_code(tmp_path):
    port = free_port()
    with xrdp_peer(tmp_path, port, security_layer="tls"):
        result = probe(make_target("rdp", port, request_protocols=["rdp"]))
    assert result.reason is Reason.PROTOCOL
    assert result.detail == "RDP negotiation failure: SSL_REQUIRED_BY_SERVER"
    # The code reaches the metrics too, not only the detail.
    assert dict(result.infos[0].labels) == {"selected_protocol": "", "negotiation_failure": "SSL_REQUIRED_BY_SERVER"}
    assert result.address == "127.0.0.1"  # an RDP server answered: the path is open
