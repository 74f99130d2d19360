"""Config files, the exporter's and the web config alike: YAML text -> plain data whose every
value remembers where it stands -> errors that name file, line, column and key, all at once.

- :func:`read_text`: a regular file of at most MAX_CONFIG_BYTES, as UTF-8 text.
- :func:`compose_yaml`: the data and an :class:`Issues` collector that knows each key's
  position; bounded in values (aliases counted each time they expand) and, with a deadline,
  in time (:func:`checkpoint`).
- :class:`Issues`: every error at once, pydantic's included (each mapped back from its
  location to file:line:col), sorted by position; at most ``limit`` of them.
- :class:`StrictModel`: the base of every config section and prober options (unknown keys
  are errors; values are frozen).
"""

from __future__ import annotations

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
    """A load stopped by its deadline (exporter.reload_timeout)."""


class _Builder:
    """YAML nodes -> plain data, recording each key's position and the keys YAML allows
    but a config cannot have (duplicates, non-scalars)."""

    def __init__(self, issues: Issues, *, deadline: float | None = None) -> None:
        self.file = issues.file
        self.positions = issues.positions
        self.issues = issues.issues  # appended to without the limit: the validation counts them
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
        if self.nodes % 256 == 0:
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


class _EventBuilder:
    """YAML events -> plain data, without the node tree and without positions: the usual
    case, a file with no error in its YAML. The node tree of 10,000 paths took 35 MiB (a
    node and two marks for every value) and the process kept most of it as RSS after it was
    freed. Anything unusual stops it (_NodePathNeeded), and the node path reads the file."""

    def __init__(self, loader: Any, deadline: float | None) -> None:
        self.loader = loader
        self.deadline = deadline
        self.nodes = 0
        self.strings: dict[str, str] = {}  # one copy of each text: keys repeat in every path

    def document(self) -> Any:
        loader = self.loader
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        value = self.value()
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise _NodePathNeeded
        return value

    def value(self) -> Any:
        loader = self.loader
        event = loader.get_event()
        self.nodes += 1
        if self.nodes % 256 == 0:
            checkpoint(self.deadline)
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            raise _NodePathNeeded
        if isinstance(event, yaml.MappingStartEvent):
            result: dict[Any, Any] = {}
            while not loader.check_event(yaml.MappingEndEvent):
                key = self.value()
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise _NodePathNeeded
                key_text = str(key) if not isinstance(key, str) else key
                if key_text in result:
                    raise _NodePathNeeded
                result[key_text] = self.value()
            loader.get_event()
            return result
        if isinstance(event, yaml.SequenceStartEvent):
            items = []
            while not loader.check_event(yaml.SequenceEndEvent):
                items.append(self.value())
            loader.get_event()
            return items
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        value = loader.construct_object(node, deep=True)
        del loader.constructed_objects[node]  # its memo would keep every node to the end
        if type(value) is str:
            value = self.strings.setdefault(value, value)
        return value


def _build_from_events(text: str, deadline: float | None) -> Any:
    loader = _LOADER(text)
    try:
        return _EventBuilder(loader, deadline).document()
    finally:
        loader.dispose()


# --- bounded loading ----------------------------------------------------------------------

# libyaml's parser when PyYAML has it: same nodes and marks, a fraction of the time and memory
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)



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


def checkpoint(deadline: float | None) -> None:
    """Called every so often by a long load: stop past ``deadline``; and give the event loop
    the interpreter for a moment, so a reload in a worker thread slows no scrape much."""
    if deadline is not None:
        if time.monotonic() > deadline:
            raise LoadInterrupted("the config took too long to load (exporter.reload_timeout)")
        time.sleep(0.0002)  # releases the GIL: the loop's waiting callbacks run now


def _compose(text: str) -> yaml.Node | None:
    """libyaml's parser for speed; on any error, PyYAML's own, whose messages and positions
    (characters, not bytes) are the ones this module reports."""
    if _LOADER is not yaml.SafeLoader:
        try:
            return yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def compose_yaml(text: str, file: str, *, deadline: float | None = None,
                 limit: int | None = None) -> tuple[Any, Issues]:
    """Plain data from YAML text (None when empty), with the Issues collector that knows
    where each key stands (and holds the duplicate keys already found): built from libyaml's
    events when it can, else by the node path, which finds every position and error. Any YAML error is a
    ConfigError with its line and column, on one line. Bounded: a text with room for more
    than MAX_YAML_NODES values is refused before it is parsed, and building stops there too
    (aliases counted each time they are used)."""
    if sum(text.count(mark) for mark in _NODE_MARKS) > 2 * MAX_YAML_NODES:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"more than {MAX_YAML_NODES} YAML values: refused")])
    if _LOADER is not yaml.SafeLoader:
        try:
            raw = _build_from_events(text, deadline)
        except LoadInterrupted:
            raise
        except Exception:  # noqa: BLE001 - whatever it is, the node path reports it exactly
            pass
        else:  # positions only if an error needs them: the node path finds the same ones
            return raw, Issues(file, Positions(lambda: _node_path(text, file, deadline)[1].positions.marks),
                               limit=limit)
    return _node_path(text, file, deadline, limit)


def _node_path(text: str, file: str, deadline: float | None, limit: int | None = None) -> tuple[Any, Issues]:
    """compose_yaml by the node tree: every position, every error."""
    issues = Issues(file, limit=limit)
    builder = _Builder(issues, deadline=deadline)
    try:
        node = _compose(text)
    except RecursionError:
        raise ConfigError([ConfigIssue(file, 0, 0, "", "invalid YAML: nested too deeply")]) from None
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
    try:
        raw = builder.build(node, ())
        del node  # the node tree of a consortium's config is large: free it before validating
    except yaml.MarkedYAMLError as exc:  # a bad tagged value (!!binary, !!timestamp, ...)
        raise _marked(exc, file, "invalid YAML value") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError([ConfigIssue(file, 0, 0, "", f"invalid YAML value: {' '.join(str(exc).split())}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(file, 0, 0, "", "invalid YAML: nested too deeply")]) from None
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
