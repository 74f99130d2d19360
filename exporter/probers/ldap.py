"""LDAP: a bind and a read of the root DSE, over plain LDAP, LDAPS or StartTLS.

What a directory client does first: bind (anonymously unless the path configures a bind DN
and a password secret), then read the root DSE (base scope, empty DN), which says which
LDAP versions, naming contexts and extensions the server has. The probe changes nothing.

LDAP messages are BER; pyasn1 encodes and decodes them with pyasn1-modules' LDAPv3 ASN.1
(RFC 2251, whose message layout RFC 4511 kept). The prober frames each message itself so
that a length is checked before any byte of the body is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2251
from pydantic import model_validator

from ..credentials import Secret
from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .net import Connection, connect
from .tlsclient import TlsOptions, client_context

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
LDAPS_PORT = 636
ROOT_DSE_ATTRIBUTES = ("supportedLDAPVersion", "namingContexts", "supportedExtension", "vendorName", "vendorVersion")
MAX_MESSAGE_BYTES = 64 * 1024  # a root DSE restricted to the attributes above is far smaller
MAX_SEARCH_MESSAGES = 16  # one entry, maybe referrals, then the done message
MAX_LABEL_CHARS = 128
# Result codes that mean "who you are is not good enough", as opposed to a broken service.
_AUTH_CODES = {8: "strongAuthRequired", 13: "confidentialityRequired", 48: "inappropriateAuthentication",
               49: "invalidCredentials", 50: "insufficientAccessRights", 53: "unwillingToPerform"}


class LdapOptions(TlsOptions):
    # auto: LDAPS (TLS first) on port 636, plain LDAP elsewhere.
    tls_mode: Literal["auto", "none", "ldaps", "starttls"] = "auto"
    bind_dn: str | Secret | None = None  # a DN is no secret, but may come from env/file too
    password: Secret | None = None

    @model_validator(mode="after")
    def _dn_and_password_together(self) -> LdapOptions:
        if (self.bind_dn is None) != (self.password is None):
            raise ValueError("an authenticated bind needs both bind_dn and password")
        return self

    def mode_for(self, port: int) -> str:
        if self.tls_mode == "auto":
            return "ldaps" if port == LDAPS_PORT else "none"
        return self.tls_mode


class LdapError(ProbeFailure):
    """A well-formed LDAP result that is not success."""

    def __init__(self, reason: Reason, what: str, code: int, message: str) -> None:
        super().__init__(reason, f"{what}: {result_name(code)} ({code}){_said(message)}")
        self.code = code


def result_name(code: int) -> str:
    names = rfc2251.LDAPResult().getComponentByName("resultCode").namedValues
    try:
        return str(names.getName(code) or "resultCode")
    except (KeyError, PyAsn1Error):
        return "resultCode"


def _said(message: str) -> str:
    text = " ".join(message.split())[:80]
    return f", server said: {text}" if text else ""


def _text(value: univ.OctetString) -> str:
    return bytes(value).decode("utf-8", errors="replace")


# What the probe reads of each message it answers, as decoded (RFC 4511 4.1.9, 4.5.2): the
# decoder's values are untyped, so they are turned into these at once and nowhere else.


@dataclass(frozen=True, slots=True)
class LdapResult:
    """The result of a bindResponse, an extendedResp or a searchResDone."""

    code: int  # resultCode, 0: success
    message: str  # errorMessage, often empty


@dataclass(frozen=True, slots=True)
class SearchEntry:
    """A searchResEntry: each attribute's type and values."""

    attributes: tuple[tuple[str, tuple[str, ...]], ...]


LdapAnswer = LdapResult | SearchEntry | None  # None: an operation the probe reads nothing of
_RESULTS = ("bindResponse", "extendedResp", "searchResDone")


def _answer(op_name: str, op: Any) -> LdapAnswer:
    """``op``, the decoded protocolOp named ``op_name``, as what the probe reads of it."""
    if op_name in _RESULTS:
        return LdapResult(int(op["resultCode"]), _text(op["errorMessage"]))
    if op_name == "searchResEntry":
        return SearchEntry(tuple((_text(attribute["type"]), tuple(_text(v) for v in attribute["vals"]))
                                 for attribute in op["attributes"]))
    return None


class LdapSession:
    """One connection's message exchange: ids, framing, bounded reads."""

    def __init__(self, connection: Connection, result: ProbeResult) -> None:
        self.connection = connection
        self.result = result
        self.next_id = 1

    async def send(self, op_name: str, op: object) -> int:
        message = rfc2251.LDAPMessage()
        message_id = self.next_id
        self.next_id += 1
        message["messageID"] = message_id
        message["protocolOp"][op_name] = op
        await self.connection.send(encoder.encode(message))
        return message_id

    async def receive(self, message_id: int) -> tuple[str, LdapAnswer]:
        """The next message for ``message_id``: (the operation's name, what it says)."""
        header = await self.connection.read_exactly(2, what="LDAP message")
        if header[0] != 0x30:
            raise ProbeFailure(Reason.PROTOCOL, f"not an LDAP message: starts {header!r}")
        length = header[1]
        if length & 0x80:
            width = length & 0x7F
            if not 1 <= width <= 4:
                raise ProbeFailure(Reason.PROTOCOL, f"not an LDAP message: length of {width} bytes")
            length_bytes = await self.connection.read_exactly(width, what="LDAP message length")
            header += length_bytes
            length = int.from_bytes(length_bytes, "big")
        if length > MAX_MESSAGE_BYTES:
            raise ProbeFailure(Reason.PROTOCOL, f"LDAP message of {length} bytes, more than {MAX_MESSAGE_BYTES}")
        body = await self.connection.read_exactly(length, what="LDAP message")
        try:
            message, rest = decoder.decode(header + body, asn1Spec=rfc2251.LDAPMessage())
            op_name = str(message["protocolOp"].getName())
            op = _answer(op_name, message["protocolOp"].getComponent())
            answered = int(message["messageID"])
        except (PyAsn1Error, ValueError, TypeError) as exc:
            raise ProbeFailure(Reason.PROTOCOL, f"malformed LDAP message: {_one_line(exc)}") from None
        if answered == 0 and isinstance(op, LdapResult) and op_name == "extendedResp":
            # RFC 4511 4.4.1: Notice of Disconnection
            raise LdapError(Reason.PROTOCOL, "server ended the session", op.code, op.message)
        if answered != message_id:
            raise ProbeFailure(Reason.PROTOCOL, f"answer to message {answered}, expected {message_id}")
        return op_name, op

    async def expect(self, message_id: int, op_name: str) -> LdapResult:
        """The result of the response ``op_name`` to ``message_id``."""
        answered, op = await self.receive(message_id)
        if answered != op_name or not isinstance(op, LdapResult):
            raise ProbeFailure(Reason.PROTOCOL, f"expected {op_name}, got {answered}")
        return op

    async def start_tls(self, options: LdapOptions, server_name: str) -> None:
        request = rfc2251.ExtendedRequest()
        request["requestName"] = STARTTLS_OID
        with self.result.timed("handshake", add=True):
            response = await self.expect(await self.send("extendedReq", request), "extendedResp")
        if response.code != 0:
            raise LdapError(Reason.TLS, "StartTLS refused", response.code, response.message)
        await self.connection.start_tls(client_context(options), server_name, self.result)

    async def bind(self, dn: str, password: str, what: str) -> None:
        request = rfc2251.BindRequest()
        request["version"] = 3
        request["name"] = dn
        request["authentication"]["simple"] = password.encode("utf-8")
        with self.result.timed("handshake", add=True):
            response = await self.expect(await self.send("bindRequest", request), "bindResponse")
        if response.code != 0:
            reason = Reason.AUTH if response.code in _AUTH_CODES else Reason.PROTOCOL
            raise LdapError(reason, f"{what} refused", response.code, response.message)

    async def read_root_dse(self, time_limit: int) -> dict[str, list[str]]:
        request = rfc2251.SearchRequest()
        request["baseObject"] = ""
        request["scope"] = 0  # baseObject
        request["derefAliases"] = 0  # neverDerefAliases
        request["sizeLimit"] = 1
        request["timeLimit"] = time_limit
        request["typesOnly"] = False
        request["filter"]["present"] = "objectClass"
        request["attributes"].extend(ROOT_DSE_ATTRIBUTES)
        attributes: dict[str, list[str]] = {}
        with self.result.timed("handshake", add=True):
            done = await self._search(await self.send("searchRequest", request), attributes)
        if done.code != 0:
            reason = Reason.AUTH if done.code in _AUTH_CODES else Reason.PROTOCOL
            raise LdapError(reason, "root DSE read failed", done.code, done.message)
        return attributes

    async def _search(self, message_id: int, attributes: dict[str, list[str]]) -> LdapResult:
        """Gather the entries' attributes into ``attributes``; returns the searchResDone's result."""
        for _ in range(MAX_SEARCH_MESSAGES):
            op_name, op = await self.receive(message_id)
            if isinstance(op, SearchEntry):
                for kind, values in op.attributes:
                    attributes.setdefault(kind.lower(), []).extend(values)
            elif op_name == "searchResDone" and isinstance(op, LdapResult):
                return op
            elif op_name != "searchResRef":
                raise ProbeFailure(Reason.PROTOCOL, f"expected a search result, got {op_name}")
        raise ProbeFailure(Reason.PROTOCOL, f"root DSE read gave more than {MAX_SEARCH_MESSAGES} messages")

    async def unbind(self) -> None:
        try:
            await self.send("unbindRequest", rfc2251.UnbindRequest(""))
        except ProbeFailure:
            pass  # the verdict is made; a server that already hung up changes nothing


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _label(value: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in value)[:MAX_LABEL_CHARS]


def record_root_dse(result: ProbeResult, attributes: dict[str, list[str]]) -> None:
    """``illiad_ldap_info``: a few bounded facts from what the server says of itself."""
    versions = sorted({v.strip() for v in attributes.get("supportedldapversion", []) if v.strip().isdigit()}, key=int)
    contexts = attributes.get("namingcontexts", [])
    vendor = " ".join(
        part.strip() for part in (*attributes.get("vendorname", [])[:1], *attributes.get("vendorversion", [])[:1])
    ).strip()
    result.add_info(
        "ldap",
        ldap_version=_label(",".join(versions)),
        starttls=str(STARTTLS_OID in {v.strip() for v in attributes.get("supportedextension", [])}).lower(),
        naming_context=_label(contexts[0] if contexts else ""),
        vendor=_label(vendor),
    )


async def probe_ldap(target: ProbeTarget[LdapOptions], result: ProbeResult) -> bool:
    options = target.options
    mode = options.mode_for(target.port)
    server_name = options.server_name or target.host
    time_limit = max(1, int(target.timeout))
    connection = await connect(target, result)
    try:
        if mode == "ldaps":
            await connection.start_tls(client_context(options), server_name, result)
        session = LdapSession(connection, result)
        if mode == "starttls":
            await session.start_tls(options, server_name)
        if options.bind_dn is not None and options.password is not None:
            dn = options.bind_dn if isinstance(options.bind_dn, str) else options.bind_dn.reveal()
            password = options.password.reveal()
            if not password:
                # A DN with an empty password is an unauthenticated bind, which servers accept
                # as anonymous (RFC 4513 5.1.2): it would hide a missing secret.
                raise ProbeFailure(Reason.AUTH, "the password secret is empty")
            try:
                await session.bind(dn, password, "authenticated bind")
            except LdapError as refused:
                # Still learn what the server is: the root DSE is readable anonymously.
                try:
                    record_root_dse(result, await session.read_root_dse(time_limit))
                except ProbeFailure:
                    pass
                raise refused from None
        else:
            await session.bind("", "", "anonymous bind")
        record_root_dse(result, await session.read_root_dse(time_limit))
        await session.unbind()
    finally:
        await connection.close()
    return True


PROBER = Prober("ldap", probe_ldap, LdapOptions,
                "LDAP bind and root DSE read; LDAPS on 636 or StartTLS; optional authenticated bind")
