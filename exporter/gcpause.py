"""The cyclic garbage collector paused while scrapes are probing.

A 10,000-path scrape keeps tens of thousands of futures, tasks and results alive until it
ends, and every full collection during it walks them all again: measured with bench/run.py,
collection took 6% of the CPU at 1,000 paths, 20% at 10,000 and 36% at 30,000, which is why
the cost per probe grew with the number of paths. Nearly all of a probe's objects are freed
by reference counting the moment they are done with (probers break the cycles an exception
makes: probers.base.release_frames), so nothing is lost by not looking for cycles for the
few seconds a scrape lasts. When the last scrape in flight ends, automatic collection comes
back and the first collection finds whatever cycles were made meanwhile.

Scrapes that overlap without a gap (an HA pair with a short interval) would keep the pause
forever, so a pause longer than ``max_pause`` seconds runs a full collection at the next
scrape's start or end and starts again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


class CollectionPause:
    """``with pause:`` around a scrape's probing; re-entrant across overlapping scrapes."""

    def __init__(self, *, max_pause: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_pause = max_pause
        self._clock = clock
        self._depth = 0
        self._paused = False  # we disabled it (an embedding program may have disabled it itself)
        self._since = 0.0
        self.forced = 0  # full collections run because a pause ran too long

    def __enter__(self) -> CollectionPause:
        if self._depth == 0 and gc.isenabled():
            gc.disable()
            self._paused = True
            self._since = self._clock()
        self._depth += 1
        self._bound()
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self._paused:
                self._paused = False
                gc.enable()
        else:
            self._bound()

    def _bound(self) -> None:
        if self._paused and self._clock() - self._since > self.max_pause:
            gc.collect()
            self.forced += 1
            self._since = self._clock()
