"""The cyclic garbage collector paused while scrapes are probing, and each new config frozen between them.

A 10,000-path scrape keeps tens of thousands of futures, tasks and results alive until it
ends, and every full collection during it walks them all again: measured with bench/run.py,
collection took 6% of the CPU at 1,000 paths, 20% at 10,000 and 36% at 30,000, which is why
the cost per probe grew with the number of paths. Nearly all of a probe's objects are freed
by reference counting the moment they are done with (probers break the cycles an exception
makes: probers.base.release_frames), so nothing is lost by not looking for cycles for the
few seconds a scrape lasts. When the last scrape in flight ends, automatic collection comes
back and the first collection finds whatever cycles were made meanwhile.

Scrapes that overlap without a gap (an HA pair with a short interval) would keep the pause
forever, so a pause longer than ``max_pause`` seconds (5) runs a full collection at the next
scrape's start or end and starts again: the cyclic garbage of reloads made meanwhile (old
configs and plans) waits at most that long (tests/test_reload_cycles.py reloads 24 times
under overlapping scrapes and watches RSS).

A loaded config and its plan live until the next reload: :meth:`CollectionPause.freeze_when_idle`
moves them out of the collector's sight (``gc.freeze``), or every full collection during a
scrape walks them all again (a large share of a 10,000-path scrape's CPU, measured with
bench/profile.py). It unfreezes at once, so the previous config (and the load's cyclic
garbage) is collectable once its last scrape ends, and collects and freezes again only when
no scrape runs (``freeze_after_idle`` seconds after the last one ends), so that full
collection, a stall at 10,000 paths, delays no scrape's answer. Freezing without collecting
first would keep every reload's garbage forever.

A probe worker forked from the fork server inherits its imports frozen, and must never
unfreeze them: a full collection writes to every object it walks, so each page the worker
shares with the fork server and the other workers would be copied into it (measured: 14 MiB
of private memory per worker at its first plan). The same holds for the serving process
that made the fork server (13 MiB at its first config). ``keep_frozen`` freezes each new
plan share or config on top instead; one dropped at the next reload is freed by reference
counting, as it holds no reference cycle (tests/test_gcpause.py), while the load's own
cyclic garbage, never frozen, is collected before the freeze.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable


class CollectionPause:
    """``with pause:`` around a scrape's probing; re-entrant across overlapping scrapes."""

    def __init__(self, *, max_pause: float = 5.0, freeze_after_idle: float = 0.5, keep_frozen: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_pause = max_pause
        self.keep_frozen = keep_frozen  # never unfreeze (a fork shares the pages: see the module's docstring)
        self.freeze_after_idle = freeze_after_idle  # seconds without a scrape before freezing
        self._freeze_wanted = False  # a new config waits to be collected and frozen
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
            if self._freeze_wanted:  # after this scrape's answer is written, if still idle
                try:
                    asyncio.get_running_loop().call_later(self.freeze_after_idle, self._freeze_if_idle)
                except RuntimeError:  # no event loop: nothing to wait for
                    self._freeze_if_idle()
        else:
            self._bound()

    def freeze_when_idle(self) -> None:
        """A new long-lived set of objects (a loaded config and plan): unfreeze now (unless
        ``keep_frozen``), collect and freeze once no scrape runs (at once when none does)."""
        if not self.keep_frozen:
            gc.unfreeze()
        self._freeze_wanted = True
        self._freeze_if_idle()

    def _freeze_if_idle(self) -> None:
        if self._freeze_wanted and not self._depth:
            self._freeze_wanted = False
            gc.collect()
            gc.freeze()

    def _bound(self) -> None:
        if self._paused and self._clock() - self._since > self.max_pause:
            gc.collect()
            self.forced += 1
            self._since = self._clock()
