"""Z39.50: the Init service (ANSI/NISO Z39.50-2003, 3.2.1.1), the first exchange of every
Z39.50 session.

The probe sends an initRequest asking for search and present, reads the initResponse, and
closes: the target accepted when ``result`` is TRUE, and it names its implementation. It
never searches.

BER is pyasn1's: the APDUs carry multi-byte context tags ([110]-[112], [201]), BIT STRINGs,
and may use long-form or indefinite lengths, which a spec-complete and long-tested codec
decodes without surprises. The ASN.1 below is transcribed from the standard's APDU module
(which tags EXPLICIT unless a field says IMPLICIT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error, SubstrateUnderrunError
from pyasn1.type import base, char, namedtype, tag, tagmap, univ

from .. import __version__
from .base import Prober, ProberOptions, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .net import DEFAULT_READ_LIMIT, connect


def _context(number: int, *, constructed: bool = False) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed if constructed else tag.tagFormatSimple, number)


Asn1 = TypeVar("Asn1", bound=base.SimpleAsn1Type | base.ConstructedAsn1Type)


def _implicit(asn1: Asn1, number: int, *, constructed: bool = False) -> Asn1:
    tagged: Asn1 = asn1.subtype(implicitTag=_context(number, constructed=constructed))  # a copy of asn1's type
    return tagged


def _explicit(asn1: Asn1, number: int) -> Asn1:
    tagged: Asn1 = asn1.subtype(explicitTag=_context(number, constructed=True))
    return tagged


def _international(number: int) -> char.GeneralString:
    return _implicit(char.GeneralString(), number)  # InternationalString ::= GeneralString


class _TaggedAny(univ.Any):
    """An ANY under its own explicit tag. pyasn1's Any also claims every tag no other field
    has (its tag map's default), so two of them cannot share a SEQUENCE; this one claims only
    its tag."""

    @property
    def tagMap(self) -> tagmap.TagMap:
        # types-pyasn1 keys presentTypes by TagMap; pyasn1 keys it by TagSet (tagmap.py, decoder.py)
        return tagmap.TagMap({self.tagSet: self})  # type: ignore[dict-item]


# Fields this probe reads past, never into.
_ID_AUTHENTICATION = _explicit(_TaggedAny(), 7)  # [7] ANY
_USER_INFORMATION = _explicit(_TaggedAny(), 11)  # [11] EXTERNAL
_OTHER_INFO = _implicit(univ.SequenceOf(componentType=univ.Any()), 201, constructed=True)


def _init_fields(*middle: namedtype.NamedType) -> namedtype.NamedTypes:
    return namedtype.NamedTypes(
        namedtype.OptionalNamedType("referenceId", _implicit(univ.OctetString(), 2)),
        namedtype.NamedType("protocolVersion", _implicit(univ.BitString(), 3)),
        namedtype.NamedType("options", _implicit(univ.BitString(), 4)),
        namedtype.NamedType("preferredMessageSize", _implicit(univ.Integer(), 5)),
        namedtype.NamedType("exceptionalRecordSize", _implicit(univ.Integer(), 6)),
        *middle,
        namedtype.OptionalNamedType("implementationId", _international(110)),
        namedtype.OptionalNamedType("implementationName", _international(111)),
        namedtype.OptionalNamedType("implementationVersion", _international(112)),
        namedtype.OptionalNamedType("userInformationField", _USER_INFORMATION),
        namedtype.OptionalNamedType("otherInfo", _OTHER_INFO),
    )


class InitializeRequest(univ.Sequence):
    """PDU choice initRequest: [20] IMPLICIT InitializeRequest."""

    tagSet = univ.Sequence.tagSet.tagImplicitly(_context(20, constructed=True))
    componentType = _init_fields(namedtype.OptionalNamedType("idAuthentication", _ID_AUTHENTICATION))


class InitializeResponse(univ.Sequence):
    """PDU choice initResponse: [21] IMPLICIT InitializeResponse."""

    tagSet = univ.Sequence.tagSet.tagImplicitly(_context(21, constructed=True))
    componentType = _init_fields(namedtype.NamedType("result", _implicit(univ.Boolean(), 12)))


INIT_RESPONSE_TAG = 0xB5  # [21], constructed, context class
CLOSE_TAG = b"\xbf\x30"  # [48]: a target may refuse with a Close PDU instead
# Bits of ProtocolVersion (version1, version2, version3) and of Options.
PROTOCOL_VERSIONS = (0, 1, 2)
OPTION_SEARCH, OPTION_PRESENT = 0, 1
MESSAGE_SIZE = 1024 * 1024
IMPLEMENTATION_NAME = "illiad-port-exporter"


class Z3950Error(ValueError):
    """The bytes are not the APDU they should be; the text is a one-line reason."""


@dataclass(frozen=True, slots=True)
class InitAnswer:
    accepted: bool
    implementation_id: str
    implementation_name: str
    implementation_version: str
    protocol_versions: tuple[int, ...]  # the versions both sides speak (1, 2, 3)


def _bits(*positions: int) -> univ.BitString:
    return univ.BitString("".join("1" if i in positions else "0" for i in range(max(positions) + 1)))


def encode_init_request(*, name: str = IMPLEMENTATION_NAME, version: str = __version__) -> bytes:
    """The initRequest this probe sends: versions 1-3, search and present, its own name."""
    request = InitializeRequest()
    request["protocolVersion"] = _bits(*PROTOCOL_VERSIONS).subtype(implicitTag=_context(3))
    request["options"] = _bits(OPTION_SEARCH, OPTION_PRESENT).subtype(implicitTag=_context(4))
    request["preferredMessageSize"] = MESSAGE_SIZE
    request["exceptionalRecordSize"] = MESSAGE_SIZE
    request["implementationName"] = name
    request["implementationVersion"] = version
    return bytes(encoder.encode(request))


def decode_init_request(data: bytes) -> InitializeRequest:
    """Read a whole initRequest (used to compare with what real clients send)."""
    request: InitializeRequest
    try:
        request, rest = decoder.decode(data, asn1Spec=InitializeRequest())
    except PyAsn1Error as exc:
        raise Z3950Error(f"not a Z39.50 initRequest: {_first_line(exc)}") from None
    if rest:
        raise Z3950Error(f"{len(rest)} bytes after the initRequest")
    return request


def _text(value: char.GeneralString | None) -> str:
    if value is None or not value.isValue:
        return ""
    return bytes(value).decode("latin-1")


def decode_init_response(data: bytes) -> tuple[InitAnswer, bytes]:
    """Read one initResponse from the start of ``data``: the answer and the bytes after it.
    SubstrateUnderrunError (incomplete) passes through so a reader can wait for more."""
    _check_start(data)
    try:
        response, rest = decoder.decode(data, asn1Spec=InitializeResponse())
    except SubstrateUnderrunError:
        raise
    except PyAsn1Error as exc:
        raise Z3950Error(f"malformed initResponse: {_first_line(exc)}") from None
    except (IndexError, ValueError, TypeError) as exc:  # pyasn1 on some truncated inner lengths
        raise Z3950Error(f"malformed initResponse: {type(exc).__name__}") from None
    versions = response["protocolVersion"]
    return (
        InitAnswer(
            accepted=bool(response["result"]),
            implementation_id=_text(response["implementationId"]),
            implementation_name=_text(response["implementationName"]),
            implementation_version=_text(response["implementationVersion"]),
            protocol_versions=tuple(i + 1 for i, bit in enumerate(versions) if bit),
        ),
        bytes(rest),
    )


def _check_start(data: bytes | bytearray) -> None:
    """Z3950Error unless ``data`` (once it has a byte) starts as an initResponse does."""
    if data[:1] and data[0] != INIT_RESPONSE_TAG:
        if data[:2] == CLOSE_TAG:
            raise Z3950Error("the target answered the init with a Close")
        if len(data) >= 2 or data[0] != CLOSE_TAG[0]:
            raise Z3950Error(f"not a Z39.50 initResponse (it starts {bytes(data[:8])!r})")


class ApduReader:
    """Gathers received bytes until one whole BER element (the answer's APDU) is in.

    It scans each element header once, as the bytes arrive, and skips contents by their
    length without looking at them, so the work per received chunk is bounded by that chunk
    (decoding the whole buffer again on every chunk cost quadratic time: 64 KiB sent in small
    segments took 7.5 s of event-loop CPU). The answer is decoded once, when complete."""

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self._at = 0  # where the next element header starts
        self._open = 0  # indefinite-length elements not yet closed
        self._end: int | None = None  # where the whole APDU ends, once known

    def feed(self, chunk: bytes) -> bool:
        """Add ``chunk``; True once the APDU is complete. Z3950Error for bytes that cannot be
        one, or one longer than ``limit``."""
        self.buffer += chunk
        _check_start(self.buffer)
        while self._end is None:
            if self._open and self._at + 2 <= len(self.buffer) and self.buffer[self._at] == 0:
                if self.buffer[self._at + 1] != 0:
                    raise Z3950Error("malformed initResponse: a bad end-of-contents marker")
                self._at += 2
                self._open -= 1
                if not self._open:
                    self._end = self._at
                continue
            header = _ber_header(self.buffer, self._at)
            if header is None:
                break  # the header (or a skipped content before it) is not all here yet
            constructed, length, size = header
            if length is None:  # indefinite: its elements follow, then 00 00
                if not constructed:
                    raise Z3950Error("malformed initResponse: an indefinite length on a primitive value")
                self._open += 1
                self._at += size
            else:
                self._at += size + length
                if not self._open:
                    self._end = self._at
            if (self._end or self._at) > self.limit:
                raise Z3950Error(f"initResponse longer than {self.limit} bytes")
        return self._end is not None and len(self.buffer) >= self._end

    @property
    def apdu(self) -> bytes:
        assert self._end is not None
        return bytes(self.buffer[:self._end])


def _ber_header(data: bytearray, at: int) -> tuple[bool, int | None, int] | None:
    """(constructed, content length or None when indefinite, header size) of the element
    header at ``at``; None while it has not all arrived."""
    if at >= len(data):
        return None
    constructed = bool(data[at] & 0x20)
    index = at + 1
    if data[at] & 0x1F == 0x1F:  # a tag number in the following bytes, seven bits each
        while True:
            if index >= len(data):
                return None
            if index - at > 5:
                raise Z3950Error("malformed initResponse: a tag number too long")
            more = data[index] & 0x80
            index += 1
            if not more:
                break
    if index >= len(data):
        return None
    first = data[index]
    index += 1
    if first == 0x80:
        return constructed, None, index - at
    if first < 0x80:
        return constructed, first, index - at
    count = first & 0x7F
    if count > 4:
        raise Z3950Error("malformed initResponse: a length of more than four bytes")
    if index + count > len(data):
        return None
    return constructed, int.from_bytes(data[index:index + count], "big"), index + count - at


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


async def probe_z3950(target: ProbeTarget, result: ProbeResult) -> bool:
    connection = await connect(target, result)
    try:
        with result.timed("handshake"):
            await connection.send(encode_init_request())
            reader = ApduReader(DEFAULT_READ_LIMIT)
            try:
                while True:
                    chunk = await connection.read_some(DEFAULT_READ_LIMIT - len(reader.buffer))
                    if not chunk:
                        what = ("closed the connection without an initResponse" if not reader.buffer
                                else "cut the initResponse short")
                        raise ProbeFailure(Reason.PROTOCOL, f"the target {what} ({len(reader.buffer)} bytes)")
                    if reader.feed(chunk):
                        break
                    if len(reader.buffer) >= DEFAULT_READ_LIMIT:
                        raise Z3950Error(f"initResponse longer than {DEFAULT_READ_LIMIT} bytes")
                answer, _ = decode_init_response(reader.apdu)  # once, whole
            except SubstrateUnderrunError:  # the element was whole, its insides were not
                raise ProbeFailure(Reason.PROTOCOL, "malformed initResponse: an element overruns the APDU") from None
            except Z3950Error as exc:
                raise ProbeFailure(Reason.PROTOCOL, str(exc)) from None
    finally:
        await connection.close()
    result.add_info(
        "z3950",
        implementation_name=answer.implementation_name,
        implementation_version=answer.implementation_version,
        implementation_id=answer.implementation_id,
    )
    if not answer.accepted:
        raise ProbeFailure(Reason.PROTOCOL, "the target rejected the init (result FALSE)")
    return True


PROBER = Prober("z3950", probe_z3950, ProberOptions, "Z39.50 Init: initRequest, initResponse accepted")
