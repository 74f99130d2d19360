"""Remote Desktop: the first message of an RDP connection (MS-RDPBCGR 2.2.1.1 and 2.2.1.2).

The probe sends a TPKT + X.224 Connection Request carrying an RDP_NEG_REQ that offers the
security protocols a current client offers, reads the Connection Confirm, and closes. The
server's RDP_NEG_RSP names the protocol it selected; an RDP_NEG_FAILURE names why it would
not accept any. It never goes further, so it never logs in and starts no session.

The codec below is pure (bytes in, values out) so it is tested without sockets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from .base import Prober, ProberOptions, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .net import connect

TPKT = struct.Struct(">BBH")  # version 3, reserved, length of the whole packet
TPKT_VERSION = 3
X224_CONNECTION_REQUEST = 0xE0
X224_CONNECTION_CONFIRM = 0xD0
NEG = struct.Struct("<BBHI")  # type, flags, length (8), protocols or failure code
TYPE_RDP_NEG_REQ, TYPE_RDP_NEG_RSP, TYPE_RDP_NEG_FAILURE = 0x01, 0x02, 0x03

# requestedProtocols / selectedProtocol flags; standard RDP security is "no flag".
PROTOCOLS = {"rdp": 0x00, "ssl": 0x01, "hybrid": 0x02, "rdstls": 0x04, "hybrid_ex": 0x08, "rdsaad": 0x10}
PROTOCOL_NAMES = {value: name for name, value in PROTOCOLS.items()}
FAILURE_CODES = {
    0x01: "SSL_REQUIRED_BY_SERVER",
    0x02: "SSL_NOT_ALLOWED_BY_SERVER",
    0x03: "SSL_CERT_NOT_ON_SERVER",
    0x04: "INCONSISTENT_FLAGS",
    0x05: "HYBRID_REQUIRED_BY_SERVER",
    0x06: "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
}
# A Connection Confirm is 11 bytes of headers plus 8 of negotiation data; anything claiming
# more than this is not one.
MAX_CONFIRM = 512

ProtocolName = Literal["rdp", "ssl", "hybrid", "rdstls", "hybrid_ex"]
CLIENT_PROTOCOLS: tuple[ProtocolName, ...] = ("ssl", "hybrid", "hybrid_ex")


class RdpError(ValueError):
    """The bytes are not an X.224 Connection Confirm; the text is a one-line reason."""


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What the server's Connection Confirm says."""

    selected_protocol: str | None = None  # from RDP_NEG_RSP; None when the server sent none
    failure: str | None = None  # from RDP_NEG_FAILURE
    negotiated: bool = True  # False: an old server that sent no negotiation data at all


def connection_request(protocols: int) -> bytes:
    """TPKT + X.224 Connection Request (no cookie) + RDP_NEG_REQ offering ``protocols``."""
    negotiation = NEG.pack(TYPE_RDP_NEG_REQ, 0, NEG.size, protocols)
    # X.224 CR TPDU: length indicator, CR code, DST-REF, SRC-REF, class 0.
    x224 = bytes([6 + len(negotiation), X224_CONNECTION_REQUEST]) + b"\x00\x00\x00\x00\x00" + negotiation
    return TPKT.pack(TPKT_VERSION, 0, TPKT.size + len(x224)) + x224


def confirm_length(header: bytes) -> int:
    """The whole packet's length from its 4-byte TPKT header."""
    version, _reserved, length = TPKT.unpack(header)
    if version != TPKT_VERSION:
        raise RdpError(f"not a TPKT packet (it starts {header!r})")
    if not TPKT.size + 7 <= length <= MAX_CONFIRM:
        raise RdpError(f"TPKT length {length} is not that of a Connection Confirm")
    return int(length)


def decode_confirm(packet: bytes) -> Negotiation:
    """Read a whole TPKT packet holding an X.224 Connection Confirm."""
    if len(packet) < TPKT.size + 7:
        raise RdpError(f"Connection Confirm too short ({len(packet)} bytes)")
    length = confirm_length(packet[: TPKT.size])
    if length != len(packet):
        raise RdpError(f"TPKT length {length} but {len(packet)} bytes")
    x224 = packet[TPKT.size :]
    indicator, code = x224[0], x224[1]
    if code & 0xF0 != X224_CONNECTION_CONFIRM:
        raise RdpError(f"X.224 TPDU 0x{code:02x} is not a Connection Confirm")
    if indicator + 1 != len(x224):
        raise RdpError(f"X.224 length indicator {indicator} does not match {len(x224) - 1} bytes")
    negotiation = x224[7:]
    if not negotiation:
        return Negotiation(negotiated=False)
    if len(negotiation) != NEG.size:
        raise RdpError(f"negotiation data of {len(negotiation)} bytes, not {NEG.size}")
    kind, _flags, neg_length, value = NEG.unpack(negotiation)
    if neg_length != NEG.size:
        raise RdpError(f"negotiation length field {neg_length}, not {NEG.size}")
    if kind == TYPE_RDP_NEG_RSP:
        return Negotiation(selected_protocol=PROTOCOL_NAMES.get(value, f"unknown_0x{value:x}"))
    if kind == TYPE_RDP_NEG_FAILURE:
        return Negotiation(failure=FAILURE_CODES.get(value, f"unknown failure code 0x{value:x}"))
    raise RdpError(f"negotiation type 0x{kind:02x} is neither a response nor a failure")


class RdpOptions(ProberOptions):
    # What a current Windows client offers; a server that selects none of these (or answers
    # with a negotiation failure) could not serve that client.
    request_protocols: list[ProtocolName] = Field(default_factory=lambda: list(CLIENT_PROTOCOLS))


async def probe_rdp(target: ProbeTarget[RdpOptions], result: ProbeResult) -> bool:
    options = target.options
    protocols = 0
    for name in options.request_protocols:
        protocols |= PROTOCOLS[name]
    connection = await connect(target, result)
    try:
        with result.timed("handshake"):
            await connection.send(connection_request(protocols))
            header = await connection.read_exactly(TPKT.size, what="Connection Confirm")
            try:
                rest = await connection.read_exactly(confirm_length(header) - TPKT.size, what="Connection Confirm")
                negotiation = decode_confirm(header + rest)
            except RdpError as exc:
                raise ProbeFailure(Reason.PROTOCOL, str(exc)) from None
    finally:
        await connection.close()
    # Both labels always, so every illiad_rdp_info series has the same label names.
    if negotiation.failure is not None:
        result.add_info("rdp", selected_protocol="", negotiation_failure=negotiation.failure)
        # An RDP server answered (the path is open) but would not accept what a client offers.
        raise ProbeFailure(Reason.PROTOCOL, f"RDP negotiation failure: {negotiation.failure}")
    result.add_info("rdp", selected_protocol=negotiation.selected_protocol or "rdp", negotiation_failure="")
    return True


PROBER = Prober("rdp", probe_rdp, RdpOptions, "Remote Desktop: X.224 Connection Request, never logs in")
