"""Config: YAML in, typed objects out, validated once at load.

Every error names the file, the line and the key, and all of them are reported at once:
configfile.py reads the YAML so that each value keeps its position; here each section is
validated on its own, so that one bad site does not hide the errors of the next, and then
each site's paths are merged from the catalog, its overrides and the defaults
(:func:`catalog_paths`, :func:`custom_path`), which reports what only the merge can see.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic import IPvAnyAddress, PlainValidator, field_validator

from .allowlist import ProbeAllow, normalize_host
from .catalog import BY_ID, CatalogPath, Expect, HostTarget, Require, Role, RoleTarget, SiteTarget
from .configfile import MAX_ISSUES, ConfigIssue, Issues, LoadBounds, LoadBudget, Loc, StrictModel, compose_yaml, read_text
# what load_config raises, and the durations its models read, public here too: their callers import them with it
from .configfile import ConfigError as ConfigError
from .configfile import LoadInterrupted as LoadInterrupted
from .configfile import parse_duration as parse_duration
from .probers import PROBERS, ProberOptions
from .shard import Shard, parse_shard

# --- value types ------------------------------------------------------------------------

Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
HostName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[^\s/@?#]+$")]
HostList = Annotated[list[HostName], Field(min_length=1)]
PortList = Annotated[list[Port], Field(min_length=1)]


def one_line(value: Any) -> Any:
    if isinstance(value, str) and (not value.strip() or "\n" in value or "\r" in value or len(value) > 300):
        raise ValueError("impact is one line of text, at most 300 characters: what breaks when the path is closed")
    return value


# what breaks for the library when the path is closed: one line, shown on the status page
Impact = Annotated[str, AfterValidator(one_line)]


class Defaults(StrictModel):
    timeout: Duration = 5.0
    ip_protocol: Literal["ip4", "ip6"] = "ip4"
    ip_fallback: bool = True
    source_address: IPvAnyAddress | None = None
    # name -> addresses, used instead of DNS (like a hosts file); test labs and split DNS
    hosts: dict[HostName, list[IPvAnyAddress]] = Field(default_factory=dict)
    system_resolver: bool = True  # false: names missing from hosts fail with reason dns

    @field_validator("hosts")
    @classmethod
    def _names_any_case(cls, hosts: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Host names compare case-insensitively (and without a trailing dot), as DNS does:
        the table is keyed by the normalized name, and every look-up normalizes too
        (pinned), so LAB.TEST cannot miss a pin that lab.test hits."""
        table: dict[str, list[Any]] = {}
        for name, addresses in hosts.items():
            key = normalize_host(name)
            if key in table:
                raise ValueError(f"host {name!r} is listed twice (names compare without regard to case)")
            table[key] = addresses
        return table

    def pinned(self, host: str) -> tuple[str, ...]:
        """The addresses the hosts table pins for ``host`` (any case), else ()."""
        return tuple(str(a) for a in self.hosts.get(normalize_host(host), ()))


class ExporterSettings(StrictModel):
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] = 256
    scrape_timeout_offset: Duration = 0.5
    # used when Prometheus sends no X-Prometheus-Scrape-Timeout-Seconds header
    default_scrape_timeout: Duration = 10.0
    # "i/n": probe only the sites replica i of n owns (shard.py); --shard overrides it
    shard: Annotated[Shard, PlainValidator(parse_shard)] | None = None
    # false for the multi-target pattern: sites are probed through /probe?site= only, and
    # /metrics (scraped for the exporter's own health) probes nothing, so no path is probed
    # twice and no alert fires once per job
    probe_on_metrics: bool = True
    # "active": illiad_probe_failure_reason has one series per failed path, the reason, value
    # 1 (a working path has none); "all": every reason per path, 1 for the one that failed
    # and 0 for the others (eleven series per path, the only way before it became an option)
    failure_reasons: Literal["active", "all"] = "active"
    # the front door (frontdoor.py): clients of the exporter's own HTTP server
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 100  # and at most 1/4 of the descriptor limit
    header_timeout: Duration = 10.0  # a new connection's first request (and TLS handshake) must arrive by then
    idle_timeout: Duration = 60.0  # a kept-alive connection waits this long for its next request
    # a reload (SIGHUP, POST /-/reload) that takes longer fails, and the running config stays;
    # None: the bound of every load, --config.load-timeout
    reload_timeout: Duration | None = None


class PathOverride(StrictModel):
    """A site's changes to one catalog path; other keys are the prober's options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    enabled: bool | None = None
    host: HostName | None = None
    hosts: HostList | None = None  # several targets: every one probed, judged by require
    port: Port | None = None
    ports: PortList | None = None
    timeout: Duration | None = None
    prober: str | None = None
    expect: Expect | None = None
    required: bool | None = None
    require: Require | None = None
    impact: Impact | None = None


class CustomPath(StrictModel):
    """A path a site adds beyond the catalog."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: Name
    from_: Annotated[list[Role], Field(alias="from", min_length=1)]
    host: HostName | None = None
    hosts: HostList | None = None
    role: Role | None = None  # target a host of the site by role instead of by name
    port: Port | None = None
    ports: PortList | None = None
    prober: str = "tcp"
    expect: Expect = Expect.OPEN
    timeout: Duration | None = None
    enabled: bool = True
    required: bool = True
    require: Require = Require.ALL
    impact: Impact | None = None


_MISSING = object()


class SiteModel(StrictModel):
    name: Name
    hosts: dict[Role, HostName] = Field(default_factory=dict)
    paths: dict[str, PathOverride] = Field(default_factory=dict)
    custom: list[CustomPath] = Field(default_factory=list)


_NAME: TypeAdapter[str] = TypeAdapter(Name)
_HOSTS: TypeAdapter[dict[Role, str]] = TypeAdapter(dict[Role, HostName])


# --- the typed result ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SitePath:
    """One path of one site, catalog and overrides merged: what the planner needs."""

    id: str
    title: str
    routes: Mapping[Role, tuple[str, ...]]  # source role -> target hosts (resolved names)
    ports: tuple[int, ...]
    prober: str
    options: ProberOptions
    expect: Expect
    timeout: float
    required: bool
    enabled: bool
    custom: bool = False
    # source roles whose target host the site did not name (the path is skipped there)
    unresolved: tuple[tuple[Role, str], ...] = ()
    require: Require = Require.ALL
    impact: str = ""  # what breaks for the library when the path is closed


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    hosts: Mapping[Role, str]
    paths: tuple[SitePath, ...]

    def path(self, path_id: str) -> SitePath | None:
        return next((p for p in self.paths if p.id == path_id), None)


@dataclass(frozen=True, slots=True)
class Config:
    defaults: Defaults
    exporter: ExporterSettings
    sites: tuple[Site, ...]
    source: str = "<memory>"
    extras: Mapping[str, Any] = field(default_factory=dict)  # sections other modules own

    def site(self, name: str) -> Site | None:
        return next((s for s in self.sites if s.name == name), None)


# --- loading ------------------------------------------------------------------------------


T = TypeVar("T")


class Shared:
    """One object per distinct value a load makes again and again: prober options, routes,
    host and port tuples, whole catalog paths. A consortium's sites repeat them (every site
    gets every catalog path, most of them alike), and a copy each cost about 3 KiB per
    configured path (bench part (d)). The values are frozen and never mutated. One per load,
    so a reload validates afresh (a secret file that became unreadable, a variable unset)."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}

    def one(self, kind: str, value: T, key: Hashable = None) -> T:
        """The first ``kind`` seen with ``key`` (default: the value itself, hashable). The
        kind keeps apart values that compare equal but are not alike: Role.SQL_SERVER and
        "sql_server", (True,) and (1,)."""
        shared: T = self._values.setdefault((kind, value if key is None else key), value)
        return shared

    def routes(self, routes: dict[Role, tuple[str, ...]]) -> Mapping[Role, tuple[str, ...]]:
        routes = {role: self.one("hosts", hosts) for role, hosts in routes.items()}
        return self.one("routes", routes, tuple(routes.items()))

    def path(self, path: SitePath) -> SitePath:
        # routes and options are already shared: their identity stands for their value
        fields = _PATH_FIELDS(path)
        return self.one("path", path, fields[:_ROUTES] + (id(path.routes),) + fields[_ROUTES + 1:_OPTIONS]
                        + (id(path.options),) + fields[_OPTIONS + 1:])

    def options(self, prober_name: str, data: dict[str, Any], loc: Loc, issues: Issues, *,
                key: Hashable = None) -> ProberOptions | None:
        """_options, once per distinct (prober, data), or per ``key`` when the caller knows
        one that stands for both (a catalog path's own options): an invalid one is validated
        (and reported) at every place it occurs."""
        try:
            key = ("options", key or (prober_name, _frozen(data)))
            hash(key)
        except TypeError:  # a value YAML can make but a key cannot hold: validate it every time
            return _options(prober_name, data, loc, issues)
        options = self._values.get(key)
        if options is None:
            options = _options(prober_name, data, loc, issues)
            if options is not None:
                self._values[key] = options
        return options


# a SitePath's fields as a tuple, at once (a generator over __slots__ was a fifth of a load's validation)
_PATH_FIELDS = operator.attrgetter(*SitePath.__slots__)
_ROUTES, _OPTIONS = SitePath.__slots__.index("routes"), SitePath.__slots__.index("options")


def _frozen(value: Any) -> Hashable:
    """A hashable stand-in for YAML data that tells apart what compares equal across types
    (True and 1, 1 and 1.0: a strict model accepts one and refuses the other)."""
    if isinstance(value, dict):
        return (dict, tuple((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(v) for v in value))
    return (type(value), value)


_TOP_LEVEL = ("defaults", "exporter", "sites")
# top-level sections owned by other modules (web access, allow-lists, sharding): kept raw
EXTRA_SECTIONS: dict[str, type[BaseModel]] = {"probe_allow": ProbeAllow}


def load_config(path: str | Path, *, bounds: LoadBounds | None = None, pause: bool = False) -> Config:
    """Read and validate a config file within ``bounds`` (default: the default bounds); a
    bound crossed is a BoundCrossed naming it. ``pause``: see LoadBudget (a reload's thread)."""
    bounds = bounds or LoadBounds()
    budget = LoadBudget(bounds, str(path), pause=pause)
    return _parse(read_text(path, bounds=bounds), str(path), budget)


def parse_config(text: str, file: str = "<string>", *, bounds: LoadBounds | None = None) -> Config:
    return _parse(text, file, LoadBudget(bounds or LoadBounds(), file))


def _parse(text: str, file: str, budget: LoadBudget) -> Config:
    raw, issues = compose_yaml(text, file, budget=budget, limit=MAX_ISSUES)
    if raw is None:
        raise ConfigError([ConfigIssue(file, 1, 1, "", "config is empty: it needs at least one site under sites:")])
    with issues.bounded():
        return _validate(raw, issues, budget)


# --- shapes: each section and each site validated on its own, so one hides no other's errors


def _validate(raw: Any, issues: Issues, budget: LoadBudget) -> Config:
    if not isinstance(raw, dict):
        issues.add((), "the config must be a mapping with a sites: list")
        raise ConfigError(issues.issues)
    for key in raw:
        if key not in _TOP_LEVEL and key not in EXTRA_SECTIONS:
            issues.add((key,), f"unknown key (expected one of: {', '.join(_TOP_LEVEL + tuple(EXTRA_SECTIONS))})")
    defaults = issues.validate(Defaults, raw.get("defaults") or {}, ("defaults",))
    exporter = issues.validate(ExporterSettings, raw.get("exporter") or {}, ("exporter",))
    extras = {name: issues.validate(model, raw.get(name) or {}, (name,)) for name, model in EXTRA_SECTIONS.items()}
    sites_raw = raw.get("sites")
    sites: list[Site] = []
    if not isinstance(sites_raw, list) or not sites_raw:
        issues.add(("sites",), "sites: must be a non-empty list of sites")
    else:
        seen: dict[str, int] = {}
        shared = Shared()
        for index, site_raw in enumerate(sites_raw):
            if index % 64 == 0:
                budget.check(key=f"sites[{index}]")
            site = _site(site_raw, ("sites", index), defaults or Defaults(), issues, shared)
            if site is None:
                continue
            if site.name in seen:
                issues.add(("sites", index, "name"), f"duplicate site name (also sites[{seen[site.name]}])")
            seen.setdefault(site.name, index)
            sites.append(site)
    issues.raise_if_any()
    assert defaults is not None and exporter is not None
    return Config(defaults, exporter, tuple(sites), issues.file, extras)


def _site(raw: Any, loc: Loc, defaults: Defaults, issues: Issues, shared: Shared) -> Site | None:
    """One site: its parts' shapes first, each on its own, then the merge with the catalog."""
    if not isinstance(raw, dict):
        issues.add(loc, "a site must be a mapping with name: and hosts:")
        return None
    for key in raw:
        if key not in SiteModel.model_fields:
            issues.add(loc + (key,), f"unknown key (expected one of: {', '.join(SiteModel.model_fields)})")
    name = issues.validate(_NAME, raw.get("name", _MISSING), loc + ("name",))
    hosts = issues.validate(_HOSTS, raw.get("hosts") or {}, loc + ("hosts",))
    overrides_raw = raw.get("paths") or {}
    overrides: dict[str, PathOverride] = {}
    if not isinstance(overrides_raw, dict):
        issues.add(loc + ("paths",), "paths: must be a mapping of catalog path id to overrides")
        overrides_raw = {}
    for path_id, override_raw in overrides_raw.items():
        if path_id not in BY_ID:
            issues.add(loc + ("paths", path_id), f"unknown path id (catalog ids: {', '.join(BY_ID)})")
            continue
        override = issues.validate(PathOverride, override_raw if override_raw is not None else {},
                                   loc + ("paths", path_id))
        if override is not None:
            overrides[path_id] = override
    customs_raw = raw.get("custom") or []
    if not isinstance(customs_raw, list):
        issues.add(loc + ("custom",), "custom: must be a list of paths")
        customs_raw = []
    customs = [issues.validate(CustomPath, c, loc + ("custom", i)) for i, c in enumerate(customs_raw)]
    model = SiteModel.model_construct(name=name or "", hosts=hosts or {}, paths=overrides,
                                      custom=[c for c in customs if c is not None])
    paths = catalog_paths(model, defaults, loc, issues, shared=shared)
    names = set(BY_ID)
    for index, custom in enumerate(customs):
        cloc = loc + ("custom", index)
        if custom is None:
            raw_prober = customs_raw[index].get("prober") if isinstance(customs_raw[index], dict) else None
            if isinstance(raw_prober, str) and raw_prober not in PROBERS:
                shared.options(raw_prober, {}, cloc, issues)  # report the unknown prober too
            continue
        if custom.name in names:
            issues.add(cloc + ("name",), f"custom path name {custom.name!r} is already a path of this site")
            continue
        names.add(custom.name)
        merged = custom_path(custom, model, defaults, cloc, issues, shared=shared)
        if merged is not None:
            paths.append(merged)
    if name is None:
        return None
    return Site(name, shared.one("site hosts", dict(model.hosts), tuple(model.hosts.items())), tuple(paths))


# --- the merge: a validated site's paths from the catalog, its overrides and the defaults


def catalog_paths(site: SiteModel, defaults: Defaults, loc: Loc, issues: Issues, *,
                  shared: Shared | None = None) -> list[SitePath]:
    """Every catalog path for ``site``, each merged with the site's override and the
    defaults. What only the merge can see (an override's targets, a path enabled with no
    host to go to, the prober's own options) is reported to ``issues``, and that path left out."""
    paths: list[SitePath] = []
    shared = shared or Shared()
    for entry in BY_ID.values():
        merged = _catalog_path(entry, site, site.paths.get(entry.id), defaults, loc + ("paths", entry.id), issues,
                               shared, followed=site.paths.get(entry.follows))
        if merged is not None:
            paths.append(merged)
    return paths


def _targets(given: PathOverride | CustomPath, loc: Loc, issues: Issues) -> bool:
    """Checks host/hosts and port/ports of an override or custom path; False on an error."""
    ok = True
    if given.host is not None and given.hosts is not None:
        issues.add(loc + ("hosts",), "give host or hosts, not both")
        ok = False
    if given.port is not None and given.ports is not None:
        issues.add(loc + ("ports",), "give port or ports, not both")
        ok = False
    for key, values in (("hosts", given.hosts), ("ports", given.ports)):
        seen: set[object] = set()
        for index, value in enumerate(values or ()):
            same = normalize_host(value) if isinstance(value, str) else value  # names compare without case
            if same in seen:
                issues.add(loc + (key, index), f"{value} is listed twice")
                ok = False
            seen.add(same)
    return ok


def _catalog_path(
    entry: CatalogPath, site: SiteModel, override: PathOverride | None, defaults: Defaults, loc: Loc,
    issues: Issues, shared: Shared, *, followed: PathOverride | None = None,
) -> SitePath | None:
    given = override or _NO_OVERRIDE
    ok = _targets(given, loc, issues)
    prober = given.prober or entry.prober
    base_options = dict(entry.options) if prober == entry.prober else {}
    options = shared.options(prober, {**base_options, **(given.model_extra or {})}, loc, issues,
                             key=("catalog", entry.id) if prober == entry.prober and not given.model_extra else None)
    given_hosts = tuple(given.hosts) if given.hosts else ((given.host,) if given.host else ())
    routes: dict[Role, tuple[str, ...]] = {}
    unresolved: list[tuple[Role, str]] = []
    for source, targets in entry.routes.items():
        if given_hosts:  # host:/hosts: replace the catalog's targets on every route
            routes[source] = given_hosts
            continue
        hosts: list[str] = []
        for target in targets:
            host = _target_host(target, site.hosts)
            if host is None:
                unresolved.append(shared.one("unresolved", (source, str(target))))
            elif host not in hosts:
                hosts.append(host)
        routes[source] = tuple(hosts)
    ports = tuple(given.ports) if given.ports else ((given.port,) if given.port else entry.ports)
    if options is None or not ok:
        return None
    # An outbound path split off an inbound one (odyssey_outbound from odyssey) follows
    # the inbound override's enabled and required unless it has its own.
    followed = followed or _NO_OVERRIDE
    if given.enabled is not None:
        enabled = given.enabled
    elif followed.enabled is not None:
        enabled = followed.enabled
    else:  # configuring an optional path (its host, its port) turns it on
        enabled = entry.enabled_by_default or _configures(given) or _configures(followed)
    required = next((r for r in (given.required, followed.required) if r is not None), entry.required)
    if enabled and not given_hosts and any(isinstance(t, SiteTarget) for ts in entry.routes.values() for t in ts):
        issues.add(loc, "enabled, but no host: this path goes to a host only the site knows; set host: or hosts:")
    return shared.path(SitePath(
        id=entry.id,
        title=entry.title,
        routes=shared.routes(routes),
        ports=shared.one("ports", ports),
        prober=prober,
        options=options,
        expect=given.expect or entry.expect,
        timeout=given.timeout or defaults.timeout,
        required=required,
        enabled=enabled,
        unresolved=shared.one("unresolved", tuple(unresolved)),
        require=given.require or entry.require,
        impact=given.impact or entry.impact,
    ))


_NO_OVERRIDE = PathOverride()  # frozen: one for every catalog path a site leaves as it is


def custom_path(custom: CustomPath, site: SiteModel, defaults: Defaults, loc: Loc, issues: Issues, *,
                shared: Shared | None = None) -> SitePath | None:
    """A custom path of ``site`` with the defaults; None (its errors in ``issues``) when it cannot be probed."""
    shared = shared or Shared()
    ok = _targets(custom, loc, issues)
    named = [x for x in (custom.host, custom.hosts, custom.role) if x is not None]
    if not named or (len(named) > 1 and (custom.host is None or custom.hosts is None or custom.role)):
        issues.add(loc, "a custom path needs exactly one of host, hosts or role")
        ok = False
    if custom.port is None and not custom.ports:
        issues.add(loc, "a custom path needs port or ports")
        ok = False
    hosts = tuple(custom.hosts) if custom.hosts else ((custom.host,) if custom.host else ())
    if custom.role is not None:
        role_host = site.hosts.get(custom.role)
        if role_host is None:
            issues.add(loc + ("role",), f"the site names no host for role {custom.role.value}")
            ok = False
        else:
            hosts = (role_host,)
    options = shared.options(custom.prober, dict(custom.model_extra or {}), loc, issues)
    if not ok or options is None or not hosts:
        return None
    return shared.path(SitePath(
        id=custom.name,
        title=custom.name,
        routes=shared.routes({role: hosts for role in custom.from_}),
        ports=shared.one("ports", tuple(custom.ports) if custom.ports else (custom.port or 0,)),
        prober=custom.prober,
        options=options,
        expect=custom.expect,
        timeout=custom.timeout or defaults.timeout,
        required=custom.required,
        enabled=custom.enabled,
        custom=True,
        require=custom.require,
        impact=custom.impact or "",
    ))


def _options(prober_name: str, data: dict[str, Any], loc: Loc, issues: Issues) -> ProberOptions | None:
    prober = PROBERS.get(prober_name)
    if prober is None:
        issues.add(loc + ("prober",), f"unknown prober {prober_name!r} (known: {', '.join(sorted(PROBERS))})")
        return None
    options: ProberOptions | None = issues.validate(prober.options, data, loc,
                                                    unknown_key=f"unknown key for prober {prober_name!r}")
    return options


def _target_host(target: object, hosts: Mapping[Role, str]) -> str | None:
    if isinstance(target, HostTarget):
        return target.host
    if isinstance(target, RoleTarget):
        return hosts.get(target.role)
    return None  # SiteTarget: only an override's host: names it


def _configures(override: PathOverride) -> bool:
    return bool(override.host or override.hosts or override.port or override.ports or override.model_extra)
