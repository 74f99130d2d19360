"""Config files, the exporter's and the web config alike: YAML text -> plain data whose every
value remembers where it stands -> errors that name file, line, column and key, all at once.

- :class:`LoadBounds`: what a load may cost (values, nesting, time, memory; the file's size
  follows from the values), each raised by a flag or an environment variable (BOUND_FLAGS);
  a :class:`LoadBudget` holds one load to them.
- :func:`read_text`: a regular file, no larger than the bounds allow, as UTF-8 text.
- :func:`compose_yaml`: the data and an :class:`Issues` collector that knows each key's
  position, within the load's budget.
- :class:`Issues`: every error at once, pydantic's included (each mapped back from its
  location to file:line:col), sorted by position; at most ``limit`` of them.
- :class:`StrictModel`: the base of every config section and prober options (unknown keys
  are errors; values are frozen).
"""

from __future__ import annotations

import errno
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from .files import read_bounded

Loc = tuple[str | int, ...]
Place = tuple[int, int]  # 1-based line and column; (0, 0) when unknown


def place_of(mark: Any) -> Place:
    """A YAML mark (0-based) as a place in the file; (0, 0) for none."""
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, and the validated value is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class Positions:
    """Where each key path sits in the file (1-based line and column).

    ``find``, when given, makes them on the first question: a file that loads without an
    error never needs them, and a table of every key path cost more than the loaded config
    (74,000 entries, about 17 MiB, for 10,000 paths)."""

    def __init__(self, find: Callable[[], dict[Loc, tuple[int, int]]] | None = None) -> None:
        self._find = find
        self._marks: dict[Loc, tuple[int, int]] | None = None if find else {}

    @property
    def marks(self) -> dict[Loc, tuple[int, int]]:
        if self._marks is None:
            assert self._find is not None
            self._marks, self._find = self._find(), None
        return self._marks

    def at(self, loc: Loc) -> tuple[int, int]:
        marks = self.marks
        for end in range(len(loc), -1, -1):
            mark = marks.get(tuple(loc[:end]))
            if mark is not None:
                return mark
        return (0, 0)


class LoadInterrupted(Exception):
    """A reload that could not start or finish: the previous one still loading, or a load
    that passed its time bound inside a step that cannot look at the clock."""


# --- bounds on a load ---------------------------------------------------------------------
# A 600-byte YAML alias bomb, a 50 MB file of junk or a FIFO at the config path once took
# gigabytes, most of a minute or every reload. A load is bounded by what it costs, in
# values, nesting, time and memory, with limits that a consortium's config stays well
# inside: 100,000 paths written as the README shows (bench/consortium.py) are 15.6 MB and
# 1.1 million values, and load and plan in 8.5 s of CPU, their peak 232 MiB above the
# process's (bench part (f)). An operator raises a bound with a flag or an environment
# variable; a refused file names the bound, where it was crossed, and both.

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)(ms|s|m|h))+\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNIT_BYTES = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


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


def parse_size(text: str) -> int:
    """A number of bytes, bare or in B, KiB, MiB or GiB ('512MiB', '2GiB')."""
    match = _SIZE.match(text)
    if not match or int(match[1]) <= 0:
        raise ValueError(f"expected a size such as 512MiB or 2GiB, got {text!r}")
    return int(match[1]) * _UNIT_BYTES[match[2]]


def parse_count(text: str, *, ceiling: int | None = None) -> int:
    """A positive whole number ('4000000' or '4_000_000'), at most ``ceiling``."""
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if count <= 0 or ceiling is not None and count > ceiling:
        raise ValueError(f"expected a number from 1 to {ceiling}, got {count}" if ceiling is not None
                         else f"expected a number greater than zero, got {count}")
    return count


def show_seconds(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def show_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size % _UNIT_BYTES[unit] == 0:
            return f"{size // _UNIT_BYTES[unit]}{unit}"
    return f"{size}B"


@dataclass(frozen=True, slots=True)
class Bound:
    """One bound on what a load may cost, and what raises it: a flag (and the environment
    variable its default comes from), or a key of the running config."""

    setting: str
    env: str = ""

    @property
    def how_to_raise(self) -> str:
        return f"raise the bound with {self.setting} or ${self.env}" if self.env else \
            f"raise the bound with {self.setting} in the config"


VALUES = Bound("--config.max-values", "ILLIAD_EXPORTER_CONFIG_MAX_VALUES")
DEPTH = Bound("--config.max-depth", "ILLIAD_EXPORTER_CONFIG_MAX_DEPTH")
LOAD_TIMEOUT = Bound("--config.load-timeout", "ILLIAD_EXPORTER_CONFIG_LOAD_TIMEOUT")
LOAD_MEMORY = Bound("--config.max-load-memory", "ILLIAD_EXPORTER_CONFIG_MAX_LOAD_MEMORY")
RELOAD_TIMEOUT = Bound("exporter.reload_timeout")  # a reload's time, when the running config sets it

# The file's size is no bound of its own, only a last guard against junk that holds no
# values (comments, blank lines): its text costs memory before a value is counted.
BYTES_PER_VALUE = 16
# Deeper, Python's recursion limit would stop the parser first (a config is 6 deep).
MAX_DEPTH_CEILING = 200


@dataclass(frozen=True, slots=True)
class LoadBounds:
    max_values: int = 3_000_000  # YAML values, aliases counted each time they expand
    max_depth: int = 64  # collections inside collections
    timeout: float = 60.0  # seconds, from opening the file to the validated config
    max_memory: int = 1024 ** 3  # growth of the process's resident memory while loading (Linux)
    timeout_bound: Bound = LOAD_TIMEOUT  # RELOAD_TIMEOUT when exporter.reload_timeout sets ``timeout``

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"the nesting bound must be between 1 and {MAX_DEPTH_CEILING}, got {self.max_depth}")

    @property
    def max_bytes(self) -> int:
        return self.max_values * BYTES_PER_VALUE


@dataclass(frozen=True, slots=True)
class BoundFlag:
    """The flag of a bound, for every command that loads a config (cli.py makes them)."""

    bound: Bound
    field: str  # of LoadBounds
    parse: Callable[[str], Any]  # the flag's text -> the field's value; ValueError when wrong
    show: Callable[[Any], str]  # the field's value as the flag takes it
    metavar: str
    help: str


BOUND_FLAGS = (
    BoundFlag(VALUES, "max_values", parse_count, str, "N",
              "YAML values a config may hold, aliases counted each time they expand; the file may be "
              f"{BYTES_PER_VALUE} bytes a value"),
    BoundFlag(DEPTH, "max_depth", lambda text: parse_count(text, ceiling=MAX_DEPTH_CEILING), str, "N",
              f"how deep a config's YAML may nest (at most {MAX_DEPTH_CEILING})"),
    BoundFlag(LOAD_TIMEOUT, "timeout", parse_duration, show_seconds, "DURATION",
              "how long a load may take (a reload: exporter.reload_timeout instead, when the config sets it)"),
    BoundFlag(LOAD_MEMORY, "max_memory", parse_size, show_size, "SIZE",
              "how much a load may grow the process's resident memory (Linux; 512MiB, 2GiB)"),
)


class BoundCrossed(ConfigError):
    """A load refused or stopped by one of its bounds; the message names it and what raises it."""

    def __init__(self, bound: Bound, issue: ConfigIssue) -> None:
        self.bound = bound
        super().__init__([issue])


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident memory, read from /proc (5 us); None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


class LoadBudget:
    """One load's bounds and what it has spent: time, and resident memory since it began.

    ``check`` is called every so often by every step of a load (every 256 values, every 64
    sites); ``pause``: and it gives the event loop the interpreter for a moment, so a reload
    on a thread of the serving process slows no scrape much. ``timed=False``: values and
    nesting only (a second pass over a text that already loaded, for error positions)."""

    def __init__(self, bounds: LoadBounds, file: str, *, timed: bool = True, pause: bool = False) -> None:
        self.bounds = bounds
        self.file = file
        self.pause = pause
        self.deadline = time.monotonic() + bounds.timeout if timed else None
        self.memory_at_start = resident_bytes() if timed else None

    def check(self, place: Place = (0, 0), key: str = "") -> None:
        if self.deadline is None:
            return
        bounds = self.bounds
        if time.monotonic() > self.deadline:
            raise self.crossed(bounds.timeout_bound, f"the load took more than {show_seconds(bounds.timeout)}: "
                                                     "stopped", place, key)
        if self.memory_at_start is not None:
            now = resident_bytes()
            if now is not None and now - self.memory_at_start > bounds.max_memory:
                raise self.crossed(LOAD_MEMORY, "the load grew the process's resident memory by more than "
                                                f"{show_size(bounds.max_memory)}: stopped", place, key)
        if self.pause:
            time.sleep(0.0002)  # releases the GIL: the loop's waiting callbacks run now

    def crossed(self, bound: Bound, what: str, place: Place = (0, 0), key: str = "") -> BoundCrossed:
        return BoundCrossed(bound, ConfigIssue(self.file, *place, key, f"{what}; {bound.how_to_raise}"))

    def too_many_values(self, place: Place, key: str = "") -> BoundCrossed:
        return self.crossed(VALUES, f"more than {self.bounds.max_values} YAML values (aliases counted each time "
                                    "they expand): refused", place, key)

    def too_deep(self, place: Place, key: str = "") -> BoundCrossed:
        return self.crossed(DEPTH, f"YAML nested more than {self.bounds.max_depth} deep: refused", place, key)


def read_text(path: str | Path, what: str = "config", *, bounds: LoadBounds | None = None) -> str:
    """The file's text, or a ConfigError naming the file and why it cannot be read: not a
    regular file, or larger than the bounds allow (refused unread)."""
    limit = (bounds or LoadBounds()).max_bytes
    try:
        return read_bounded(path, limit).decode("utf-8")
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise BoundCrossed(VALUES, ConfigIssue(
                str(path), 0, 0, "", f"{what} larger than {limit} bytes ({BYTES_PER_VALUE} for each YAML value "
                                     f"{VALUES.setting} allows): refused unread; {VALUES.how_to_raise}")) from None
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", f"cannot read {what}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", f"{what} is not UTF-8 text: {exc.reason}")]) from None


# --- YAML to data ---------------------------------------------------------------------------


class _Builder:
    """YAML nodes -> plain data, recording each key's position and the keys YAML allows
    but a config cannot have (duplicates, non-scalars). The node tree was checked against
    the values and nesting bounds before (:func:`_check_expanded`)."""

    def __init__(self, issues: Issues, budget: LoadBudget) -> None:
        self.file = issues.file
        self.positions = issues.positions
        self.issues = issues.issues  # appended to without the limit: the validation counts them
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used
        self.nodes = 0
        self.budget = budget

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.nodes += 1
        if self.nodes % 256 == 0:
            self.budget.check(place_of(node.start_mark))
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
        value = self._scalars.construct_object(node, deep=True)
        del self._scalars.constructed_objects[node]  # its memo would keep every node until a collection
        return value

    def _issue(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.issues.append(
            ConfigIssue(self.file, node.start_mark.line + 1, node.start_mark.column + 1, format_loc(loc), message)
        )


class _NodePathNeeded(Exception):
    """Something only the node path (:class:`_Builder`) handles exactly: an anchor or alias,
    a duplicate or non-scalar key, a second document, any YAML error."""


_NONE = object()


class _EventBuilder:
    """YAML events -> plain data, without the node tree and without positions: the usual
    case, a file with no error in its YAML. The node tree of 10,000 paths took 35 MiB (a
    node and two marks for every value) and the process kept most of it as RSS after it was
    freed. Anything unusual stops it (_NodePathNeeded), and the node path reads the file;
    a bound crossed stops the load here."""

    def __init__(self, loader: Any, budget: LoadBudget) -> None:
        self.loader = loader
        self.budget = budget
        self.max_values = budget.bounds.max_values
        self.max_depth = budget.bounds.max_depth
        self.values = 0
        # each plain or quoted scalar's value by its text: keys and values repeat in every
        # path; one copy of each, made once (resolving and constructing were a third of a load)
        self.scalars: dict[tuple[str, bool], Any] = {}

    def document(self) -> Any:
        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        value = self.value(1)
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise _NodePathNeeded
        return value

    def value(self, depth: int) -> Any:
        """The next value; ``depth``: the collections it is inside, itself included."""
        loader = self.loader
        event = loader.get_event()
        self.values += 1
        if self.values % 256 == 0:
            self.budget.check(place_of(event.start_mark))
        if self.values > self.max_values:
            raise self.budget.too_many_values(place_of(event.start_mark))
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _NodePathNeeded
        if isinstance(event, yaml.MappingStartEvent):
            if depth > self.max_depth:
                raise self.budget.too_deep(place_of(event.start_mark))
            result: dict[Any, Any] = {}
            while not loader.check_event(yaml.MappingEndEvent):
                key = self.value(depth + 1)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise _NodePathNeeded
                key_text = str(key) if not isinstance(key, str) else key
                if key_text in result:
                    raise _NodePathNeeded
                result[key_text] = self.value(depth + 1)
            loader.get_event()
            return result
        if isinstance(event, yaml.SequenceStartEvent):
            if depth > self.max_depth:
                raise self.budget.too_deep(place_of(event.start_mark))
            items = []
            while not loader.check_event(yaml.SequenceEndEvent):
                items.append(self.value(depth + 1))
            loader.get_event()
            return items
        tag = event.tag
        if tag is None or tag == "!":  # resolved by its text: the same text, the same value
            key = (event.value, event.implicit[0])
            value = self.scalars.get(key, _NONE)
            if value is _NONE:
                tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                value = self.scalars[key] = self._construct(tag, event)
            return value
        return self._construct(tag, event)

    def _construct(self, tag: str, event: Any) -> Any:
        loader = self.loader
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        value = loader.construct_object(node, deep=True)
        del loader.constructed_objects[node]  # its memo would keep every node to the end
        return value


def _build_from_events(text: str, budget: LoadBudget) -> Any:
    loader = _LOADER(text)
    try:
        return _EventBuilder(loader, budget).document()
    finally:
        loader.dispose()


def _scan(text: str, budget: LoadBudget) -> set[Place]:
    """The values and the nesting of the text as written, before the node path makes its
    node tree (a value in it costs about 350 bytes): a huge or deep text is refused first.
    Returns the places where the anchored collections start. A YAML error ends the
    scan; the composer reports it."""
    loader = _LOADER(text)
    values = depth = 0
    anchored: set[Place] = set()
    try:
        while not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
                values += 1
                place = place_of(event.start_mark)
                if values % 256 == 0:
                    budget.check(place)
                if values > budget.bounds.max_values:
                    raise budget.too_many_values(place)
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > budget.bounds.max_depth:
                        raise budget.too_deep(place)
                    if event.anchor is not None:
                        anchored.add(place)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        # libyaml's scanner stops at 1,000 levels before it hands over one event of them
        if "maximum nesting depth" in str(exc.problem) and exc.problem_mark is not None:
            raise budget.too_deep(place_of(exc.problem_mark)) from None
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return anchored


def _children(node: yaml.Node, loc: Loc) -> list[tuple[Loc, yaml.Node]]:
    """A node's children in document order, each with its key path (a mapping's keys too)."""
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[Loc, yaml.Node]] = []
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "<key>"
            pairs += [(loc + ("<key>",), key_node), (loc + (key,), value_node)]
        return pairs
    if isinstance(node, yaml.SequenceNode):
        return [(loc + (i,), item) for i, item in enumerate(node.value)]
    return []


class _Expansion:
    """The values and the depth of a node once its aliases are expanded. An alias is the
    node it names again, so the anchored collections' figures are remembered and each node
    is visited once: a 330-byte bomb of 10**9 values costs microseconds. A collection that
    holds an alias to itself never ends: both figures are infinite."""

    def __init__(self, anchored: set[Place], budget: LoadBudget) -> None:
        self.anchored = anchored  # the places where the anchored collections start
        self.budget = budget
        self.known: dict[int, tuple[float, float]] = {}  # id(anchored node) -> (values, depth)
        self.visits = 0

    def of(self, root: yaml.Node) -> tuple[float, float]:
        known, anchored = self.known, self.anchored
        path = {id(root)}  # the collections being counted, from root down: a cycle comes back to one
        stack: list[list[Any]] = [[root, iter(_children(root, ())), 1.0, 0.0]]
        while True:
            frame = stack[-1]
            item = next(frame[1], None)
            if item is None:  # done: the figures of frame's node
                node, _, values, depth = stack.pop()
                path.discard(id(node))
                figures: tuple[float, float] = (
                    values, depth + 1 if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) else 0.0)
                if place_of(node.start_mark) in anchored:
                    known[id(node)] = figures
                if not stack:
                    return figures
                frame = stack[-1]
                frame[2] += figures[0]
                frame[3] = max(frame[3], figures[1])
                continue
            child = item[1]
            self.visits += 1
            if self.visits % 4096 == 0:
                self.budget.check(place_of(child.start_mark))
            found = known.get(id(child)) or ((math.inf, math.inf) if id(child) in path else None)
            if found is not None:
                frame[2] += found[0]
                frame[3] = max(frame[3], found[1])
            elif isinstance(child, yaml.ScalarNode):
                frame[2] += 1
            else:
                path.add(id(child))
                stack.append([child, iter(_children(child, ())), 1.0, 0.0])


def _short_loc(loc: Loc) -> str:
    """A key path of at most 12 parts, for a value inside aliases inside aliases."""
    return format_loc(loc[:12]) + ("..." if len(loc) > 12 else "")


def _check_expanded(root: yaml.Node, anchored: set[Place], budget: LoadBudget) -> None:
    """Refuses a node tree whose aliases expand past the nesting or the values bound, before
    anything is built, and names the value where it crosses (a value inside an alias is
    placed where its anchor stands, and by its key path). Nesting first: an alias inside
    the value it names is infinitely deep."""
    bounds = budget.bounds
    expansion = _Expansion(anchored, budget)
    values, depth = expansion.of(root)
    loc: Loc
    node, loc = root, ()
    if depth > bounds.max_depth:
        for level in range(1, bounds.max_depth + 1):  # the first collection deeper than the bound
            node, loc = next((child, child_loc) for child_loc, child in _children(node, loc)
                             if level + expansion.of(child)[1] > bounds.max_depth)
        raise budget.too_deep(place_of(node.start_mark), _short_loc(loc))
    if values > bounds.max_values:
        allowed = bounds.max_values
        while True:  # in document order: skip the children that fit, enter the one that crosses
            allowed -= 1
            if allowed < 0:
                break
            for child_loc, child in _children(node, loc):
                child_values = expansion.of(child)[0]
                if child_values <= allowed:
                    allowed -= int(child_values)
                else:
                    node, loc = child, child_loc
                    break
        raise budget.too_many_values(place_of(node.start_mark), _short_loc(loc))


# libyaml's parser when PyYAML has it: same nodes and marks, a fraction of the time and memory
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_ISSUES = 100  # errors reported at once; past that, the rest is summarised


def _compose(text: str) -> yaml.Node | None:
    """libyaml's parser for speed; on any error, PyYAML's own, whose messages and positions
    (characters, not bytes) are the ones this module reports."""
    if _LOADER is not yaml.SafeLoader:
        try:
            return yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def compose_yaml(text: str, file: str, *, budget: LoadBudget | None = None,
                 limit: int | None = None) -> tuple[Any, Issues]:
    """Plain data from YAML text (None when empty), with the Issues collector that knows
    where each key stands (and holds the duplicate keys already found): built from libyaml's
    events when it can, else by the node path, which finds every position and error. Any YAML error is a
    ConfigError with its line and column, on one line. Bounded by ``budget`` (default: the
    default bounds, from now): a bound crossed is a BoundCrossed."""
    budget = budget or LoadBudget(LoadBounds(), file)
    if _LOADER is not yaml.SafeLoader:
        try:
            raw = _build_from_events(text, budget)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - whatever it is, the node path reports it exactly
            pass
        else:  # positions only if an error needs them: the node path finds the same ones
            untimed = LoadBudget(budget.bounds, file, timed=False)
            return raw, Issues(file, Positions(lambda: _node_path(text, file, untimed)[1].positions.marks),
                               limit=limit)
    return _node_path(text, file, budget, limit)


def _node_path(text: str, file: str, budget: LoadBudget, limit: int | None = None) -> tuple[Any, Issues]:
    """compose_yaml by the node tree: every position, every error."""
    issues = Issues(file, limit=limit)
    builder = _Builder(issues, budget)
    anchored = _scan(text, budget)
    try:
        node = _compose(text)
    except RecursionError:  # PyYAML's own parser, past a few hundred levels
        raise budget.too_deep((0, 0)) from None
    except yaml.MarkedYAMLError as exc:
        raise _marked(exc, file, "invalid YAML") from None
    except yaml.reader.ReaderError as exc:  # a control character: point at it, on one line
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError([ConfigIssue(file, line, column, "", f"invalid YAML: character {exc.character!r} "
                                       "is not allowed")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"invalid YAML: {' '.join(str(exc).split())}")]) from None
    if node is None:
        return None, issues
    if anchored:  # else the scan saw every value and level there is
        _check_expanded(node, anchored, budget)
    try:
        raw = builder.build(node, ())
        del node  # the node tree of a consortium's config is large: free it before validating
    except yaml.MarkedYAMLError as exc:  # a bad tagged value (!!binary, !!timestamp, ...)
        raise _marked(exc, file, "invalid YAML value") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"invalid YAML value: {' '.join(str(exc).split())}")]) from None
    return raw, issues


def _marked(exc: yaml.MarkedYAMLError, file: str, what: str) -> ConfigError:
    """A YAML error that knows where it happened, as one issue on one line."""
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    problem = " ".join(str(exc.problem or exc).split())
    return ConfigError([ConfigIssue(file, line, column, "", f"{what}: {problem}")])


# --- collecting errors --------------------------------------------------------------------


class _TooManyIssues(Exception):
    pass


class Issues:
    """The errors of one file, each placed by its key path; ``limit``: stop after so many."""

    def __init__(self, file: str, positions: Positions | None = None, *, limit: int | None = None) -> None:
        self.file = file
        self.positions = positions or Positions()
        self.issues: list[ConfigIssue] = []
        self.limit = limit

    def add(self, loc: Loc, message: str) -> None:
        line, column = self.positions.at(loc)
        self.issues.append(ConfigIssue(self.file, line, column, format_loc(loc), message))
        if self.limit is not None and len(self.issues) >= self.limit:
            raise _TooManyIssues

    def validate(self, schema: type[BaseModel] | TypeAdapter[Any], data: Any, loc: Loc = (), *,
                 unknown_key: str = "unknown key") -> Any | None:
        """``data`` validated by a model or type adapter; None after recording every error
        pydantic found, each at ``loc`` + its own location."""
        try:
            if isinstance(schema, TypeAdapter):
                return schema.validate_python(data)
            return schema.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                message = unknown_key if err["type"] == "extra_forbidden" else pydantic_message(err)
                self.add(loc + tuple(err["loc"]), message)
            return None

    def sorted(self) -> list[ConfigIssue]:
        return sorted(self.issues, key=lambda i: (i.line, i.column))

    def raise_if_any(self) -> None:
        if self.issues:
            raise ConfigError(self.sorted())

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """Past ``limit`` errors, the ones found so far and a line saying the rest is unread."""
        try:
            yield
        except _TooManyIssues:
            raise ConfigError(self.sorted() + [ConfigIssue(self.file, 0, 0, "", f"stopped after {self.limit} "
                                                           "errors; fix these and validate again")]) from None


def pydantic_message(err: Mapping[str, Any]) -> str:
    """pydantic's message for one error, in this project's words for the common two."""
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(err.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")
