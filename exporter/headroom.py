"""Whether the serving process has CPU to spare, from its own CPU time.

With probe workers, a site's ``/probe`` (ten-odd probes) costs less when the serving process
probes it itself than when it crosses a pipe to a worker and back: two pipes, two event
loops, two wake-ups for every request (measured with bench/run.py: 1.4x the CPU per probe at
the pace Prometheus scrapes sites, 6-11% more when requests come as fast as they are
answered). The workers earn that back only when the serving process has no core to spare, so it probes a site itself
while its CPU over the last window stays below a limit, and hands the site to its worker
otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SERVING_CPU_LIMIT = 0.75  # the default: a quarter of a core kept for HTTP, reloads and /metrics
WINDOW = 0.5  # seconds of CPU time each reading covers: a burst shows within one


class CpuHeadroom:
    """``spare()``: this process used less than ``limit`` of one core over the latest window
    (all its threads: a reload's load counts, and sends sites to the workers meanwhile)."""

    def __init__(self, limit: float, *, window: float = WINDOW, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self.limit = limit
        self._window = window
        self._clock, self._cpu = clock, cpu
        self._since, self._cpu_then = clock(), cpu()
        self.busy: float | None = None  # share of one core over the latest window; None: not read yet

    def spare(self) -> bool:
        if self.limit <= 0:
            return False
        now = self._clock()
        elapsed = now - self._since
        # the first reading covers the start (a config load, workers starting) however short;
        # a long idle gap reads as idle: the reading covers it all
        if elapsed >= self._window or self.busy is None and elapsed > 0:
            used = self._cpu()
            self.busy = (used - self._cpu_then) / elapsed
            self._since, self._cpu_then = now, used
        return self.busy is not None and self.busy < self.limit
