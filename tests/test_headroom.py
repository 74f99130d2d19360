"""The serving process probes a site itself only while its CPU over the latest window is
below the limit (exporter/headroom.py), read from clocks the tests move by hand."""

from __future__ import annotations

import pytest

from illiad_exporter.headroom import CpuHeadroom


class Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def run(self, seconds: float, busy: float) -> None:
        """``seconds`` pass, ``busy`` of one core used meanwhile."""
        self.wall += seconds
        self.cpu += seconds * busy


def _headroom(clocks: Clocks, limit: float = 0.75) -> CpuHeadroom:
    return CpuHeadroom(limit, window=0.5, clock=lambda: clocks.wall, cpu=lambda: clocks.cpu)


def test_a_process_below_the_limit_has_room_and_one_above_it_has_none() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks)
    clocks.run(1.0, busy=0.5)
    assert headroom.spare() is True
    assert headroom.busy == pytest.approx(0.5)
    clocks.run(0.5, busy=0.9)
    assert headroom.spare() is False
    assert headroom.busy == pytest.approx(0.9)


def test_the_reading_holds_for_a_window_then_is_taken_again() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks)
    clocks.run(0.5, busy=1.0)
    assert headroom.spare() is False
    clocks.run(0.3, busy=0.0)  # idle, but the window is not over: the busy reading stands
    assert headroom.spare() is False
    clocks.run(0.2, busy=0.0)
    assert headroom.spare() is True
    assert headroom.busy == 0.0


def test_a_long_idle_gap_reads_as_idle_whatever_came_before_it() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks)
    clocks.run(0.5, busy=1.0)
    assert headroom.spare() is False
    clocks.run(60.0, busy=0.01)
    assert headroom.spare() is True


def test_the_first_reading_covers_the_start_however_short() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks)
    assert headroom.busy is None
    clocks.run(0.1, busy=1.0)  # loading the config, starting the workers
    assert headroom.spare() is False
    assert headroom.busy == pytest.approx(1.0)


def test_a_reading_without_time_passed_claims_no_room() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks)
    assert headroom.spare() is False  # nothing measured yet: the workers take it
    assert headroom.busy is None


def test_limit_zero_sends_every_site_to_the_workers() -> None:
    clocks = Clocks()
    headroom = _headroom(clocks, limit=0.0)
    clocks.run(10.0, busy=0.0)
    assert headroom.spare() is False
