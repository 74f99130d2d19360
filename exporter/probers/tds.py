"""SQL Server: a TDS PRELOGIN exchange (MS-TDS 2.2.6.5), and the SQL Server Browser (MC-SQLR)
for named instances.

PRELOGIN is the first message every SQL Server client sends; the server answers with its
product version and its encryption stance before any login, so the probe learns whether
the database engine itself is there without credentials. The probe closes right after the
answer: it never logs in. In TDS 8.0 strict mode the server expects TLS first, and the same
PRELOGIN goes inside the TLS session.

A named instance listens on a port only the SQL Server Browser (UDP 1434) knows: the probe
asks the Browser for that instance's TCP port and probes that port instead.

The codec below is pure (bytes in, values out) so it is tested without sockets.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from pydantic import Field, field_validator

from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .net import DEFAULT_READ_LIMIT, Connection, reason_for, connect, resolve
from .tlsclient import TlsOptions, client_context

# -- TDS packets and PRELOGIN (MS-TDS 2.2.3.1, 2.2.6.5) --------------------------------------

PACKET_PRELOGIN = 0x12
PACKET_TABULAR_RESULT = 0x04  # the server's PRELOGIN answer travels as a tabular result
STATUS_EOM = 0x01  # last packet of the message
HEADER = struct.Struct(">BBHHBB")  # type, status, length (incl. header), SPID, packet id, window
OPTION = struct.Struct(">BHH")  # token, offset (from the start of the PRELOGIN data), length

VERSION, ENCRYPTION, INSTOPT, THREADID, MARS = 0x00, 0x01, 0x02, 0x03, 0x04
TERMINATOR = 0xFF

ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_NOT_SUP, ENCRYPT_REQ = 0x00, 0x01, 0x02, 0x03
ENCRYPTION_WORDS = {ENCRYPT_OFF: "off", ENCRYPT_ON: "on", ENCRYPT_NOT_SUP: "not_supported", ENCRYPT_REQ: "required"}

TDS8_ALPN = "tds/8.0"  # what TDS 8.0 clients offer in the TLS handshake
# What this probe announces as its own version in PRELOGIN (the field is informational).
CLIENT_VERSION = (1, 0, 0, 0)
# Bounds: a PRELOGIN answer is a few dozen bytes; a message of more packets than this is not one.
MAX_PACKETS = 8


class TdsError(ValueError):
    """The bytes are not the TDS message they should be; the text is a one-line reason."""


@dataclass(frozen=True, slots=True)
class Prelogin:
    """The values of a PRELOGIN message that this probe sends or reads."""

    version: tuple[int, int, int, int]  # major, minor, build, sub-build
    encryption: int | None = None
    instance: bytes | None = None  # B_INSTVALIDITY without its terminating NUL
    thread_id: int | None = None
    mars: bool | None = None

    @property
    def version_text(self) -> str:
        """The product version as SQL Server states it (major.minor.build), e.g. ``15.0.2000``."""
        return "{}.{}.{}".format(*self.version[:3])

    @property
    def encryption_word(self) -> str:
        if self.encryption is None:
            return "absent"
        return ENCRYPTION_WORDS.get(self.encryption, f"unknown_0x{self.encryption:02x}")


def encode_packet(packet_type: int, payload: bytes, *, packet_id: int = 1, status: int = STATUS_EOM) -> bytes:
    """One TDS packet: the 8-byte header then the payload."""
    return HEADER.pack(packet_type, status, HEADER.size + len(payload), 0, packet_id, 0) + payload


def encode_prelogin(message: Prelogin) -> bytes:
    """The PRELOGIN data (option table, terminator, option data), in the order MS-TDS gives."""
    major, minor, build, sub_build = message.version
    options: list[tuple[int, bytes]] = [(VERSION, struct.pack(">BBHH", major, minor, build, sub_build))]
    if message.encryption is not None:
        options.append((ENCRYPTION, bytes([message.encryption])))
    if message.instance is not None:
        options.append((INSTOPT, message.instance + b"\x00"))
    if message.thread_id is not None:
        # Sent little-endian, as in the spec's example (B8 0D 00 00 is thread 3512).
        options.append((THREADID, struct.pack("<I", message.thread_id)))
    if message.mars is not None:
        options.append((MARS, bytes([1 if message.mars else 0])))
    offset = OPTION.size * len(options) + 1
    table = bytearray()
    data = bytearray()
    for token, value in options:
        table += OPTION.pack(token, offset + len(data), len(value))
        data += value
    return bytes(table) + bytes([TERMINATOR]) + bytes(data)


def client_prelogin(*, encryption: int = ENCRYPT_OFF) -> bytes:
    """The whole PRELOGIN packet this probe sends: the least a real client sends. Offering
    encryption off makes the answer tell the server's own stance: ``off`` (login encrypted
    only), ``required`` (force encryption) or ``not_supported``."""
    return encode_packet(PACKET_PRELOGIN, encode_prelogin(Prelogin(CLIENT_VERSION, encryption, b"", 0, False)))


def decode_header(header: bytes) -> tuple[int, int, int]:
    """(packet type, status, payload length) of an 8-byte TDS header."""
    if len(header) != HEADER.size:
        raise TdsError(f"TDS header needs {HEADER.size} bytes, got {len(header)}")
    packet_type, status, length, _spid, _packet_id, _window = HEADER.unpack(header)
    if length < HEADER.size:
        raise TdsError(f"TDS packet length {length} is shorter than its header")
    return packet_type, status, length - HEADER.size


def decode_prelogin(data: bytes) -> Prelogin:
    """Read PRELOGIN data (the payload after the packet header); raises TdsError when malformed."""
    options: dict[int, bytes] = {}
    position = 0
    while True:
        if position >= len(data):
            raise TdsError("PRELOGIN option table has no terminator")
        if data[position] == TERMINATOR:
            break
        if position + OPTION.size > len(data):
            raise TdsError("PRELOGIN option table is cut short")
        token, offset, length = OPTION.unpack_from(data, position)
        if offset + length > len(data):
            raise TdsError(f"PRELOGIN option 0x{token:02x} points past the data ({offset}+{length} > {len(data)})")
        options.setdefault(token, data[offset : offset + length])
        position += OPTION.size
    version = options.get(VERSION)
    if version is None or len(version) < 6:
        raise TdsError("PRELOGIN answer has no VERSION option")
    major, minor, build, sub_build = struct.unpack(">BBHH", version[:6])
    encryption = options.get(ENCRYPTION)
    instance = options.get(INSTOPT)
    thread_id = options.get(THREADID)
    mars = options.get(MARS)
    return Prelogin(
        version=(major, minor, build, sub_build),
        encryption=encryption[0] if encryption else None,
        instance=instance.split(b"\x00", 1)[0] if instance is not None else None,
        thread_id=struct.unpack("<I", thread_id)[0] if thread_id is not None and len(thread_id) == 4 else None,
        mars=bool(mars[0]) if mars else None,
    )


# -- SQL Server Browser (MC-SQLR) --------------------------------------------------------------

BROWSER_PORT = 1434
CLNT_UCAST_INST = 0x04
SVR_RESP = 0x05
MAX_BROWSER_REPLY = 65535 + 3  # RESP_SIZE is two bytes; a datagram cannot be longer anyway


@dataclass(frozen=True, slots=True)
class BrowserInstance:
    """One instance as the Browser describes it."""

    server_name: str
    instance_name: str
    version: str
    tcp_port: int | None  # None: TCP/IP is off for this instance


def browser_request(instance: str) -> bytes:
    """CLNT_UCAST_INST: ask for one instance by name."""
    return bytes([CLNT_UCAST_INST]) + instance.encode("ascii") + b"\x00"


def parse_browser_reply(reply: bytes) -> list[BrowserInstance]:
    """SVR_RESP: 0x05, a little-endian size, then ``key;value;...;;`` per instance."""
    if len(reply) < 3 or reply[0] != SVR_RESP:
        raise TdsError("not a SQL Server Browser reply")
    size = int.from_bytes(reply[1:3], "little")
    if len(reply) - 3 < size:
        raise TdsError(f"Browser reply truncated: {len(reply) - 3} of {size} bytes")
    text = reply[3 : 3 + size].decode("latin-1")
    instances: list[BrowserInstance] = []
    for entry in text.split(";;"):
        if not entry.strip("\x00"):
            continue
        fields = entry.split(";")
        if len(fields) % 2:
            raise TdsError("Browser reply has a key without a value")
        pairs = {key.lower(): value for key, value in zip(fields[0::2], fields[1::2])}
        if "instancename" not in pairs:
            raise TdsError("Browser reply names no instance")
        tcp = pairs.get("tcp")
        try:
            port = int(tcp) if tcp else None
        except ValueError:
            raise TdsError(f"Browser reply has a non-numeric tcp port {tcp!r}") from None
        if port is not None and not 0 < port < 65536:
            raise TdsError(f"Browser reply has tcp port {port} out of range")
        instances.append(
            BrowserInstance(pairs.get("servername", ""), pairs["instancename"], pairs.get("version", ""), port)
        )
    return instances


def instance_port(reply: bytes, instance: str) -> int:
    """The TCP port of ``instance`` in a Browser reply; TdsError when the Browser gives none."""
    for found in parse_browser_reply(reply):
        if found.instance_name.lower() == instance.lower():
            if found.tcp_port is None:
                raise TdsError(f"instance {instance} has no TCP port (TCP/IP disabled for it?)")
            return found.tcp_port
    raise TdsError(f"the Browser does not know instance {instance}")


class _BrowserAnswer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data[:MAX_BROWSER_REPLY])

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable arrives here: no Browser runs on that host.
        if not self.answer.done():
            self.answer.set_exception(exc)


async def ask_browser(address: str, port: int, instance: str, *, wait: float) -> bytes:
    """Send CLNT_UCAST_INST to one address and return the first datagram it answers, or raise
    ProbeFailure(browser). The request is sent again halfway, since UDP may lose it."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(_BrowserAnswer, remote_addr=(address, port))
    except OSError as exc:
        raise ProbeFailure(Reason.BROWSER, f"cannot reach the SQL Server Browser: {exc}") from None
    request = browser_request(instance)
    try:
        for attempt in range(2):
            transport.sendto(request)
            try:
                return await asyncio.wait_for(asyncio.shield(protocol.answer), wait / 2)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ProbeFailure(
                    Reason.BROWSER, f"SQL Server Browser at {address}:{port}: {reason_for(exc)}"
                ) from None
        raise ProbeFailure(Reason.BROWSER, f"the SQL Server Browser at {address}:{port} did not answer in {wait:.3g}s")
    finally:
        transport.close()


# -- the prober --------------------------------------------------------------------------------


class TdsOptions(TlsOptions):
    """TLS options apply to strict mode only."""

    strict: bool = False  # TDS 8.0 strict encryption: TLS first, then PRELOGIN inside it
    instance: str | None = None  # a named instance: its port comes from the SQL Server Browser
    browser_port: int = Field(BROWSER_PORT, ge=1, le=65535)

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value or len(value) > 255 or not value.isprintable() or ";" in value or not value.isascii():
            raise ValueError("instance must be an ASCII name of 1-255 printable characters without ';'")
        return value


async def read_message(connection: Connection, expected_type: int, *, limit: int = DEFAULT_READ_LIMIT) -> bytes:
    """The payload of one TDS message of ``expected_type`` (its packets joined), at most
    ``limit`` bytes. Anything else is ProbeFailure(protocol) before more is read."""
    payload = bytearray()
    for _ in range(MAX_PACKETS):
        header = await connection.read_exactly(HEADER.size, what="TDS packet header")
        if header[0] != expected_type:
            raise ProbeFailure(Reason.PROTOCOL, f"not a TDS answer: it starts {header!r}")
        try:
            _, status, length = decode_header(header)
        except TdsError as exc:
            raise ProbeFailure(Reason.PROTOCOL, str(exc)) from None
        if len(payload) + length > limit:
            raise ProbeFailure(Reason.PROTOCOL, f"TDS message longer than {limit} bytes")
        payload += await connection.read_exactly(length, what="TDS packet")
        if status & STATUS_EOM:
            return bytes(payload)
    raise ProbeFailure(Reason.PROTOCOL, f"TDS message of more than {MAX_PACKETS} packets")


async def probe_tds(target: ProbeTarget[TdsOptions], result: ProbeResult) -> bool:
    options = target.options
    port = target.port
    if options.instance is not None:
        port = await _port_from_browser(target, result, options)
    connection = await connect(target, result, port=port)
    try:
        if options.strict:
            context = client_context(options, alpn=(TDS8_ALPN,))
            await connection.start_tls(context, options.server_name or target.host, result)
        with result.timed("handshake"):
            await connection.send(client_prelogin())
            payload = await read_message(connection, PACKET_TABULAR_RESULT)
            try:
                answer = decode_prelogin(payload)
            except TdsError as exc:
                raise ProbeFailure(Reason.PROTOCOL, str(exc)) from None
    finally:
        await connection.close()
    result.add_info("sqlserver", version=answer.version_text, encryption=answer.encryption_word)
    return True


async def _port_from_browser(target: ProbeTarget[TdsOptions], result: ProbeResult, options: TdsOptions) -> int:
    assert options.instance is not None
    addresses = await resolve(target, result)
    # Half the probe's time for the Browser, half for the TCP exchange with the instance.
    reply = await ask_browser(addresses[0], options.browser_port, options.instance, wait=target.timeout / 2)
    try:
        port = instance_port(reply, options.instance)
    except TdsError as exc:
        raise ProbeFailure(Reason.BROWSER, str(exc)) from None
    result.port = port
    return port


PROBER = Prober("tds", probe_tds, TdsOptions, "SQL Server PRELOGIN (TDS), named instances via the SQL Browser")
