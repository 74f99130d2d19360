"""The quick set (tests/quickset.py): a peer's fixture or a mark keeps a test out of it, and a
quick test that starts a program fails with the mark it needs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from .quickset import ProgramGuard, mark_sets


class StandIn:
    """As much of a collected test as the quick set reads: its fixtures, marks and node id."""

    def __init__(self, *fixtures: str, marks: tuple[Any, ...] = ()) -> None:
        self.nodeid = "tests/test_x.py::test_x"
        self.fixturenames = ["request", *fixtures]
        self.marks = [mark.mark for mark in marks]

    def add_marker(self, mark: Any) -> None:
        self.marks.append(mark.mark)

    def get_closest_marker(self, name: str) -> Any:
        return next((mark for mark in self.marks if mark.name == name), None)


def test_a_peer_fixture_or_a_mark_keeps_a_test_out_of_the_quick_set() -> None:
    in_process = StandIn("tmp_path", "server_cert", "silent_port")
    through_a_peer = StandIn("tmp_path", "slapd", "server_cert")  # as the closure lists a fixture's fixtures
    marked = [StandIn(marks=(mark,)) for mark in (pytest.mark.peer("promtool"), pytest.mark.netns,
                                                  pytest.mark.slow, pytest.mark.process)]
    mark_sets([in_process, through_a_peer, *marked])
    assert in_process.get_closest_marker("quick") is not None
    assert through_a_peer.get_closest_marker("peer").args == ("slapd",)
    assert through_a_peer.get_closest_marker("quick") is None
    assert [item.get_closest_marker("quick") for item in marked] == [None] * 4


@pytest.mark.process  # it starts Python and true for the guard to see
def test_a_quick_test_that_starts_a_program_fails_with_the_mark_it_needs() -> None:
    guard = ProgramGuard()
    guard.install()
    quick, other = StandIn(marks=(pytest.mark.quick,)), StandIn(marks=(pytest.mark.process,))
    with pytest.raises(pytest.fail.Exception, match=r"is in the quick set, but started /bin/true: "
                                                    r"mark it @pytest\.mark\.peer\('true'\)"):
        with guard.watching(quick):  # type: ignore[arg-type]
            subprocess.run(["/bin/true"], check=True, timeout=10)
    with pytest.raises(pytest.fail.Exception, match=r"mark it @pytest\.mark\.process"):
        with guard.watching(quick):  # type: ignore[arg-type]
            subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
    with guard.watching(other):  # type: ignore[arg-type]
        subprocess.run(["/bin/true"], check=True, timeout=10)
    with guard.watching(quick):  # type: ignore[arg-type]
        assert sum(range(10)) == 45  # no program: no complaint
    assert guard.test is None
