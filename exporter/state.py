"""The exporter's running state: the loaded config and plan, reloads, and its own metrics.

A scrape takes one :class:`Snapshot` at its start; a reload swaps the snapshot in a single
assignment, so no scrape ever sees half of a new config.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from . import __version__
from .catalog import Role
from .config import Config, ConfigError, load_config
from .explain import Explanation, explain_outcomes
from .gcpause import CollectionPause
from .metrics import ExplanationCollector, SelfMetrics
from .plan import Plan, build_plan
from .probers import ProbeTarget
from .scrape import Outcome, run_all
from .shard import Shard
from .singleflight import SingleFlight

log = logging.getLogger("illiad_exporter")


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    plan: Plan
    loaded_at: float


class ExporterState:
    def __init__(self, config_file: str | Path, vantage: Role, *, shard: Shard | None = None) -> None:
        self.config_file = str(config_file)
        self.vantage = vantage
        self.shard = shard  # from --shard; None: the config's exporter.shard, if any
        self.snapshot: Snapshot | None = None
        self.last_outcomes: dict[str, list[Outcome]] = {}  # site -> latest outcomes
        self.last_reload_error: str = ""
        self._reload_lock = asyncio.Lock()
        self._limiter: asyncio.Semaphore | None = None
        self._limit = 0
        self.flights = SingleFlight()  # overlapping scrapes share one probe per target
        self.gc_pause = CollectionPause()

        self.registry = CollectorRegistry(auto_describe=True)
        # the standard three every prometheus_client exporter registers: process_*, python_gc_*, python_info
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.metrics = SelfMetrics(self.registry, version=__version__, vantage=vantage.value)
        self.registry.register(ExplanationCollector(self._explanation_labels))

    def explanations(self) -> dict[tuple[str, str], Explanation]:
        """The explanations of the paths failing in the latest results, by (site, path)."""
        if self.snapshot is None:
            return {}
        latest = [o for outcomes in self.last_outcomes.values() for o in outcomes]
        return explain_outcomes(self.snapshot.config, latest)

    def _explanation_labels(self) -> Iterator[tuple[str, str, str, str, str]]:
        for e in self.explanations().values():
            yield e.site, e.vantage, e.path, e.impact, " ".join(d.text for d in e.diagnoses)

    # -- config ---------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """First load: a bad config is fatal here (the caller exits with the errors)."""
        snapshot = self._read()
        self._install(snapshot)
        return snapshot

    def _read(self) -> Snapshot:
        config = load_config(self.config_file)
        return Snapshot(config, build_plan(config, self.vantage, shard=self.shard), time.time())

    def _install(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        # The config and plan live until the next reload: move them out of the garbage
        # collector's sight, or every full collection during a scrape walks them all again
        # (a large share of a 10,000-path scrape's CPU, measured with bench/profile.py).
        gc.collect()
        gc.freeze()
        self.last_reload_error = ""
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(snapshot.loaded_at)
        self.metrics.planned_targets.set(len(snapshot.plan))
        if snapshot.config.exporter.max_concurrency != self._limit:  # probes in flight keep their slots
            self._limit = snapshot.config.exporter.max_concurrency
            self._limiter = asyncio.Semaphore(self._limit)
        known = set(snapshot.plan.by_site)
        self.last_outcomes = {k: v for k, v in self.last_outcomes.items() if k in known}

    async def reload(self) -> ConfigError | None:
        """Load the config file again; on error keep the running config and return the error."""
        async with self._reload_lock:
            try:
                snapshot = await asyncio.to_thread(self._read)
            except ConfigError as error:
                self.metrics.reload_ok.set(0)
                self.last_reload_error = str(error)
                log.error("config reload failed, keeping the running config", extra={"errors": str(error)})
                return error
            self._install(snapshot)
            log.info(
                "config reloaded", extra={"sites": len(snapshot.config.sites), "probes": len(snapshot.plan)}
            )
            return None

    # -- probing --------------------------------------------------------------------------

    def budget(self, scrape_timeout_header: str | None) -> float:
        """Seconds a scrape may spend probing: Prometheus' scrape timeout less an offset."""
        assert self.snapshot is not None
        settings = self.snapshot.config.exporter
        budget = settings.default_scrape_timeout
        if scrape_timeout_header:
            try:
                budget = float(scrape_timeout_header)
            except ValueError:
                pass
            if not math.isfinite(budget) or budget <= 0:  # "nan", "inf", "-1": the default
                budget = settings.default_scrape_timeout
        return max(budget - settings.scrape_timeout_offset, 0.05)

    async def probe(self, targets: Sequence[ProbeTarget], budget: float, *, record: bool = True) -> list[Outcome]:
        """Probe ``targets``; with ``record``, the status page shows the outcomes."""
        snapshot = self.snapshot
        with self.gc_pause:  # see gcpause: full collections over a big scrape's live objects
            outcomes = await run_all(targets, budget=budget, limiter=self._limiter, flights=self.flights)
        for outcome in outcomes:
            if outcome.result.not_run is not None:
                self.metrics.not_run.labels(outcome.result.not_run.value).inc()
        if not record or self.snapshot is not snapshot:  # a reload came in meanwhile: one config per page
            return outcomes
        by_site: dict[str, list[Outcome]] = {}
        for outcome in outcomes:  # one pass: a consortium has thousands of sites
            by_site.setdefault(outcome.target.site, []).append(outcome)
        self.last_outcomes.update(by_site)
        return outcomes
