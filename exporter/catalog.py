"""The ILLiad network paths, as data.

One entry per row of the vendor's port checklist (see ILLIAD.md). The catalog says *what*
must be reachable from *where*; it knows nothing of how a probe is done: ``prober`` is only
a name that the prober table resolves.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Role(str, enum.Enum):
    """The host roles of an ILLiad installation; an exporter runs in one (its vantage)."""

    WEB_SERVER = "web_server"
    SQL_SERVER = "sql_server"
    STAFF_CLIENT = "staff_client"
    EXTERNAL = "external"

    def __str__(self) -> str:
        return self.value


class Expect(str, enum.Enum):
    OPEN = "open"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


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

    @property
    def enabled_by_default(self) -> bool:
        # A path that must stay closed is a security check: worth probing unless turned off.
        return self.required or self.expect is Expect.CLOSED

    @property
    def sources(self) -> tuple[Role, ...]:
        return tuple(self.routes)

    def targets_from(self, vantage: Role) -> tuple[Target, ...]:
        return self.routes.get(vantage, ())


WEB = RoleTarget(Role.WEB_SERVER)
SQL = RoleTarget(Role.SQL_SERVER)
EXTERNAL = RoleTarget(Role.EXTERNAL)


def _routes(**by_role: tuple[Target, ...]) -> Mapping[Role, tuple[Target, ...]]:
    return MappingProxyType({Role(name): targets for name, targets in by_role.items()})


def _opts(**options: object) -> Mapping[str, object]:
    return MappingProxyType(options)


CATALOG: tuple[CatalogPath, ...] = (
    CatalogPath(
        id="sql",
        title="ILLiad database (SQL Server)",
        routes=_routes(web_server=(SQL,), staff_client=(SQL,)),
        ports=(1433,),
        prober="tds",
        required=True,
        notes="1344 is the vendor's fallback port (logon.dbc 'IP,1344')",
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
    ),
    CatalogPath(
        id="web_https",
        title="ILLiad web pages and Web Platform (HTTPS)",
        routes=_routes(external=(WEB,), staff_client=(WEB,)),
        ports=(443,),
        prober="illiad_web",
        required=True,
        notes="the Web Platform API requires a valid certificate",
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
        notes="the Connection Manager calls OCLC every 10 minutes; TLS 1.2 or newer",
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
        notes="a direct connection, not through a proxy",
    ),
    CatalogPath(
        id="article_exchange",
        title="OCLC Article Exchange",
        routes=_routes(web_server=(HostTarget("ill.sd00.worldcat.org"),)),
        ports=(443,),
        prober="tls",
        required=True,
    ),
    CatalogPath(
        id="odyssey",
        title="Odyssey document delivery",
        routes=_routes(
            staff_client=(WEB,),
            web_server=(EXTERNAL,),
            external=(WEB,),
        ),
        ports=(7968,),
        prober="odyssey",
        required=True,
        notes="connect and close only: the Odyssey Manager must receive nothing",
    ),
    CatalogPath(
        id="iso_ill",
        title="ISO ILL (ISO 10161)",
        routes=_routes(web_server=(EXTERNAL,), external=(WEB,)),
        ports=(1611,),
        prober="iso_ill",
        required=False,
        notes="connect and close only: every message is a real transaction",
    ),
    CatalogPath(
        id="z3950",
        title="Z39.50 to the local OPAC",
        routes=_routes(staff_client=(SiteTarget("opac"),)),
        ports=(210,),
        prober="z3950",
        required=False,
        notes="the port varies by OPAC (210, 2100, 2200, 7090)",
    ),
    CatalogPath(
        id="patron_api",
        title="Innovative PatronAPI",
        routes=_routes(web_server=(SiteTarget("patron_api_server"),)),
        ports=(4500,),
        prober="patron_api",
        required=False,
        notes="the PatronAPI server allow-lists the ILLiad server's address",
    ),
    CatalogPath(
        id="symphony_api",
        title="SirsiDynix Symphony web services",
        routes=_routes(web_server=(SiteTarget("symphony_server"),)),
        ports=(8080,),
        prober="symphony_api",
        required=False,
        notes="IP-restricted at the Symphony server",
    ),
    CatalogPath(
        id="ldap",
        title="LDAP patron authentication",
        routes=_routes(web_server=(SiteTarget("ldap_server"),)),
        ports=(389,),
        prober="ldap",
        required=False,
        notes="636 for LDAPS",
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
    ),
)

BY_ID: Mapping[str, CatalogPath] = MappingProxyType({p.id: p for p in CATALOG})


def paths_for(vantage: Role) -> tuple[CatalogPath, ...]:
    """The catalog paths that start at this role."""
    return tuple(p for p in CATALOG if vantage in p.routes)
