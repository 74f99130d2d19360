"""The exporter's running state: the loaded config and plan, reloads, and its own metrics.

A scrape takes one :class:`Snapshot` at its start; a reload swaps the snapshot in a single
assignment, so no scrape ever sees half of a new config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from . import __version__
from .catalog import Role
from .config import Config, ConfigError, LoadInterrupted, load_config
from .configfile import RELOAD_TIMEOUT, LoadBounds
from .explain import Explanation, explain_outcomes
from .gcpause import CollectionPause
from .headroom import SERVING_CPU_LIMIT, CpuHeadroom
from .metrics import (ExplanationCollector, Sections, SelfMetrics, forget_path_labels, keep_label_text,
                      write_sections)
from .plan import Plan, build_plan
from .probers import ProbeTarget, release_frames
from .scrape import Outcome, run_all
from .shard import Shard
from .singleflight import FlightKeys, SingleFlight, flight_keys
from .verdict import target_met
from .workers import Joined, Outcomes, Part, Shares, WorkerPool, select_targets

log = logging.getLogger("illiad_exporter")


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    plan: Plan
    loaded_at: float
    keys: FlightKeys = field(default_factory=dict)  # the single-flight key part of each distinct options object
    shares: Shares | None = None  # with probe workers: which worker probes which targets


@dataclass(frozen=True, slots=True)
class Scrape:
    """A scrape's outcomes and, when probe workers wrote them, the metric lines of each part."""

    outcomes: Sequence[Outcome]
    parts: list[Sections] | None = None


# Reloads load on a thread of their own: never queued behind name lookups or bcrypt checks.
_RELOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="illiad-reload")


class ExporterState:
    def __init__(self, config_file: str | Path, vantage: Role, *, shard: Shard | None = None,
                 workers: WorkerPool | None = None, bounds: LoadBounds | None = None,
                 serving_cpu_limit: float = SERVING_CPU_LIMIT) -> None:
        self.config_file = str(config_file)
        self.bounds = bounds or LoadBounds()  # what a load may cost (the --config.* flags)
        self.vantage = vantage
        self.shard = shard  # from --shard; None: the config's exporter.shard, if any
        self.workers = workers  # None: probes run in this process (--probe-workers 1)
        # with workers: a site's /probe is probed here while this process has CPU to spare,
        # its label text made as it is written (the workers keep theirs)
        self.headroom = CpuHeadroom(serving_cpu_limit)
        keep_label_text(workers is None)
        self.snapshot: Snapshot | None = None
        # site -> latest outcomes; with probe workers, made as they are read (workers.Outcomes)
        self.last_outcomes: dict[str, Sequence[Outcome]] = {}
        self.last_reload_error: str = ""
        self._reload_lock = asyncio.Lock()
        self._loading: asyncio.Future[Snapshot] | None = None
        self._limiter: asyncio.Semaphore | None = None
        self._limit = 0
        self.flights = SingleFlight()  # overlapping scrapes share one probe per target
        # also freezes each new config once no scrape runs; on top of what the workers' fork
        # server froze, never thawing it, when there is one (gcpause)
        self.gc_pause = CollectionPause(keep_frozen=workers is not None and workers.keeps_frozen)

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
        # only the sites with a target that fails its expectation (explain weighs a whole
        # site's results: a host some path reached is up): at 10,000 paths, judging every
        # path again on each scrape was a measurable share of the serving process's CPU
        latest = [o for outcomes in self.last_outcomes.values()
                  if not (isinstance(outcomes, Outcomes) and outcomes.met)
                  and any(target_met(o.target, o.result) is not True for o in outcomes) for o in outcomes]
        return explain_outcomes(self.snapshot.config, latest)

    def _explanation_labels(self) -> Iterator[tuple[str, str, str, str, str]]:
        for e in self.explanations().values():
            yield e.site, e.vantage, e.path, e.impact, " ".join(d.text for d in e.diagnoses)

    # -- config ---------------------------------------------------------------------------

    def load(self) -> Snapshot:
        """First load: a bad config is fatal here (the caller exits with the errors)."""
        snapshot = self._read(self.bounds)
        self._install(snapshot)
        return snapshot

    async def start_workers(self) -> None:
        """Start the probe workers with the loaded plan; raises WorkerGone when one cannot start."""
        assert self.snapshot is not None and self.workers is not None
        self._install(await self._shared(self.snapshot, strict=True))

    async def _shared(self, snapshot: Snapshot, *, strict: bool = False) -> Snapshot:
        """``snapshot`` with its plan shared out among the probe workers (they have it then)."""
        if self.workers is None:
            return snapshot
        settings = snapshot.config.exporter
        shares = await self.workers.assign(snapshot.plan.by_site, required=snapshot.plan.required,
                                           failure_reasons=settings.failure_reasons,
                                           max_concurrency=settings.max_concurrency, strict=strict)
        return dataclasses.replace(snapshot, shares=shares)

    async def close(self) -> None:
        """Stop the probe workers (after the server has answered its in-flight scrapes)."""
        if self.workers is not None:
            await self.workers.close()

    def _reload_bounds(self) -> LoadBounds:
        """The flags' bounds, with the running config's exporter.reload_timeout when it sets one."""
        assert self.snapshot is not None
        timeout = self.snapshot.config.exporter.reload_timeout
        if timeout is None:
            return self.bounds
        return dataclasses.replace(self.bounds, timeout=timeout, timeout_bound=RELOAD_TIMEOUT)

    def _read(self, bounds: LoadBounds, *, pause: bool = False) -> Snapshot:
        """Load within ``bounds`` and plan (a reload: in the reload thread, pausing for the
        loop); the flight keys of the new plan are made here too (with workers as well: a
        site's /probe may be probed here)."""
        config = load_config(self.config_file, bounds=bounds, pause=pause)
        plan = build_plan(config, self.vantage, shard=self.shard)
        return Snapshot(config, plan, time.time(), flight_keys(plan.targets))

    def _install(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.flights.use_keys(snapshot.keys)  # the old plan's keys go with it
        forget_path_labels()  # and its label text
        self.gc_pause.freeze_when_idle()  # out of the collector's sight (see gcpause)
        self.last_reload_error = ""
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(snapshot.loaded_at)
        self.metrics.planned_targets.set(len(snapshot.plan))
        if snapshot.config.exporter.max_concurrency != self._limit:  # probes in flight keep their slots
            self._limit = snapshot.config.exporter.max_concurrency
            self._limiter = asyncio.Semaphore(self._limit)
        known = set(snapshot.plan.by_site)
        self.last_outcomes = {k: v for k, v in self.last_outcomes.items() if k in known}

    async def reload(self) -> Exception | None:
        """Load the config file again; on any error keep the running config, log it, set
        the success metric to 0 and return the error.

        The load runs on a thread of its own (never the loop's default pool, which other
        work shares), within the load bounds (its time: the running config's
        exporter.reload_timeout when it sets one); a load that is still running refuses the
        next reload rather than queue behind it."""
        async with self._reload_lock:
            assert self.snapshot is not None
            bounds = self._reload_bounds()
            timeout = bounds.timeout
            try:
                if self._loading is not None and not self._loading.done():
                    raise LoadInterrupted("the previous reload is still loading; try again")
                self._loading = asyncio.get_running_loop().run_in_executor(
                    _RELOADER, functools.partial(self._read, bounds, pause=True))
                # the load stops itself at its deadline (LoadBudget.check); the margin is
                # for a parse step that cannot look at the clock
                snapshot = await asyncio.wait_for(asyncio.shield(self._loading), timeout + 5.0)
                snapshot = await self._shared(snapshot)
            except Exception as error:  # noqa: BLE001 - every failure is reported, whatever it is
                if isinstance(error, TimeoutError):
                    error = LoadInterrupted(f"the config did not load within {timeout + 5.0:g}s")
                self.metrics.reload_ok.set(0)
                self.last_reload_error = str(error) or type(error).__name__
                log.error("config reload failed, keeping the running config",
                          extra={"errors": self.last_reload_error, "error_type": type(error).__name__})
                release_frames(error)
                return error
            self._install(snapshot)
            log.info(
                "config reloaded", extra={"sites": len(snapshot.config.sites), "probes": len(snapshot.plan)}
            )
            return None

    # -- probing --------------------------------------------------------------------------

    def budget(self, scrape_timeout: float | None) -> float:
        """Seconds a scrape may spend probing: Prometheus' scrape timeout (None: it sent
        none, or nothing usable) less an offset."""
        assert self.snapshot is not None
        settings = self.snapshot.config.exporter
        timeout = scrape_timeout if scrape_timeout is not None else settings.default_scrape_timeout
        return max(timeout - settings.scrape_timeout_offset, 0.05)

    async def scrape(self, snapshot: Snapshot, budget: float, *, site: str | None = None, path: str | None = None,
                     record: bool = True, sections: bool = True) -> Scrape:
        """Probe the planned targets of ``snapshot`` (those of ``site``, of its ``path``):
        in the probe workers when there are some, else in this process. With workers and
        ``sections`` (the answer is in a format they write), the results of the sites that
        met every expectation come slim (see workers.crossing): enough for the status page,
        not for writing the answer. A site's selection is probed here, with workers too,
        while this process has CPU to spare (see headroom)."""
        if snapshot.shares is None or self.workers is None or site is not None and self._site_here():
            targets = select_targets(snapshot.plan.by_site, snapshot.plan.targets if site is None else (), site, path)
            return Scrape(await self.probe(targets, budget, record=record))
        parts = await self.workers.probe(snapshot.shares, budget, site=site, path=path, sections=sections)
        for part in parts:
            for reason in part.not_run():
                self.metrics.not_run.labels(reason.value).inc()
        if record and self.snapshot is snapshot:  # a reload came in meanwhile: one config per page
            for part in parts:
                by_site = part.by_site()
                for probed in by_site:  # the results these replace go first: never both at once
                    self.last_outcomes.pop(probed, None)
                self.last_outcomes.update(by_site)
        outcomes = Joined([part.outcomes() for part in parts])
        if not sections:
            return Scrape(outcomes)
        return Scrape(outcomes, [written for part in parts for written in self._sections(snapshot, part)])

    def _site_here(self) -> bool:
        """Whether a site's /probe runs in this process (counted either way)."""
        here = self.headroom.spare()
        self.metrics.site_probes[here].inc()
        return here

    @staticmethod
    def _sections(snapshot: Snapshot, part: Part) -> tuple[Sections, ...]:
        """The metric lines of ``part``: the worker's, or written here for a worker that
        was lost (its results are all the exporter's failure, whole)."""
        if part.sections is not None:
            return part.sections
        sites = {target.site for target in part.targets}
        return (write_sections(part.outcomes(), required=frozenset(r for r in snapshot.plan.required if r[0] in sites),
                               failure_reasons=snapshot.config.exporter.failure_reasons),)

    async def probe(self, targets: Sequence[ProbeTarget], budget: float, *, record: bool = True) -> list[Outcome]:
        """Probe ``targets`` in this process; with ``record``, the status page shows the outcomes."""
        snapshot = self.snapshot
        with self.gc_pause:  # see gcpause: full collections over a big scrape's live objects
            outcomes = await run_all(targets, budget=budget, limiter=self._limiter, flights=self.flights)
        self._record(snapshot, outcomes, record)
        return outcomes

    def _record(self, snapshot: Snapshot | None, outcomes: list[Outcome], record: bool) -> None:
        for outcome in outcomes:
            if outcome.result.not_run is not None:
                self.metrics.not_run.labels(outcome.result.not_run.value).inc()
        if not record or self.snapshot is not snapshot:  # a reload came in meanwhile: one config per page
            return
        by_site: dict[str, list[Outcome]] = {}
        for outcome in outcomes:  # one pass: a consortium has thousands of sites
            by_site.setdefault(outcome.target.site, []).append(outcome)
        self.last_outcomes.update(by_site)
