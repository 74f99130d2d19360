"""Say what broke and what to do: for a path that fails its expectation, what the library
loses (the impact), what the network did (a diagnosis per failure reason, from what the
prober saw), and the exact rule to ask for, addresses filled in.

Pure: it reads facts (a path, its verdict, what each probe of it saw) and returns text.
The one thing it may ask the machine is which local address the kernel would use towards
a destination (:func:`kernel_source_address`), for a connection that never got that far;
``check`` does that on the vantage host itself and records the answer, so a report made
elsewhere from the JSON says the same.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .catalog import BY_ID, Require, Role
from .config import Config
from .escape import markdown, markdown_code, markdown_fence, visible
from .probers.base import ProbeResult, ProbeTarget
from .scrape import Outcome
from .verdict import PathVerdict, verdicts_of

T = TypeVar("T")

# Roles whose hosts are this site's own Windows machines: a rule for traffic *to* them goes
# on their inbound side; traffic they send to the world needs their outbound side.
SITE_HOST_ROLES = ("web_server", "sql_server", "staff_client")

SERVICE_BY_PROBER = {
    "tds": "SQL Server (TDS)",
    "tls": "a TLS server",
    "http": "a web server (HTTP)",
    "illiad_web": "the ILLiad web pages over HTTPS",
    "ldap": "an LDAP server",
    "z3950": "a Z39.50 server",
    "rdp": "Remote Desktop",
    "patron_api": "the PatronAPI",
    "symphony_api": "Symphony web services",
}

# What a probe's first received bytes say about who answered (the probers quote them).
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("HTTP/", "a web server (it answered with HTTP)"),
    ("SSH-", "an SSH server"),
    ("\\x16\\x03", "a TLS server (it answered with a TLS handshake)"),
    ("220 ", "an FTP or mail server (a '220' greeting)"),
    ("<html", "a web page"),
    ("<!DOCTYPE", "a web page"),
)


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """One probe of the path (one host and port) and what it saw."""

    host: str
    port: int
    met: bool | None  # None: unknown (the exporter's own failure)
    observed: str  # "open" (a connection was accepted, whatever came after) or "closed"
    reason: str | None = None  # the failure reason word, None when it worked
    detail: str = ""
    addresses: tuple[str, ...] = ()  # the destination addresses tried (or connected to)
    source: str | None = None  # the local address used, or the one the kernel would pick
    tls_issuer: str = ""
    tls_subject: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PathFacts:
    """One path from one vantage of one site, with its verdict and its probes."""

    site: str
    vantage: str
    path: str
    title: str
    impact: str
    expect: str  # "open" or "closed"
    required: bool
    prober: str
    met: bool | None  # None: unknown (the exporter could not tell)
    targets: tuple[TargetFacts, ...]
    site_hosts: Mapping[str, str] = field(default_factory=dict)  # role -> host name
    hosts_answering: frozenset[str] = frozenset()  # hosts some probe from this vantage connected to
    require_any: bool = False  # one target answering meets the path
    direct: bool = False  # the vendor wants it direct: no proxy, no TLS inspection (catalog)
    leaves_site: bool = False  # it goes to OCLC, the vendor or partners, whatever address they have


@dataclass(frozen=True, slots=True)
class Diagnosis:
    target: str  # host:port
    reason: str  # the reason word, or "open" for a must-be-closed path found open, "interception"
    text: str


@dataclass(frozen=True, slots=True)
class Rule:
    """The change to ask for, as a network team reads it and as a Windows host firewall
    command (empty when the host firewall is not the place)."""

    action: str  # allow, block, exempt
    source: str
    destinations: tuple[str, ...]
    port: int
    network: str
    windows_host: str = ""  # the host the command runs on
    powershell: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    site: str
    vantage: str
    path: str
    title: str
    required: bool
    impact: str
    diagnoses: tuple[Diagnosis, ...]
    rules: tuple[Rule, ...]
    note: str = ""  # said once about the rules (why none, or that one suffices)

    def as_json(self) -> dict[str, object]:
        return {
            "impact": self.impact,
            "diagnosis": [{"target": d.target, "reason": d.reason, "text": d.text} for d in self.diagnoses],
            "rules": [
                {"action": r.action, "source": r.source, "destinations": list(r.destinations), "port": r.port,
                 "network": r.network, "windows_host": r.windows_host, "powershell": r.powershell}
                for r in self.rules
            ],
            "rule_note": self.note,
        }


def kernel_source_address(destination: str) -> str | None:
    """The local address this host's routing table picks for ``destination``. Connecting a
    UDP socket only selects a route and a source address; no packet is sent."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((destination, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return None


# -- diagnosis ---------------------------------------------------------------------------


def _where(t: TargetFacts) -> str:
    addresses = ", ".join(t.addresses)
    return f"{t.host} ({addresses}) port {t.port}" if addresses and addresses != t.host else f"{t.host} port {t.port}"


def _seen(detail: str) -> str:
    """Who answered, from the bytes a prober quoted, when it can be told."""
    for marker, what in _SIGNATURES:
        if marker.lower() in detail.lower():
            return what
    if "truncated: 0 of" in detail or "closed before" in detail or "before close" in detail:
        return "a listener that closed the connection without answering"
    return ""


def _interception(path: PathFacts, t: TargetFacts) -> Diagnosis | None:
    """A TLS failure on a must-be-direct path that says someone else answered for the
    server: a chain from an issuer this host does not trust, or for another name."""
    if not path.direct or t.reason != "tls":
        return None
    detail = t.detail.lower()
    untrusted = any(m in detail for m in ("unable to get local issuer", "self-signed", "self signed",
                                          "unable to verify the first certificate"))
    wrong_name = "mismatch" in detail or "not valid for" in detail
    if not (untrusted or wrong_name):
        return None
    issuer = f"issued by {t.tls_issuer}" if t.tls_issuer else "from an issuer this host does not know"
    if untrusted:
        why = f"the certificate presented for {t.host} is {issuer}, a CA this host does not trust (a private CA)"
    else:
        why = f"the certificate presented is for {t.tls_subject or 'another name'}, not {t.host} ({issuer})"
    return Diagnosis(t.endpoint, "interception",
                     f"An intercepting proxy or firewall sits on this path: connecting to {_where(t)}, {why}. "
                     f"{path.title} must be a direct connection: exempt it from TLS inspection and proxying.")


def _diagnose_open(path: PathFacts, t: TargetFacts) -> Diagnosis:
    """Why a probe of a path that must be open failed."""
    reason = t.reason or "error"
    where = _where(t)
    source = f" from {t.source}" if t.source else ""
    text: str
    if reason == "refused" and t.host in _own_hosts(path):
        text = (f"{where} refused the connection{source} (TCP reset): nothing listens on port {t.port}, or a host "
                f"firewall rejects it. Check that the service runs on {t.host} and listens on {t.port}, then the "
                f"firewall of {t.host}.")
    elif reason == "refused":
        text = (f"{where} refused the connection{source} (TCP reset): a firewall on the way rejects it (this "
                f"host's outbound rules, or the perimeter's), or nothing listens on that side.")
    elif reason == "timeout":
        text = _timeout_text(path, t, where, source)
    elif reason == "unreachable":
        text = (f"{where} is unreachable{source}: a router has no route to it, or a firewall answers "
                f"'unreachable' (ICMP administratively prohibited). Check the routing, then the rule below.")
    elif reason == "dns":
        text = (f"The name {t.host} did not resolve on this host ({t.detail or 'no address'}): check the DNS "
                f"server this host uses (or the config's hosts table). No firewall rule helps until it resolves.")
    elif reason == "network":
        text = (f"The connection to {where} was cut during the exchange ({t.detail}): a firewall or intrusion "
                f"prevention system that inspects this traffic, or an overloaded service.")
    elif reason == "tls":
        intercepted = _interception(path, t)
        if intercepted is not None:
            return intercepted
        text = (f"The TLS handshake with {where} failed: {t.detail}."
                + (f" The certificate presented is issued by {t.tls_issuer}." if t.tls_issuer else "")
                + " The network lets the connection through; the server's certificate or TLS setup is the problem"
                  " (or this host lacks its CA: ca_file).")
    elif reason == "protocol":
        expected = SERVICE_BY_PROBER.get(path.prober, f"the {path.prober} service")
        seen = _seen(t.detail)
        what = f"what answered is {seen}, not {expected}" if seen else f"what answered is not {expected}"
        text = (f"The connection to {where} works, but {what} ({t.detail}). Another service holds the port, or a "
                f"proxy or load balancer answers in its place: check what listens on {t.host}:{t.port}.")
    elif reason == "http_status":
        text = (f"The web server at {where} answered, with an unexpected status ({t.detail}): the network is fine; "
                f"the web application or its configuration is not (IIS, the ILLiad web directory).")
    elif reason == "auth":
        text = (f"{where} answers and speaks the protocol, but refused the configured login ({t.detail}): check the "
                f"credentials in the config and the account on the server. The network is fine.")
    elif reason == "browser":
        text = (f"The SQL Server Browser on {t.host} (UDP 1434) gave no port for the named instance ({t.detail}): "
                f"the Browser service is stopped, UDP 1434 is blocked, or the instance name is wrong. A fixed TCP "
                f"port for the instance avoids the Browser.")
    elif reason == "exporter":
        text = (f"The exporter could not probe {where} ({t.detail}): its own limit, not the network. The path's "
                f"state is unknown; raise exporter.max_concurrency or the scrape timeout.")
    else:
        text = (f"The probe of {where} failed inside the exporter ({t.detail or reason}): a bug, logged with its "
                f"traceback. The path's state is unknown.")
    return Diagnosis(t.endpoint, reason, text)


def _timeout_text(path: PathFacts, t: TargetFacts, where: str, source: str) -> str:
    """No answer in time: dropped on the way, unless the connection was accepted (then the
    network let it through, and the service is what did not answer)."""
    if t.observed == "open":
        expected = SERVICE_BY_PROBER.get(path.prober, f"the {path.prober} service")
        return (f"{where} accepted the connection{source}, but no answer from {expected} came in time "
                f"({t.detail}): the network lets the connection through, so no firewall rule helps. The service is "
                f"slow or hung, or another one that waits for the client to speak holds the port: check what "
                f"listens on {t.host}:{t.port}, and its load.")
    text = (f"No answer from {where}{source} in time: a firewall on the way (the network's or {t.host}'s own) "
            f"drops the packets, or the host is down.")
    if t.host in path.hosts_answering:
        text += f" Other paths from here reach {t.host}, so it is up: a rule drops port {t.port}."
    return text


def _diagnose_closed(path: PathFacts, t: TargetFacts) -> Diagnosis:
    """A path that must stay closed, found open."""
    source = t.source or "this host"
    return Diagnosis(t.endpoint, "open",
                     f"{_where(t)} accepted a connection from {source}, and must not: {path.title.rstrip('.')}. "
                     f"A firewall must block it.")


# -- rules -------------------------------------------------------------------------------


def _own_hosts(path: PathFacts) -> set[str]:
    return {host for role, host in path.site_hosts.items() if role in SITE_HOST_ROLES}


def _windows_side(path: PathFacts, t: TargetFacts) -> tuple[str, str]:
    """(direction, host the command runs on): inbound on the site's own destination host,
    else outbound on the site's own source host; ('', '') when neither is the site's. A path
    that leaves the site is outbound even where a test or lab config points it at one of the
    site's own addresses."""
    if not path.leaves_site and t.host in _own_hosts(path):
        return "Inbound", t.host
    source_host = path.site_hosts.get(path.vantage) if path.vantage in SITE_HOST_ROLES else None
    if source_host or path.vantage in SITE_HOST_ROLES:
        return "Outbound", source_host or f"the {path.vantage.replace('_', ' ')}"
    return "", ""


def _rule(path: PathFacts, t: TargetFacts, action: str) -> Rule:
    source = t.source or "?"
    destinations = t.addresses or (t.host,)
    to = ", ".join(destinations)
    if action == "exempt":
        return Rule(action, source, destinations, t.port,
                    f"exempt TCP from {source} to {to} port {t.port} from TLS inspection and proxying "
                    f"({path.title}: a direct connection)")
    verb = "allow" if action == "allow" else "block"
    network = f"{verb} TCP from {source} to {to} port {t.port}"
    direction, host = _windows_side(path, t)
    if not direction:
        return Rule(action, source, destinations, t.port, network)
    remote = ",".join(destinations) if direction == "Outbound" else source
    name = f"ILLiad {path.path} {'to' if direction == 'Outbound' else 'from'} {remote}"
    ports = (f"-LocalAddress {','.join(destinations)} -LocalPort {t.port} -RemoteAddress {source}"
             if direction == "Inbound" else f"-LocalAddress {source} -RemoteAddress {remote} -RemotePort {t.port}")
    command = (f'New-NetFirewallRule -DisplayName "{name}" -Direction {direction} -Protocol TCP {ports} '
               f"-Action {'Allow' if action == 'allow' else 'Block'}")
    return Rule(action, source, destinations, t.port, network, host, command)


_FIREWALL_REASONS = frozenset({"refused", "timeout", "unreachable"})


def explain(path: PathFacts) -> Explanation | None:
    """The explanation of a path that fails its expectation; None when it meets it."""
    if path.met is True:
        return None
    failing = [t for t in path.targets if t.met is not True]
    diagnoses: list[Diagnosis] = []
    rules: list[Rule] = []
    for t in failing:
        if t.met is None:  # the exporter's own failure (nothing said of the network), or not probed yet
            if t.reason is not None:
                diagnoses.append(_diagnose_open(path, t))
        elif path.expect == "closed":
            diagnoses.append(_diagnose_closed(path, t))
            rules.append(_rule(path, t, "block"))
        else:
            diagnosis = _diagnose_open(path, t)
            diagnoses.append(diagnosis)
            if diagnosis.reason == "interception":
                rules.append(_rule(path, t, "exempt"))
            elif t.reason in _FIREWALL_REASONS and t.observed != "open":  # connected: not the network
                rules.append(_rule(path, t, "allow"))
    note = ""
    if path.met is None:
        note = "The path's state is unknown: the exporter could not probe it."
    elif not rules:
        note = "No firewall rule to ask for: the network let the connection through, or it never started."
    elif path.expect == "open" and len(rules) > 1 and path.require_any:
        note = "Any one of these rules opens the path (it needs only one of its targets)."
    return Explanation(path.site, path.vantage, path.path, path.title, path.required, path.impact,
                       tuple(_unique(diagnoses)), tuple(_unique(rules)), note)


def _unique(items: Iterable[T]) -> list[T]:
    seen: list[T] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


# -- rendering ---------------------------------------------------------------------------


def _heading(e: Explanation) -> str:
    need = "required" if e.required else "optional"
    return f"{e.path} ({need}) from {e.vantage}, site {e.site}: {e.title}"


def as_text(explanations: Sequence[Explanation]) -> str:
    """The ``check --explain`` block under the table (control characters shown escaped)."""
    blocks = []
    for e in explanations:
        lines = [_heading(e), f"  Impact: {e.impact}" if e.impact else "  Impact: (none recorded)"]
        for d in e.diagnoses:
            lines.append(f"  Diagnosis ({d.reason}): {d.text}")
        for r in e.rules:
            lines.append(f"  Network rule: {r.network}")
            if r.powershell:
                lines.append(f"  Windows firewall on {r.windows_host}: {r.powershell}")
        if e.note:
            lines.append(f"  {e.note}")
        blocks.append("\n".join(visible(line) for line in lines))
    return "\n\n".join(blocks)


def as_markdown(explanations: Sequence[Explanation]) -> str:
    """The explanations as ticket-ready markdown sections; what came from the config is
    escaped (escape.py), as ``report`` escapes what it reads."""
    out = []
    for e in explanations:
        out += [f"### {markdown(_heading(e))}", "", f"**Impact:** {markdown(e.impact or '(none recorded)')}", ""]
        for d in e.diagnoses:
            out.append(f"- **{markdown(d.reason)}** {markdown_code(d.target)}: {markdown(d.text)}")
        out.append("")
        for r in e.rules:
            out += ["Rule for the network team:", "", markdown_fence(r.network), ""]
            if r.powershell:
                out += [f"Windows Defender Firewall, on {markdown(r.windows_host)} (PowerShell as administrator):", "",
                        markdown_fence(r.powershell, "powershell"), ""]
        if e.note:
            out += [markdown(e.note), ""]
    return "\n".join(out).rstrip() + "\n"


# -- from probe results ------------------------------------------------------------------


def target_facts(target: ProbeTarget, result: ProbeResult | None, met: bool | None, *,
                 source_address: str | None = None,
                 pick: Callable[[str], str | None] = kernel_source_address) -> TargetFacts:
    """What one probe saw, with the source address filled in: the one it used, else the
    configured one, else the one the kernel would pick (it never connected)."""
    if result is None:
        return TargetFacts(target.host, target.port, met, "not probed")
    recorded = result.facts.get("addresses", "")
    addresses = tuple(a for a in recorded.split(",") if a) or ((result.address,) if result.address else ())
    source = result.facts.get("source") or source_address or (pick(addresses[0]) if addresses else None)
    return TargetFacts(
        host=target.host, port=result.port or target.port, met=met, observed=result.observed.value,
        reason=None if result.up else (result.reason.value if result.reason else None), detail=result.detail,
        addresses=addresses, source=source, tls_issuer=result.facts.get("tls_issuer", ""),
        tls_subject=result.facts.get("tls_subject", ""),
    )


def explain_verdicts(
    config: Config, verdicts: Iterable[PathVerdict], *, pick: Callable[[str], str | None] = kernel_source_address,
) -> dict[tuple[str, str], Explanation]:
    """The explanation of every path whose verdict is not met, keyed by (site, path); the
    hosts some probe of the same vantage reached count as up."""
    verdicts = list(verdicts)
    answering: dict[str, set[str]] = {}
    for v in verdicts:
        answering.setdefault(v.site, set()).update(
            c.target.host for c in v.checks if c.result is not None and c.result.address is not None)
    source = str(config.defaults.source_address) if config.defaults.source_address else None
    found: dict[tuple[str, str], Explanation] = {}
    sites = {site.name: site for site in config.sites}  # not config.site(): 10,000 paths x 1,000 sites
    for v in verdicts:
        if v.met is True:
            continue
        site = sites.get(v.site)
        path = site.path(v.path) if site is not None else None
        if site is None or path is None:
            continue
        facts = PathFacts(
            site=v.site, vantage=v.vantage, path=v.path, title=path.title, impact=path.impact,
            expect=path.expect.value, required=path.required, prober=path.prober, met=v.met,
            targets=tuple(target_facts(c.target, c.result, c.met, source_address=source, pick=pick)
                          for c in v.checks),
            site_hosts={role.value: host for role, host in site.hosts.items()},
            hosts_answering=frozenset(answering.get(v.site, ())), require_any=v.require is Require.ANY,
            direct=not path.custom and path.id in BY_ID and BY_ID[path.id].direct,
            leaves_site=not path.custom and path.id in BY_ID and BY_ID[path.id].leaves_site(Role(v.vantage)),
        )
        explanation = explain(facts)
        if explanation is not None:
            found[(v.site, v.path)] = explanation
    return found


def explain_outcomes(config: Config, outcomes: Sequence[Outcome]) -> dict[tuple[str, str], Explanation]:
    """The explanations of the failing paths among one vantage's outcomes."""
    return explain_verdicts(config, verdicts_of(outcomes))
