"""The ILLiad network paths, as data.

One entry per row of the vendor's port checklist, plus the paths this project infers from
it; every entry says which of its facts come from where (``source``, see docs/sources.md)
and what breaks for the library when it is closed (``impact``). The catalog says *what*
must be reachable from *where*; it knows nothing of how a probe is done: ``prober`` is only
a name that the prober table resolves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Role(enum.StrEnum):
    """The host roles of an ILLiad installation; an exporter runs in one (its vantage)."""

    WEB_SERVER = "web_server"
    SQL_SERVER = "sql_server"
    STAFF_CLIENT = "staff_client"
    EXTERNAL = "external"


class Expect(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Require(enum.StrEnum):
    """How many of a path's targets must meet its expectation for the path to meet it."""

    ALL = "all"  # every host and port (the default)
    ANY = "any"  # at least one: "1433 or 1344", "any partner library answers"


class Source(enum.StrEnum):
    """Where a fact of the catalog comes from (docs/sources.md quotes each)."""

    PORTS_PAGE = "vendor ports page"  # the vendor's "Network Ports" support page
    OLDER_KB = "vendor older KB"  # the vendor's older knowledge-base article on the same ports
    INFERENCE = "inference"  # this project's reading of the checklist, not the vendor's word


@dataclass(frozen=True, slots=True)
class Cited:
    """One fact of a path and its source."""

    source: Source
    fact: str

    def __str__(self) -> str:
        return f"{self.source.value}: {self.fact}"


@dataclass(frozen=True, slots=True)
class RoleTarget:
    """The path goes to whichever host the site names for this role."""

    role: Role

    def __str__(self) -> str:
        return f"<{self.role.value}>"


@dataclass(frozen=True, slots=True)
class HostTarget:
    """The path goes to a fixed host (a public default such as OCLC's, overridable)."""

    host: str

    def __str__(self) -> str:
        return self.host


@dataclass(frozen=True, slots=True)
class SiteTarget:
    """The path goes to a host only the site knows (its OPAC, its LDAP server): config must say."""

    what: str

    def __str__(self) -> str:
        return f"<{self.what}>"


Target = RoleTarget | HostTarget | SiteTarget


@dataclass(frozen=True, slots=True)
class CatalogPath:
    id: str
    title: str
    # source role -> where that role must reach; one edge per (source, target)
    routes: Mapping[Role, tuple[Target, ...]]
    ports: tuple[int, ...]
    prober: str
    required: bool
    expect: Expect = Expect.OPEN
    notes: str = ""
    # prober options the catalog sets for this path (config may override them)
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    require: Require = Require.ALL
    # one plain sentence: what breaks for the library when this path is closed
    impact: str = ""
    source: tuple[Cited, ...] = ()
    # the inbound path whose override's enabled/required this outbound path follows, so a
    # config written before the split (odyssey: {enabled: false}) keeps its meaning
    follows: str = ""
    # the vendor wants a direct connection (no proxy, no TLS inspection): a certificate from
    # a CA this host does not trust on this path is an interceptor (explain.py)
    direct: bool = False

    @property
    def enabled_by_default(self) -> bool:
        # A path that must stay closed is a security check: worth probing unless turned off.
        return self.required or self.expect is Expect.CLOSED

    @property
    def sources(self) -> tuple[Role, ...]:
        return tuple(self.routes)

    def targets_from(self, vantage: Role) -> tuple[Target, ...]:
        return self.routes.get(vantage, ())

    def leaves_site(self, vantage: Role) -> bool:
        """Whether every leg from ``vantage`` goes outside the library (OCLC, the vendor,
        partner libraries): a host firewall rule for it is outbound on the source host."""
        targets = self.targets_from(vantage)
        return bool(targets) and all(
            isinstance(t, HostTarget) or t == RoleTarget(Role.EXTERNAL) for t in targets)


WEB = RoleTarget(Role.WEB_SERVER)
SQL = RoleTarget(Role.SQL_SERVER)
EXTERNAL = RoleTarget(Role.EXTERNAL)


def _routes(**by_role: tuple[Target, ...]) -> Mapping[Role, tuple[Target, ...]]:
    return MappingProxyType({Role(name): targets for name, targets in by_role.items()})


def _opts(**options: object) -> Mapping[str, object]:
    return MappingProxyType(options)


STAFF = RoleTarget(Role.STAFF_CLIENT)

PORTS_PAGE, OLDER_KB, INFERENCE = Source.PORTS_PAGE, Source.OLDER_KB, Source.INFERENCE


def _cite(*facts: tuple[Source, str]) -> tuple[Cited, ...]:
    return tuple(Cited(source, fact) for source, fact in facts)


CATALOG: tuple[CatalogPath, ...] = (
    CatalogPath(
        id="sql",
        title="ILLiad database (SQL Server)",
        routes=_routes(web_server=(SQL,), staff_client=(SQL,)),
        ports=(1433,),
        prober="tds",
        required=True,
        # the vendor's words are "1433 or 1344": with ports: [1433, 1344], either one answering is enough
        require=Require.ANY,
        notes="1344 is the vendor's fallback port (logon.dbc 'IP,1344'); ports: [1433, 1344] means either",
        impact="Staff clients and the web server cannot reach the ILLiad database: no request can be processed.",
        source=_cite((PORTS_PAGE, "web server and staff clients to SQL Server on 1433, or 1344 as the alternative")),
    ),
    CatalogPath(
        id="sql_from_external",
        title="SQL Server must not be reachable from outside",
        routes=_routes(external=(SQL,)),
        ports=(1433, 1344),
        prober="tcp",
        required=True,
        expect=Expect.CLOSED,
        notes="a database exposed to the internet is a break-in route",
        impact="When open, anyone outside the library can try to log on to the database that holds every patron "
               "record.",
        source=_cite((PORTS_PAGE, "only the web server and the staff clients need the SQL ports"),
                     (INFERENCE, "closed from outside")),
    ),
    CatalogPath(
        id="web_https",
        title="ILLiad web pages and Web Platform (HTTPS)",
        routes=_routes(external=(WEB,), staff_client=(WEB,)),
        ports=(443,),
        prober="illiad_web",
        required=True,
        notes="the Web Platform API requires a valid certificate",
        impact="Patrons cannot reach the ILLiad web pages to request or pick up items, and the Web Platform API "
               "stops working.",
        source=_cite((PORTS_PAGE, "443 inbound to the web server; the Web Platform requires an SSL certificate"),
                     (INFERENCE, "the staff-client leg")),
    ),
    CatalogPath(
        id="web_http",
        title="ILLiad web pages over plain HTTP",
        routes=_routes(external=(WEB,)),
        ports=(80,),
        prober="http",
        required=False,
        notes="443 is recommended",
        options=_opts(path="/illiad/logon.html"),
        impact="Patrons following plain-HTTP links cannot reach the ILLiad web pages.",
        source=_cite((PORTS_PAGE, "80 for non-secure pages, 443 recommended")),
    ),
    CatalogPath(
        id="oclc_webservices",
        title="OCLC web services (Connection Manager, client)",
        routes=_routes(
            web_server=(HostTarget("webservices.oclc.org"),),
            staff_client=(HostTarget("webservices.oclc.org"),),
        ),
        ports=(443,),
        prober="tls",
        required=True,
        direct=True,
        notes="the Connection Manager calls OCLC every 10 minutes; TLS 1.2 or newer",
        impact="The Connection Manager cannot exchange requests with OCLC: new OCLC requests and updates to "
               "existing ones stop.",
        source=_cite((PORTS_PAGE, "443 outbound from the web server, for the Connection Manager and the client"),
                     (OLDER_KB, "the host name webservices.oclc.org"),
                     (INFERENCE, "the staff-client leg (the page names the client but opens the port on the "
                                 "web server only)")),
    ),
    CatalogPath(
        id="atlas_update",
        title="Atlas Systems update server",
        routes=_routes(
            web_server=(HostTarget("update.atlas-sys.com"),),
            staff_client=(HostTarget("update.atlas-sys.com"),),
        ),
        ports=(443,),
        prober="tls",
        required=True,
        direct=True,
        notes="a direct connection, not through a proxy",
        impact="The ILLiad server updater and the staff clients' update check at every start cannot reach the "
               "vendor: updates fail.",
        source=_cite((PORTS_PAGE, "the server updater over HTTPS; the client's check at every start, 443, "
                                  "direct and not through a proxy"),
                     (OLDER_KB, "the host name update.atlas-sys.com")),
    ),
    CatalogPath(
        id="article_exchange",
        title="OCLC Article Exchange",
        routes=_routes(web_server=(HostTarget("ill.sd00.worldcat.org"),)),
        ports=(443,),
        prober="tls",
        required=True,
        direct=True,
        impact="Articles cannot be delivered through OCLC Article Exchange.",
        source=_cite((PORTS_PAGE, "443 outbound from the web server to Article Exchange"),
                     (OLDER_KB, "the host name ill.sd00.worldcat.org")),
    ),
    CatalogPath(
        id="odyssey",
        title="Odyssey document delivery, into the web server",
        routes=_routes(staff_client=(WEB,), external=(WEB,)),
        ports=(7968,),
        prober="odyssey",
        required=True,
        notes="connect and close only: the Odyssey Manager must receive nothing",
        impact="Staff cannot send scanned documents to the ILLiad server, and partner libraries cannot deliver "
               "documents to this library over Odyssey.",
        source=_cite((PORTS_PAGE, "inbound to the web server from the world and from staff clients"),
                     (OLDER_KB, "the port number 7968")),
    ),
    CatalogPath(
        id="odyssey_outbound",
        title="Odyssey document delivery, from the web server to partner libraries",
        routes=_routes(web_server=(EXTERNAL,)),
        ports=(7968,),
        prober="odyssey",
        required=True,
        require=Require.ANY,
        follows="odyssey",
        notes="set hosts: to partner libraries' ILLiad servers; one partner down is that partner's outage, "
              "none answering is this site's blocked egress",
        impact="The ILLiad server cannot send documents to other libraries' ILLiad servers over Odyssey.",
        source=_cite((PORTS_PAGE, "outbound from the web server to the world"),
                     (OLDER_KB, "the port number 7968"),
                     (INFERENCE, "partners as the targets, any one answering proves the egress")),
    ),
    CatalogPath(
        id="odyssey_to_staff",
        title="Odyssey from the web server to staff clients",
        routes=_routes(web_server=(STAFF,)),
        ports=(7968,),
        prober="odyssey",
        required=False,
        # Optional and off: the vendor opens the port inbound on staff PCs, but a PC listens
        # on 7968 only while a program there receives Odyssey deliveries, so a connect probe
        # says "refused" on most correctly configured PCs. A site whose staff PCs receive
        # deliveries turns it on (host: or hosts: the PCs).
        notes="optional: only where staff PCs receive Odyssey deliveries; otherwise nothing listens there",
        impact="Staff PCs that receive Odyssey deliveries from the ILLiad server do not get them.",
        source=_cite((PORTS_PAGE, "staff clients need the port open inbound and outbound to the web server"),
                     (OLDER_KB, "the port number 7968"),
                     (INFERENCE, "optional, because most staff PCs run nothing that listens")),
    ),
    CatalogPath(
        id="iso_ill",
        title="ISO ILL (ISO 10161), into the web server",
        routes=_routes(external=(WEB,)),
        ports=(1611,),
        prober="iso_ill",
        required=False,
        notes="connect and close only: every message is a real transaction",
        impact="Partner libraries cannot send ISO ILL requests to this library.",
        source=_cite((PORTS_PAGE, "1611 inbound to the web server, generally open to all addresses")),
    ),
    CatalogPath(
        id="iso_ill_outbound",
        title="ISO ILL (ISO 10161), from the web server to partner libraries",
        routes=_routes(web_server=(EXTERNAL,)),
        ports=(1611,),
        prober="iso_ill",
        required=False,
        require=Require.ANY,
        follows="iso_ill",
        notes="set hosts: to partner libraries' ISO ILL servers; any one answering proves the egress",
        impact="This library cannot send ISO ILL requests to partner libraries.",
        source=_cite((PORTS_PAGE, "1611 outbound from the web server"),
                     (INFERENCE, "partners as the targets, any one answering proves the egress")),
    ),
    CatalogPath(
        id="z3950",
        title="Z39.50 to the local OPAC",
        routes=_routes(staff_client=(SiteTarget("opac"),)),
        ports=(210,),
        prober="z3950",
        required=False,
        notes="the port varies by OPAC (210, 2100, 2200, 7090)",
        impact="Staff cannot see the library's own holdings from the OPAC inside the ILLiad client.",
        source=_cite((PORTS_PAGE, "staff clients to the OPAC's Z39.50 server; the port varies by OPAC"),
                     (INFERENCE, "210 as the default port")),
    ),
    CatalogPath(
        id="patron_api",
        title="Innovative PatronAPI",
        routes=_routes(web_server=(SiteTarget("patron_api_server"),)),
        ports=(4500,),
        prober="patron_api",
        required=False,
        notes="the PatronAPI server allow-lists the ILLiad server's address",
        impact="Patrons cannot log on to ILLiad where it authenticates them through the PatronAPI.",
        source=_cite((PORTS_PAGE, "4500 outbound from the web server to the PatronAPI server")),
    ),
    CatalogPath(
        id="symphony_api",
        title="SirsiDynix Symphony web services",
        routes=_routes(web_server=(SiteTarget("symphony_server"),)),
        ports=(8080,),
        prober="symphony_api",
        required=False,
        notes="IP-restricted at the Symphony server",
        impact="Patrons cannot log on to ILLiad where it authenticates them through SirsiDynix Symphony.",
        source=_cite((PORTS_PAGE, "8080 outbound from the web server to the SymphonyAPI server")),
    ),
    CatalogPath(
        id="ldap",
        title="LDAP patron authentication",
        routes=_routes(web_server=(SiteTarget("ldap_server"),)),
        ports=(389,),
        prober="ldap",
        required=False,
        notes="636 for LDAPS",
        impact="Patrons cannot log on to ILLiad where it authenticates them through LDAP.",
        source=_cite((PORTS_PAGE, "389 (636 for SSL) outbound from the web server to the LDAP server")),
    ),
    CatalogPath(
        id="rdp",
        title="Remote Desktop for vendor support",
        routes=_routes(external=(WEB, SQL)),
        ports=(3389,),
        prober="rdp",
        required=False,
        expect=Expect.CLOSED,
        notes="closed unless the site lets vendor support in (then expect: open)",
        impact="When open to everyone, Remote Desktop on the ILLiad servers is a break-in route; where the site "
               "lets vendor support in, support cannot connect when it is closed.",
        source=_cite((PORTS_PAGE, "3389 opened only if the site lets vendor support in"),
                     (INFERENCE, "closed by default, and the SQL Server host as a target too")),
    ),
)

BY_ID: Mapping[str, CatalogPath] = MappingProxyType({p.id: p for p in CATALOG})


def paths_for(vantage: Role) -> tuple[CatalogPath, ...]:
    """The catalog paths that start at this role."""
    return tuple(p for p in CATALOG if vantage in p.routes)
