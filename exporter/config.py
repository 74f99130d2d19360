"""Config: YAML in, typed objects out, validated once at load.

Every error names the file, the line and the key, and all of them are reported at once: the
YAML is composed into nodes first so that each value keeps its position, then each section
is validated on its own so that one bad site does not hide the errors of the next.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic import IPvAnyAddress, PlainValidator, field_validator

from .allowlist import ProbeAllow, normalize_host
from .catalog import BY_ID, CatalogPath, Expect, HostTarget, Require, Role, RoleTarget, SiteTarget
from .files import read_bounded
from .probers import PROBERS, ProberOptions
from .shard import Shard, parse_shard

Loc = tuple[str | int, ...]

# --- value types ------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)(ms|s|m|h))+\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Prometheus-style durations ('5s', '1m30s', '250ms'); a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 500ms")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"expected a duration such as 5s or 500ms, got {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
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


class ExporterSettings(_Strict):
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
    # a reload (SIGHUP, POST /-/reload) that takes longer fails, and the running config stays
    reload_timeout: Duration = 30.0


class PathOverride(_Strict):
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


class CustomPath(_Strict):
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


_INVALID = object()  # marks a part that failed validation (its errors are already recorded)
_MISSING = object()


class SiteModel(_Strict):
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


@dataclass(frozen=True, slots=True)
class Config:
    defaults: Defaults
    exporter: ExporterSettings
    sites: tuple[Site, ...]
    source: str = "<memory>"
    extras: Mapping[str, Any] = field(default_factory=dict)  # sections other modules own

    def site(self, name: str) -> Site | None:
        return next((s for s in self.sites if s.name == name), None)


# --- errors -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int
    key: str  # dotted path: sites[0].paths.sql.port
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an error in a mapping's key
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(str(part)):  # an odd key (empty, spaces, newlines) stays on one line
            text += f"[{str(part)[:60]!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_PLAIN_KEY = re.compile(r"[\w.<>-]+")


# --- YAML with positions ------------------------------------------------------------------


class _Positions:
    """Where each key path sits in the file (0-based line and column from PyYAML)."""

    def __init__(self) -> None:
        self.marks: dict[Loc, tuple[int, int]] = {}

    def at(self, loc: Loc) -> tuple[int, int]:
        for end in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:end]))
            if mark is not None:
                return mark
        return (0, 0)


class LoadInterrupted(Exception):
    """A load stopped by its deadline (exporter.reload_timeout)."""


class _Builder:
    def __init__(self, file: str, *, deadline: float | None = None) -> None:
        self.file = file
        self.positions = _Positions()
        self.issues: list[ConfigIssue] = []
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used
        self.nodes = 0
        self.deadline = deadline
        self._built: set[int] = set()  # ids of the nodes built once: building one again is an alias
        self._again = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.nodes += 1
        if id(node) in self._built:  # an alias expands to a copy of its whole tree, every time
            self._again += 1
            if self._again > MAX_ALIAS_NODES:
                raise ConfigError([ConfigIssue(
                    self.file, node.start_mark.line + 1, node.start_mark.column + 1, "",
                    f"aliases expand to more than {MAX_ALIAS_NODES} values: refused, as an alias bomb would be")])
        else:
            self._built.add(id(node))
        if self.nodes % 2048 == 0:
            checkpoint(self.deadline)
        self.positions.marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, loc + ("<key>",))
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    self._issue(key_node, loc, "mapping keys must be plain scalars")
                    continue
                key_text = str(key) if not isinstance(key, str) else key
                if key_text in result:
                    self._issue(key_node, loc + (key_text,), "duplicate key")
                self.positions.marks[loc + (key_text,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key_text] = self.build(value_node, loc + (key_text,))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)

    def _issue(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.issues.append(
            ConfigIssue(self.file, node.start_mark.line + 1, node.start_mark.column + 1, format_loc(loc), message)
        )


# --- loading ------------------------------------------------------------------------------

# libyaml's parser when PyYAML has it: same nodes and marks, a fraction of the time and memory
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOP_LEVEL = ("defaults", "exporter", "sites")
# top-level sections owned by other modules (web access, allow-lists, sharding): kept raw
EXTRA_SECTIONS: dict[str, type[BaseModel]] = {"probe_allow": ProbeAllow}


# Bounds on what a config file may cost to load. A 600-byte YAML alias bomb or a 50 MB file
# once took gigabytes and most of a minute; a FIFO at the config path hung every reload.
# 10,000 paths (more than one exporter should probe, see Scaling out) take about 0.7 MB and
# 150,000 YAML nodes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 500_000  # values in the file
MAX_ALIAS_NODES = 20_000  # values built again because an alias names them: refuses alias bombs
MAX_ISSUES = 100  # errors reported at once; past that, the rest is summarised
# Characters of which a YAML node needs at least one (a separator, an indicator): more of
# them than MAX_YAML_NODES allows, and the text is refused before it is parsed.
_NODE_MARKS = ",\n:-[{"


def read_text(path: str | Path, what: str = "config") -> str:
    """The file's text, or a ConfigError naming the file and why it cannot be read."""
    try:
        return read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", f"cannot read {what}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", f"{what} is not UTF-8 text: {exc.reason}")]) from None


def load_config(path: str | Path, *, deadline: float | None = None) -> Config:
    """Read and validate a config file. ``deadline`` (time.monotonic()) bounds the work:
    past it the load stops with LoadInterrupted."""
    return parse_config(read_text(path), str(path), deadline=deadline)


def checkpoint(deadline: float | None) -> None:
    """Called every so often by a long load: stop past ``deadline``; and give the event loop
    the interpreter for a moment, so a reload in a worker thread slows no scrape much."""
    if deadline is not None:
        if time.monotonic() > deadline:
            raise LoadInterrupted("the config took too long to load (exporter.reload_timeout)")
        time.sleep(0.0005)  # releases the GIL: the loop's waiting callbacks run now


def _compose(text: str) -> yaml.Node | None:
    """libyaml's parser for speed; on any error, PyYAML's own, whose messages and positions
    (characters, not bytes) are the ones this module reports."""
    if _LOADER is not yaml.SafeLoader:
        try:
            return yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def compose_yaml(text: str, file: str, *, deadline: float | None = None) -> tuple[Any, _Builder]:
    """Plain data from YAML text (None when empty), with the builder that knows where each
    key stands; any YAML error is a ConfigError with its line and column, on one line.
    Bounded: a text with room for more than MAX_YAML_NODES values is refused before it is
    parsed, and building stops there too (aliases counted each time they are used)."""
    builder = _Builder(file, deadline=deadline)
    if sum(text.count(mark) for mark in _NODE_MARKS) > 2 * MAX_YAML_NODES:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"more than {MAX_YAML_NODES} YAML values: refused")])
    try:
        node = _compose(text)
    except RecursionError:
        raise ConfigError([ConfigIssue(file, 0, 0, "", "invalid YAML: nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = " ".join(str(exc.problem or exc).split())
        raise ConfigError([ConfigIssue(file, line, column, "", f"invalid YAML: {problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: point at it, on one line
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError([ConfigIssue(file, line, column, "", f"invalid YAML: character {exc.character!r} "
                                       "is not allowed")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"invalid YAML: {' '.join(str(exc).split())}")]) from None
    if node is None:
        return None, builder
    try:
        raw = builder.build(node, ())
        del node  # the node tree of a consortium's config is large: free it before validating
    except yaml.MarkedYAMLError as exc:  # a bad tagged value (!!binary, !!timestamp, ...)
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = " ".join(str(exc.problem or exc).split())
        raise ConfigError([ConfigIssue(file, line, column, "", f"invalid YAML value: {problem}")]) from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"invalid YAML value: {' '.join(str(exc).split())}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(file, 0, 0, "", "invalid YAML: nested too deeply")]) from None
    return raw, builder


def parse_config(text: str, file: str = "<string>", *, deadline: float | None = None) -> Config:
    raw, builder = compose_yaml(text, file, deadline=deadline)
    if raw is None:
        raise ConfigError([ConfigIssue(file, 1, 1, "", "config is empty: it needs at least one site under sites:")])
    return _Validator(file, builder, deadline=deadline).validate(raw)


class _TooManyIssues(Exception):
    pass


class _Validator:
    def __init__(self, file: str, builder: _Builder, *, deadline: float | None = None) -> None:
        self.file = file
        self.positions = builder.positions
        self.issues: list[ConfigIssue] = list(builder.issues)
        self.deadline = deadline

    def error(self, loc: Loc, message: str) -> None:
        line, column = self.positions.at(loc)
        self.issues.append(ConfigIssue(self.file, line, column, format_loc(loc), message))
        if len(self.issues) >= MAX_ISSUES:
            raise _TooManyIssues

    def validate(self, raw: Any) -> Config:
        try:
            return self._validate(raw)
        except _TooManyIssues:
            shown = sorted(self.issues, key=lambda i: (i.line, i.column))
            raise ConfigError(shown + [ConfigIssue(self.file, 0, 0, "", f"stopped after {MAX_ISSUES} errors; "
                                                                          "fix these and validate again")]) from None

    def model(self, model: type[BaseModel], data: Any, loc: Loc) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self.error(loc + tuple(err["loc"]), _message(err))
            return None

    def _validate(self, raw: Any) -> Config:
        if not isinstance(raw, dict):
            self.error((), "the config must be a mapping with a sites: list")
            raise ConfigError(self.issues)
        for key in raw:
            if key not in _TOP_LEVEL and key not in EXTRA_SECTIONS:
                self.error((key,), f"unknown key (expected one of: {', '.join(_TOP_LEVEL + tuple(EXTRA_SECTIONS))})")
        defaults = self.model(Defaults, raw.get("defaults") or {}, ("defaults",))
        exporter = self.model(ExporterSettings, raw.get("exporter") or {}, ("exporter",))
        extras = {
            name: self.model(model, raw.get(name) or {}, (name,)) for name, model in EXTRA_SECTIONS.items()
        }
        sites_raw = raw.get("sites")
        sites: list[Site] = []
        if not isinstance(sites_raw, list) or not sites_raw:
            self.error(("sites",), "sites: must be a non-empty list of sites")
        else:
            seen: dict[str, int] = {}
            for index, site_raw in enumerate(sites_raw):
                if index % 64 == 0:
                    checkpoint(self.deadline)
                site = self.site(site_raw, ("sites", index), defaults or Defaults())
                if site is None:
                    continue
                if site.name in seen:
                    self.error(("sites", index, "name"), f"duplicate site name (also sites[{seen[site.name]}])")
                seen.setdefault(site.name, index)
                sites.append(site)
        if self.issues:
            raise ConfigError(sorted(self.issues, key=lambda i: (i.line, i.column)))
        assert defaults is not None and exporter is not None
        return Config(defaults, exporter, tuple(sites), self.file, extras)

    def value(self, adapter: TypeAdapter[Any], data: Any, loc: Loc) -> Any:
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                self.error(loc + tuple(err["loc"]), _message(err))
            return _INVALID

    def site(self, raw: Any, loc: Loc, defaults: Defaults) -> Site | None:
        # Each part is validated on its own, so one bad value hides no other error.
        if not isinstance(raw, dict):
            self.error(loc, "a site must be a mapping with name: and hosts:")
            return None
        for key in raw:
            if key not in SiteModel.model_fields:
                self.error(loc + (key,), f"unknown key (expected one of: {', '.join(SiteModel.model_fields)})")
        name = self.value(_NAME, raw.get("name", _MISSING), loc + ("name",))
        hosts = self.value(_HOSTS, raw.get("hosts") or {}, loc + ("hosts",))
        overrides_raw = raw.get("paths") or {}
        overrides: dict[str, PathOverride] = {}
        ok = name is not _INVALID and hosts is not _INVALID
        if not isinstance(overrides_raw, dict):
            self.error(loc + ("paths",), "paths: must be a mapping of catalog path id to overrides")
            overrides_raw, ok = {}, False
        for path_id, override_raw in overrides_raw.items():
            if path_id not in BY_ID:
                self.error(loc + ("paths", path_id), f"unknown path id (catalog ids: {', '.join(BY_ID)})")
                ok = False
                continue
            override = self.model(PathOverride, override_raw if override_raw is not None else {},
                                  loc + ("paths", path_id))
            if override is None:
                ok = False
            else:
                overrides[path_id] = override
        customs_raw = raw.get("custom") or []
        if not isinstance(customs_raw, list):
            self.error(loc + ("custom",), "custom: must be a list of paths")
            customs_raw, ok = [], False
        customs = [self.model(CustomPath, c, loc + ("custom", i)) for i, c in enumerate(customs_raw)]
        model = SiteModel.model_construct(
            name=name if ok else "", hosts=hosts if hosts is not _INVALID else {}, paths=overrides,
            custom=[c for c in customs if c is not None],
        )
        paths: list[SitePath] = []
        for entry in BY_ID.values():
            merged = self.catalog_path(entry, model, overrides.get(entry.id), loc + ("paths", entry.id), defaults,
                                       followed=overrides.get(entry.follows))
            if merged is not None:
                paths.append(merged)
        names = set(BY_ID)
        for index, custom in enumerate(customs):
            cloc = loc + ("custom", index)
            if custom is None:
                raw_prober = customs_raw[index].get("prober") if isinstance(customs_raw[index], dict) else None
                if isinstance(raw_prober, str) and raw_prober not in PROBERS:
                    self.options(raw_prober, {}, cloc)  # report the unknown prober too
                continue
            if custom.name in names:
                self.error(cloc + ("name",), f"custom path name {custom.name!r} is already a path of this site")
                continue
            names.add(custom.name)
            merged = self.custom_path(custom, model, cloc, defaults)
            if merged is not None:
                paths.append(merged)
        if name is _INVALID:
            return None
        return Site(name, dict(model.hosts), tuple(paths))

    def targets(self, given: PathOverride | CustomPath, loc: Loc) -> bool:
        """Checks host/hosts and port/ports of an override or custom path; False on an error."""
        ok = True
        if given.host is not None and given.hosts is not None:
            self.error(loc + ("hosts",), "give host or hosts, not both")
            ok = False
        if given.port is not None and given.ports is not None:
            self.error(loc + ("ports",), "give port or ports, not both")
            ok = False
        for key, values in (("hosts", given.hosts), ("ports", given.ports)):
            seen: set[object] = set()
            for index, value in enumerate(values or ()):
                same = normalize_host(value) if isinstance(value, str) else value  # names compare without case
                if same in seen:
                    self.error(loc + (key, index), f"{value} is listed twice")
                    ok = False
                seen.add(same)
        return ok

    def catalog_path(
        self, entry: CatalogPath, site: SiteModel, override: PathOverride | None, loc: Loc, defaults: Defaults,
        *, followed: PathOverride | None = None,
    ) -> SitePath | None:
        o = override or PathOverride()
        ok = self.targets(o, loc)
        prober = o.prober or entry.prober
        base_options = dict(entry.options) if prober == entry.prober else {}
        options = self.options(prober, {**base_options, **(o.model_extra or {})}, loc)
        given_hosts = tuple(o.hosts) if o.hosts else ((o.host,) if o.host else ())
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
                    unresolved.append((source, str(target)))
                elif host not in hosts:
                    hosts.append(host)
            routes[source] = tuple(hosts)
        ports = tuple(o.ports) if o.ports else ((o.port,) if o.port else entry.ports)
        if options is None or not ok:
            return None
        # An outbound path split off an inbound one (odyssey_outbound from odyssey) follows
        # the inbound override's enabled and required unless it has its own.
        followed = followed or PathOverride()
        if o.enabled is not None:
            enabled = o.enabled
        elif followed.enabled is not None:
            enabled = followed.enabled
        else:  # configuring an optional path (its host, its port) turns it on
            enabled = entry.enabled_by_default or _configures(o) or _configures(followed)
        required = next((r for r in (o.required, followed.required) if r is not None), entry.required)
        if enabled and not given_hosts and any(isinstance(t, SiteTarget) for ts in entry.routes.values() for t in ts):
            self.error(loc, "enabled, but no host: this path goes to a host only the site knows; set host: or hosts:")
        return SitePath(
            id=entry.id,
            title=entry.title,
            routes=routes,
            ports=ports,
            prober=prober,
            options=options,
            expect=o.expect or entry.expect,
            timeout=o.timeout or defaults.timeout,
            required=required,
            enabled=enabled,
            unresolved=tuple(unresolved),
            require=o.require or entry.require,
            impact=o.impact or entry.impact,
        )

    def custom_path(self, custom: CustomPath, site: SiteModel, loc: Loc, defaults: Defaults) -> SitePath | None:
        ok = self.targets(custom, loc)
        named = [x for x in (custom.host, custom.hosts, custom.role) if x is not None]
        if not named or (len(named) > 1 and (custom.host is None or custom.hosts is None or custom.role)):
            self.error(loc, "a custom path needs exactly one of host, hosts or role")
            ok = False
        if custom.port is None and not custom.ports:
            self.error(loc, "a custom path needs port or ports")
            ok = False
        hosts = tuple(custom.hosts) if custom.hosts else ((custom.host,) if custom.host else ())
        if custom.role is not None:
            role_host = site.hosts.get(custom.role)
            if role_host is None:
                self.error(loc + ("role",), f"the site names no host for role {custom.role.value}")
                ok = False
            else:
                hosts = (role_host,)
        options = self.options(custom.prober, dict(custom.model_extra or {}), loc)
        if not ok or options is None or not hosts:
            return None
        return SitePath(
            id=custom.name,
            title=custom.name,
            routes={role: hosts for role in custom.from_},
            ports=tuple(custom.ports) if custom.ports else (custom.port or 0,),
            prober=custom.prober,
            options=options,
            expect=custom.expect,
            timeout=custom.timeout or defaults.timeout,
            required=custom.required,
            enabled=custom.enabled,
            custom=True,
            require=custom.require,
            impact=custom.impact or "",
        )

    def options(self, prober_name: str, data: dict[str, Any], loc: Loc) -> ProberOptions | None:
        prober = PROBERS.get(prober_name)
        if prober is None:
            self.error(loc + ("prober",), f"unknown prober {prober_name!r} (known: {', '.join(sorted(PROBERS))})")
            return None
        try:
            return prober.options.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                message = _message(err)
                if err["type"] == "extra_forbidden":
                    message = f"unknown key for prober {prober_name!r}"
                self.error(loc + tuple(err["loc"]), message)
            return None


def _target_host(target: object, hosts: Mapping[Role, str]) -> str | None:
    if isinstance(target, HostTarget):
        return target.host
    if isinstance(target, RoleTarget):
        return hosts.get(target.role)
    return None  # SiteTarget: only an override's host: names it


def _configures(o: PathOverride) -> bool:
    return bool(o.host or o.hosts or o.port or o.ports or o.model_extra)


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(err.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")
