"""The path verdict: whether a path as a whole meets its expectation. Computed here only.

``check``, ``/metrics`` (``illiad_path_expectation_met``), ``/probe`` and the status page all
judge a path by :func:`path_verdicts`, so they cannot disagree about it.

A path has one target per host and port. Each target meets the path's expectation when:

- ``expect: open``: it connected *and* passed its protocol or TLS check (``up``); a listener
  that answers something else is not the service.
- ``expect: closed``: it accepted no connection.

The path meets its expectation when every target does (``require: all``, the default) or at
least one does (``require: any``: "1433 or 1344", "any partner library answers").

Unknown (``met is None``): a target whose probe failed for a reason that is the exporter's
own fault (``EXPORTER_SIDE_REASONS``: a prober bug, no free probe slot) says nothing about
the library's network, and neither does a target not probed yet. The path is unknown when
its verdict depends on such a target: under ``require: all`` one failing target decides
(False) whatever the unknown ones say; under ``require: any`` one target meeting it decides
(True). An unknown verdict is no ``illiad_path_expectation_met`` sample at all (the series
is absent, so no alert about the library fires; the exporter's health alerts cover the
exporter), and ``check`` prints it as "unknown (exporter: ...)" and counts it as not met.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import NamedTuple

from .catalog import Expect, Require
from .probers.base import EXPORTER_SIDE_REASONS, ProbeResult, ProbeTarget, Reason
from .scrape import Outcome

MAX_LISTED = 3  # targets named in a summary; the rest are counted


def target_met(target: ProbeTarget, result: ProbeResult | None) -> bool | None:
    """Whether one target meets its path's expectation; None when unknown (not probed, or
    failed for the exporter's own fault)."""
    if result is None:
        return None
    if target.expect is Expect.CLOSED:
        if result.observed is Expect.OPEN:
            return False  # it accepted a connection: open, whatever went wrong afterwards
    elif result.up:
        return True
    if result.reason in EXPORTER_SIDE_REASONS:
        return None
    return target.expect is Expect.CLOSED


def combine(values: Iterable[bool | None], require: Require) -> bool | None:
    """Three-valued all/any: a decisive value wins over unknowns."""
    values = values if isinstance(values, list) else list(values)
    decisive = require is not Require.ALL  # all: one False decides; any: one True does
    if decisive in values:
        return decisive
    if None in values or not values:
        return None
    return not decisive


class TargetCheck(NamedTuple):  # a tuple: one per probe of a 10,000-path scrape, made cheaply
    """One target of a path, its latest result (None: not probed yet) and whether it meets."""

    target: ProbeTarget
    result: ProbeResult | None
    met: bool | None

    @property
    def port(self) -> int:
        """The port actually probed (a SQL Browser lookup may change it)."""
        return (self.result.port if self.result is not None else None) or self.target.port

    @property
    def endpoint(self) -> str:
        host = self.target.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def observed(self) -> str:
        """open, closed, or "open (check failed)" for a listener that is not the service."""
        if self.result is None:
            return "not probed"
        if self.result.up or self.result.observed is Expect.CLOSED:
            return self.result.observed.value
        return "open (check failed)"

    @property
    def why(self) -> str:
        """The failure reason and detail, empty when the probe succeeded."""
        if self.result is None or self.result.up or self.result.reason is None:
            return ""
        return self.result.reason.value + (f": {self.result.detail}" if self.result.detail else "")

    @property
    def exporter_side(self) -> bool:
        return self.result is not None and self.result.reason in EXPORTER_SIDE_REASONS


class PathVerdict(NamedTuple):  # a tuple, like TargetCheck: thousands per scrape, made cheaply
    site: str
    vantage: str
    path: str
    expect: Expect
    require: Require
    required: bool
    met: bool | None
    checks: tuple[TargetCheck, ...]

    @property
    def state(self) -> str:
        """met, failed or unknown."""
        return "unknown" if self.met is None else ("met" if self.met else "failed")

    @property
    def summary(self) -> str:
        """One short line for a person: what the path as a whole does, and why."""
        return summarize(self)

    @property
    def headline(self) -> str:
        """The summary without the targets' details (shown beside them)."""
        return summarize(self, detailed=False)


def path_verdicts(
    checked: Iterable[tuple[ProbeTarget, ProbeResult | None]], required: Container[tuple[str, str]] = frozenset(),
) -> list[PathVerdict]:
    """One verdict per (site, vantage, path), in the order the paths first appear."""
    groups: dict[tuple[str, str, str], list[TargetCheck]] = {}
    for target, result in checked:
        key = (target.site, target.vantage, target.path)
        check = TargetCheck(target, result, target_met(target, result))
        group = groups.get(key)
        if group is None:
            groups[key] = [check]
        else:
            group.append(check)
    verdicts = []
    for (site, vantage, path), checks in groups.items():
        first = checks[0].target
        verdicts.append(PathVerdict(
            site, vantage, path, first.expect, first.require, (site, path) in required,
            combine([c.met for c in checks], first.require), tuple(checks),
        ))
    return verdicts


def verdicts_of(outcomes: Sequence[Outcome], required: Container[tuple[str, str]] = frozenset()) -> list[PathVerdict]:
    """The verdicts of one scrape's outcomes."""
    return path_verdicts(((o.target, o.result) for o in outcomes), required)


def _listed(checks: Sequence[TargetCheck], text: str) -> str:
    shown = [f"{c.endpoint} {text.format(why=c.why)}".strip() for c in checks[:MAX_LISTED]]
    more = len(checks) - MAX_LISTED
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def summarize(verdict: PathVerdict, *, detailed: bool = True) -> str:
    """One line; ``detailed`` names the targets that decided it (for a line that stands
    alone, not above the targets' own rows)."""
    checks = verdict.checks
    n = len(checks)

    def listing(head: str, which: Sequence[TargetCheck], text: str) -> str:
        return f"{head}: {_listed(which, text)}" if detailed else head

    if verdict.met is None:
        exporter = [c for c in checks if c.met is None and c.exporter_side]
        if exporter:
            if not detailed:  # what went wrong, without the targets: "no free probe slot ...", "error: KeyError"
                notes = dict.fromkeys(c.result.detail if c.result and c.result.reason is Reason.EXPORTER
                                      and c.result.detail else c.why for c in exporter)
                return f"unknown (exporter: {'; '.join(notes)})"
            return "unknown (exporter: " + _listed(exporter, "{why}") + ")"
        return "not probed yet"
    if verdict.expect is Expect.CLOSED:
        if verdict.met:
            closed = sum(1 for c in checks if c.met)
            return "closed" if n == 1 else (f"all {n} closed" if closed == n else f"{closed} of {n} closed")
        open_ = [c for c in checks if c.met is False]
        head = "accepts connections" if n == 1 or len(open_) == n else f"{len(open_)} of {n} accept connections"
        return listing(head, open_, "")
    failing = [c for c in checks if c.met is False]
    if verdict.met:
        if not failing:
            return "answers" if n == 1 else f"all {n} answer"
        return listing(f"{n - len(failing)} of {n} answer; down", failing, "({why})")
    if n == 1:
        return f"down: {checks[0].why}" if detailed else "down"
    if verdict.require is Require.ANY:
        return listing(f"none of {n} answers", failing, "({why})")
    return listing(f"{len(failing)} of {n} down", failing, "({why})")
