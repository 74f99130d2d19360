"""The quick set: the tests that run inside pytest's own process, with no peer program,
network namespace, container or Prometheus, and not the exporter as a process either.
``scripts/test.sh --quick`` runs them (``pytest -m quick``).

Tests are sorted when collected, from what they declare: a peer's fixture (:data:`PEER_FIXTURES`,
also through the fixtures they use) or a ``peer``, ``netns``, ``slow`` or ``process`` mark keeps
a test out; every other test is marked ``quick``. A quick test that starts a program anyway
(Python included) fails, in every run (:class:`ProgramGuard`), so a new test cannot land in
the quick loop by forgetting its mark.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The fixtures that start a peer program, a namespace lab or a container engine, each with
# the peer it marks (``peer(name)``) on every test that uses it.
PEER_FIXTURES = {
    "nginx": "nginx",
    "library_nginx": "nginx",
    "slapd": "slapd",
    "tdspool": "tdspool",
    "yaz_ztest": "yaz-ztest",
    "xrdp": "xrdp",
    "lab_site": "netns lab",
    "built_image": "docker",
    "raw_prometheus": "prometheus",  # test_availability.py's, with its history written by promtool
}
KEPT_OUT_BY = ("peer", "netns", "slow", "process")
# The audit events of starting a program: subprocess (asyncio's too), os.system, os.exec*,
# os.posix_spawn*, os.spawn*.
PROGRAM_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"})


def mark_sets(items: Iterable[pytest.Item]) -> None:
    """Mark ``peer(name)`` on tests that use a peer's fixture, then ``quick`` on the tests with
    none of the marks that keep a test out of the quick set."""
    for item in items:
        for fixture in item.fixturenames:  # the whole closure: fixtures of fixtures too
            if fixture in PEER_FIXTURES:
                item.add_marker(pytest.mark.peer(PEER_FIXTURES[fixture]))
        if not any(item.get_closest_marker(name) for name in KEPT_OUT_BY):
            item.add_marker(pytest.mark.quick)


class ProgramGuard:
    """Watches the quick tests' setup and call: a program started there (an audit hook sees
    every start, however it is made) fails the test. Teardown is not watched: a test's
    teardown also ends the fixtures of its module or session, which may be another test's peers."""

    def __init__(self) -> None:
        self.test: str | None = None  # the node id of the quick test running, else None
        self.started: list[str] = []

    def install(self) -> None:
        sys.addaudithook(self._audit)  # for the life of the process; idle outside quick tests

    def _audit(self, event: str, args: tuple[object, ...]) -> None:
        if self.test is not None and event in PROGRAM_EVENTS:
            self.started.append(_program(event, args))

    @contextmanager
    def watching(self, item: pytest.Item) -> Iterator[None]:
        """Around one phase (setup or call) of a test."""
        if item.get_closest_marker("quick") is None:
            yield
            return
        self.test, self.started = item.nodeid, []
        try:
            yield
        finally:
            self.test = None
        if self.started:
            pytest.fail(f"{item.nodeid} is in the quick set, but started {', '.join(dict.fromkeys(self.started))}: "
                        f"{_how_to_mark(self.started[0])}, so the quick loop (pytest -m quick) leaves it out",
                        pytrace=False)


def _program(event: str, args: tuple[object, ...]) -> str:
    if event == "os.system":  # (command,)
        return os.fsdecode(args[0]).split(maxsplit=1)[0] if args[0] else ""  # type: ignore[arg-type]
    if event == "os.spawn":  # (mode, path, args, env)
        return os.fsdecode(args[1])  # type: ignore[arg-type]
    return os.fsdecode(args[0])  # type: ignore[arg-type]  # the others: (executable or path, ...)


def _how_to_mark(program: str) -> str:
    if program in (sys.executable, os.path.realpath(sys.executable)):
        return "mark it @pytest.mark.process (it runs the exporter or another Python program as a process)"
    return f"mark it @pytest.mark.peer({Path(program).name!r}) or request the peer's fixture"
