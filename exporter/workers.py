"""Probe worker processes: every core for a consortium's scrape, behind the one endpoint.

One Python process probes on one core (bench/RESULTS.txt: a 10,000-path scrape is 0.7 s of
CPU on the benchmark machine, in the kernel's connects, the event loop's callbacks and the
writing of the metrics).
With ``--probe-workers N`` the serving process keeps HTTP, the config, reloads, the status
page and the explanations, and N worker processes probe: each owns a share of the sites
(paths are never split, so a worker can judge a path's verdict) and writes the metric lines
of its share (:func:`metrics.write_sections`); the serving process joins the parts under
one header per family and sends them as one answer. A worker writes and sends a big share's
lines a part of whole sites at a time, as each part's probes finish (PART_TARGETS,
:class:`ProbedPart`), so it never holds the whole share's results or answer at once.

The guarantees of a single process hold across them:

- **single flight**: a target belongs to exactly one worker, which runs the same
  single-flight table for the scrapes that overlap there;
- **reload**: the serving process loads and checks the config, then gives every worker its
  share of the new plan as a new *generation*; a scrape names the generation it started
  with, and a worker keeps the previous one until the next, so no scrape mixes two configs;
  a failed load reaches no worker;
- **the deadline**: a worker probes within the scrape's budget; one that has not answered a
  little after it (hung, or killed) fails its targets with reason ``exporter`` (the
  exporter's owner acts, no library alert fires), is stopped and is started again, given
  the current plan, at the next scrape;
- **shutdown**: the serving process stops them once its in-flight scrapes are answered; a
  worker whose serving process dies sees its inbox close and exits.

Workers are forked on Linux from a copy of the serving process made before it loaded a config
(forkserver.py: they share the imported code's pages with it and with each other), and
started with multiprocessing's ``spawn`` elsewhere (Windows, macOS). Messages are pickled
over two one-way pipes per worker; the messages of one loop iteration (site requests and
answers that come together) go in one write. Each side's event loop reads its inbox itself
where it has readiness callbacks (selector loops, uvloop), whatever has arrived at once, and
a thread reads it where it has not (Windows' proactor); a big answer is written by a
thread, so no loop waits for a pipe to drain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import multiprocessing
import operator
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, overload

from .eventloop import import_loop, run_on_loop
from .forkserver import ForkServer
from .gcpause import CollectionPause
from .logs import setup_logging
from .metrics import FailureReasons, Sections, forget_path_labels, keep_path_labels, write_sections
from .probers import ProbeResult, ProbeTarget, Reason
from .probers.base import NotRun
from .probers.net import has_readiness_callbacks
from .scrape import SETTLE_GRACE, Outcome, run_in_parts
from .singleflight import SingleFlight, flight_keys
from .verdict import target_met

log = logging.getLogger("illiad_exporter.workers")

# How long after a scrape's budget a worker may take to write and send its part before the
# serving process gives up on it (and restarts it): the writing of 15,000 paths' lines,
# measured with bench/run.py, takes a few hundred milliseconds.
ANSWER_GRACE = 5.0
# How long a worker may take to start (import, then take its first plan), and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
# An answer this small fits a pipe's buffer (64 KiB on Linux): written from the loop.
SMALL_ANSWER = 32 * 1024
# What the loop reads from a pipe at once.
READ_SIZE = 1 << 20
# A worker writes the metric lines of its share a part of about this many targets at a
# time, each part as soon as its probes are done, and lets go of the part's results
# (scrape.run_in_parts). Measured with bench/run.py at 15,000 paths a worker: the results
# of the whole share at once took 14 MiB more at the peak. Writing a part holds the event
# loop, and so delays the probes in flight: 500 paths take about 5 ms to write; parts of
# 1,000 took the same memory and CPU and held the loop twice as long.
PART_TARGETS = 500


# -- the messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequiredPaths:
    """Which paths of a share the ILLiad checklist requires, held as the fewer of the two
    lists: the required pairs, or the share's other pairs. A consortium's paths are mostly
    required, so a worker keeps the few exceptions, not a (site, path) pair for every path
    (measured: half a MiB a worker at 10,000 paths). Asked only of the share's own paths."""

    pairs: frozenset[tuple[str, str]]
    listed: bool  # True: ``pairs`` are the required ones; False: every path of the share but them

    def __contains__(self, pair: object) -> bool:
        return (pair in self.pairs) == self.listed

    @classmethod
    def of(cls, targets: Iterable[ProbeTarget], required: Container[tuple[str, str]]) -> RequiredPaths:
        paths = {(target.site, target.path) for target in targets}
        needed = frozenset(pair for pair in paths if pair in required)
        if len(needed) <= len(paths) - len(needed):
            return cls(needed, True)
        return cls(frozenset(paths - needed), False)


@dataclass(frozen=True, slots=True)
class Assign:
    """A worker's share of a new plan (serving process -> worker)."""

    generation: int
    targets: tuple[ProbeTarget, ...]
    required: RequiredPaths
    failure_reasons: FailureReasons
    max_concurrency: int


@dataclass(frozen=True, slots=True)
class Probe:
    """Probe a selection of a generation's targets within ``budget`` seconds."""

    request: int
    generation: int
    site: str | None  # None: every target of the share
    path: str | None  # None: every path of the site
    budget: float
    sections: bool  # write the metric lines too (a /metrics or /probe?site= answer)

    def __reduce__(self) -> tuple[type[Probe], tuple[Any, ...]]:
        return (Probe, (self.request, self.generation, self.site, self.path, self.budget, self.sections))


@dataclass(frozen=True, slots=True)
class Assigned:
    generation: int


# A result crosses the pipe as the tuple of its fields: pickling and unpickling 5,000 of
# them takes half the time of the objects themselves (measured: 57 against 25 ms).
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(ProbeResult))
_packed = operator.attrgetter(*_RESULT_FIELDS)


_NOT_RUN = _RESULT_FIELDS.index("not_run")

# The results of a site whose every target met its expectation cross slim when the worker
# wrote the metric lines: only what the status page shows and the verdicts read. The phases,
# infos and facts are read by the exposition (written in the worker) and by the explanations
# (of failing sites only, which cross whole), so the serving process does not hold them:
# at 30,000 paths they were most of its share of a scrape.
_SLIM_NOT_RUN = 6


def _slim(result: ProbeResult) -> tuple[Any, ...]:
    address = sys.intern(result.address) if result.address is not None else None  # pickled once a message
    return (result.up, result.reason, result.detail, result.phases.get("connect"), address, result.port,
            result.not_run, result.tls)


def _unpacked(fields: tuple[Any, ...]) -> ProbeResult:
    if len(fields) == len(_RESULT_FIELDS):
        return ProbeResult(*fields)
    up, reason, detail, connect, address, port, not_run, tls = fields
    return ProbeResult(up, reason, detail, {} if connect is None else {"connect": connect}, address, port, tls,
                       not_run=not_run)


def not_run_of(fields: tuple[Any, ...]) -> NotRun | None:
    """Why the exporter could not run the probe of a result as it crossed the pipe."""
    value: NotRun | None = fields[_NOT_RUN if len(fields) == len(_RESULT_FIELDS) else _SLIM_NOT_RUN]
    return value


def crossing(outcomes: Sequence[Outcome], *, slim: bool) -> tuple[tuple[Any, ...], ...]:
    """The results of ``outcomes`` as they cross the pipe: with ``slim``, those of the sites
    whose every target met its expectation slim (see _slim), the others whole."""
    failing = {o.target.site for o in outcomes if target_met(o.target, o.result) is not True} if slim else None
    return tuple(_packed(o.result) if failing is None or o.target.site in failing else _slim(o.result)
                 for o in outcomes)


class Outcomes(Sequence[Outcome]):
    """Outcomes made as they are read from results as they crossed the pipe: the serving
    process holds each result once, as it came, not a second time as objects."""

    __slots__ = ("targets", "results", "finished_at")

    def __init__(self, targets: tuple[ProbeTarget, ...], results: Sequence[tuple[Any, ...]],
                 finished_at: float) -> None:
        self.targets, self.results, self.finished_at = targets, results, finished_at

    @property
    def met(self) -> bool:
        """Every result crossed slim: the worker found every target's expectation met (so
        the explanations need not judge them again, making each outcome to do so)."""
        return all(len(fields) != len(_RESULT_FIELDS) for fields in self.results)

    def __len__(self) -> int:
        return len(self.targets)

    @overload
    def __getitem__(self, index: int) -> Outcome: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome]:
        if isinstance(index, slice):
            return list(self)[index]
        return Outcome(self.targets[index], _unpacked(self.results[index]), self.finished_at)

    def __iter__(self) -> Iterator[Outcome]:
        for target, result in zip(self.targets, self.results):
            yield Outcome(target, _unpacked(result), self.finished_at)


class Joined(Sequence[Outcome]):
    """The outcomes of several parts, one after the other, made as they are read."""

    __slots__ = ("parts",)

    def __init__(self, parts: Sequence[Sequence[Outcome]]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    @overload
    def __getitem__(self, index: int) -> Outcome: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome]: ...

    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome]:
        return list(self)[index]

    def __iter__(self) -> Iterator[Outcome]:
        return itertools.chain.from_iterable(self.parts)


@dataclass(frozen=True, slots=True)
class Probed:
    request: int
    results: tuple[tuple[Any, ...], ...]  # the fields of each result, in the order of the selected targets
    finished_at: float
    sections: tuple[Sections, ...] | None  # a part's at a time (PART_TARGETS), in order
    error: str = ""  # the request could not be served (an unknown generation)

    def __reduce__(self) -> tuple[type[Probed], tuple[Any, ...]]:
        # pickled by its fields: a dataclass with slots takes copyreg's slow way (a site's
        # /probe answer took 31 us each way, 17-20 us so)
        return (Probed, (self.request, self.results, self.finished_at, self.sections, self.error))


@dataclass(frozen=True, slots=True)
class ProbedPart:
    """One part of a scrape's answer (worker -> serving process), sent as soon as the part is
    written, so the worker holds no more than a part of its answer: the results and the
    lines of a selection of several parts come this way, and the Probed that ends the answer
    carries none (scrape.run_in_parts, PART_TARGETS)."""

    request: int
    results: tuple[tuple[Any, ...], ...]
    sections: Sections | None

    def __reduce__(self) -> tuple[type[ProbedPart], tuple[Any, ...]]:
        return (ProbedPart, (self.request, self.results, self.sections))


STOP = "stop"


def select_targets(by_site: Mapping[str, tuple[ProbeTarget, ...]], targets: tuple[ProbeTarget, ...],
                   site: str | None, path: str | None) -> tuple[ProbeTarget, ...]:
    """The targets a Probe names, in the order both sides agree on."""
    if site is None:
        return targets
    chosen = by_site.get(site, ())
    return chosen if path is None else tuple(t for t in chosen if t.path == path)


def part_ends(targets: Sequence[ProbeTarget], size: int | None = None) -> list[int]:
    """Where each part of a worker's selection ends: whole sites (a path's verdict needs
    all its targets), at least ``size`` (PART_TARGETS) targets a part but the last."""
    size = size or PART_TARGETS
    ends: list[int] = []
    end = 0
    for _, group in itertools.groupby(targets, key=operator.attrgetter("site")):
        end += sum(1 for _ in group)
        if end - (ends[-1] if ends else 0) >= size:
            ends.append(end)
    if end and (not ends or ends[-1] != end):
        ends.append(end)
    return ends


def by_site_of(targets: Sequence[ProbeTarget]) -> dict[str, tuple[ProbeTarget, ...]]:
    grouped: dict[str, list[ProbeTarget]] = {}
    for target in targets:
        grouped.setdefault(target.site, []).append(target)
    return {site: tuple(ts) for site, ts in grouped.items()}


def share_sites(by_site: Mapping[str, tuple[ProbeTarget, ...]], workers: int) -> list[list[str]]:
    """The sites of each worker: whole sites, the biggest first to the least loaded worker, so
    the shares' probe counts differ by at most one site's (a consortium's sites vary in size)."""
    shares: list[list[str]] = [[] for _ in range(workers)]
    load = [0] * workers
    for site in sorted(by_site, key=lambda s: (-len(by_site[s]), s)):
        least = min(range(workers), key=lambda w: (load[w], w))
        shares[least].append(site)
        load[least] += len(by_site[site])
    return shares


# -- reading a pipe ----------------------------------------------------------------------------


# Unix pipes carry multiprocessing's frames (a 4-byte big-endian length, then the message),
# which this module writes itself, several messages in one write; Windows' pipes are message
# pipes, written a message at a time.
FRAMED = sys.platform != "win32"


def _frame(data: bytes) -> bytes:
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data
    return struct.pack("!i", len(data)) + data


def write_messages(conn: Connection, messages: Sequence[bytes]) -> None:
    """Write pickled messages to a blocking pipe end, as Connection.send_bytes frames them (so
    a thread's recv_bytes reads them), in one write where the platform allows."""
    if not FRAMED:
        for message in messages:
            conn.send_bytes(message)
        return
    view = memoryview(b"".join(map(_frame, messages)))
    while view:
        view = view[os.write(conn.fileno(), view):]


class _Listener:
    """Hands each message arriving on ``conn`` to ``deliver`` on the loop, and calls
    ``closed`` once when the other end is gone. Where the loop has readiness callbacks it
    reads the pipe itself, whatever has arrived at once, and takes every whole message out
    of it (several site answers cost one wake-up and one read); a thread woken for each
    small message (a site's /probe) cost more CPU than the site's probes. Elsewhere
    (Windows' proactor) a thread reads it."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, deliver: Callable[[object], None],
                 closed: Callable[[], None], *, name: str) -> None:
        self.conn, self.loop, self.deliver, self.closed = conn, loop, deliver, closed
        self.thread: threading.Thread | None = None
        self._done = False
        self._buffer = bytearray()
        self._start = 0  # where the next message begins in the buffer
        if has_readiness_callbacks(loop) and FRAMED:
            # read what is there, never wait: a message longer than the pipe holds comes in pieces
            os.set_blocking(conn.fileno(), False)
            loop.add_reader(conn.fileno(), self._readable)
        else:
            self.thread = threading.Thread(target=self._read, name=name, daemon=True)
            self.thread.start()

    def _readable(self) -> None:
        try:
            data = os.read(self.conn.fileno(), READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        buffer = self._buffer
        buffer += data
        while True:
            start = self._start
            if len(buffer) - start < 4:
                break
            size = struct.unpack_from("!i", buffer, start)[0]
            head = 4
            if size == -1:  # a message of 2 GiB or more
                if len(buffer) - start < 12:
                    break
                size, head = struct.unpack_from("!Q", buffer, start + 4)[0], 12
            end = start + head + size
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[start + head:end])
            self._start = end
            self.deliver(message)
        if self._start:
            del buffer[:self._start]
            self._start = 0

    def _read(self) -> None:  # the thread's way: unpickled here, handed to the loop
        while True:
            try:
                message = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                break
            try:
                self.loop.call_soon_threadsafe(self.deliver, message)
            except RuntimeError:  # the loop is closed: shutting down
                return
        try:
            self.loop.call_soon_threadsafe(self._close)
        except RuntimeError:
            pass

    def _close(self) -> None:
        if self._done:
            return
        self._done = True
        if self.thread is None:
            self.loop.remove_reader(self.conn.fileno())
        self.conn.close()
        self.closed()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


# -- the worker process ------------------------------------------------------------------------


@dataclass(slots=True)
class _Share:
    targets: tuple[ProbeTarget, ...]
    by_site: dict[str, tuple[ProbeTarget, ...]]
    required: RequiredPaths
    failure_reasons: FailureReasons


class _Worker:
    """A worker's state: the shares of the last two generations, and what probes them."""

    def __init__(self, outbox: Connection) -> None:
        self.outbox = outbox
        self.shares: dict[int, _Share] = {}
        self.flights = SingleFlight()
        self.gc_pause = CollectionPause(keep_frozen=True)  # what the fork server froze stays shared
        self.limiter: asyncio.Semaphore | None = None
        self.limit = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._sending: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # answers waiting for the sender thread
        self._batch: list[bytes] = []  # small answers of this loop iteration, written together
        self._sender = threading.Thread(target=self._send_loop, name="illiad-worker-send", daemon=True)
        self._sender.start()

    def send(self, message: object) -> None:
        """Pickled here; the small answers of one loop iteration (site answers finishing
        together) are written at its end in one write, a big one by the sender thread, so
        it never blocks the loop. Waking a thread for every small answer cost more CPU than
        the probes of a 10-path site (bench/run.py, /probe?site=), and so did a write each."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= SMALL_ANSWER:
            if not self._batch:
                asyncio.get_running_loop().call_soon(self._flush)
            self._batch.append(data)
            return
        self._flush()  # what came before goes first
        with self._lock:
            self._queued += 1
        self._sending.put([data])

    def _flush(self) -> None:
        if not self._batch:
            return
        messages, self._batch = self._batch, []
        with self._lock:  # one writer at a time, and answers in order
            if not self._queued:
                self._write(messages)
                return
            self._queued += 1
        self._sending.put(messages)

    def _write(self, messages: list[bytes]) -> None:
        try:
            write_messages(self.outbox, messages)
        except OSError:  # the serving process is gone; the inbox will close too
            pass

    def _send_loop(self) -> None:
        while (messages := self._sending.get()) is not None:
            self._write(messages)  # not under the lock: the loop never waits for a big answer to drain
            with self._lock:  # counted until written: no small answer overtakes it meanwhile
                self._queued -= 1

    def close(self) -> None:
        self._sending.put(None)
        self._sender.join(STOP_TIMEOUT)

    def assign(self, message: Assign) -> None:
        share = _Share(message.targets, by_site_of(message.targets), message.required, message.failure_reasons)
        # keep the previous generation for the scrapes that started with it
        self.shares = {g: s for g, s in self.shares.items() if g == max(self.shares, default=-1)}
        self.shares[message.generation] = share
        self.flights.use_keys(flight_keys(message.targets))
        forget_path_labels()  # the old share's, which would pile up over reloads
        keep_path_labels(message.targets)
        if message.max_concurrency != self.limit:
            self.limit = message.max_concurrency
            self.limiter = asyncio.Semaphore(self.limit)
        self.gc_pause.freeze_when_idle()
        self.send(Assigned(message.generation))

    async def probe(self, message: Probe) -> None:
        share = self.shares.get(message.generation)
        if share is None:
            self.send(Probed(message.request, (), time.time(), None, error=f"no plan of generation "
                                                                            f"{message.generation}"))
            return
        targets = select_targets(share.by_site, share.targets, message.site, message.path)
        ends = part_ends(targets)
        last: list[ProbedPart] = []  # of a selection of one part: it goes in the Probed
        finished_at = time.time()

        def written(outcomes: list[Outcome]) -> None:  # a part's lines and results, then its outcomes go
            nonlocal finished_at
            part = ProbedPart(message.request, crossing(outcomes, slim=message.sections),
                              write_sections(outcomes, required=share.required, failure_reasons=share.failure_reasons)
                              if message.sections else None)
            finished_at = outcomes[-1].finished_at
            if len(ends) > 1:
                self.send(part)
            else:
                last.append(part)

        try:
            with self.gc_pause:
                await run_in_parts(targets, ends, written, budget=message.budget, limiter=self.limiter,
                                   flights=self.flights)
        except Exception as exc:  # a bug must cost this scrape's share, not leave the serving process waiting
            log.error("probe worker failed a scrape: %r", exc, exc_info=True)
            self.send(Probed(message.request, (), time.time(), None, error=f"{type(exc).__name__} in the worker"))
            return
        self.send(Probed(message.request, last[0].results if last else (), finished_at,
                         tuple(p.sections for p in last if p.sections is not None) if message.sections else None))


async def _work(inbox: Connection, outbox: Connection) -> None:
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue[object] = asyncio.Queue()
    # the serving process closed the inbox, or died: stop
    _Listener(inbox, loop, messages.put_nowait, lambda: messages.put_nowait(STOP), name="illiad-worker-read")
    worker = _Worker(outbox)
    try:
        while (message := await messages.get()) != STOP:
            if isinstance(message, Assign):
                worker.assign(message)
            elif isinstance(message, Probe):
                task = loop.create_task(worker.probe(message))
                worker.tasks.add(task)
                task.add_done_callback(worker.tasks.discard)
        if worker.tasks:  # in-flight scrapes end by their deadlines
            await asyncio.wait(set(worker.tasks))
    finally:
        worker.close()


def worker_main(inbox: Connection, outbox: Connection, index: int, log_level: str, log_format: str,
                event_loop: str) -> None:
    """A worker process's entry point."""
    # Ctrl-C in a terminal, or systemd's SIGTERM to the whole service, reaches every process
    # of the group: the serving process decides when its workers stop (after answering its
    # in-flight scrapes), and a worker whose serving process is gone sees its inbox close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(log_level, log_format)
    logging.getLogger("illiad_exporter").debug("probe worker started", extra={"worker": index, "pid": os.getpid()})
    run_on_loop(_work(inbox, outbox), event_loop)


# -- the serving process's side ---------------------------------------------------------------


def _joined(parts: list[ProbedPart], end: Probed) -> Probed:
    """The answer of a selection that came in parts, as one."""
    results = tuple(itertools.chain.from_iterable(part.results for part in parts))
    sections = None if end.sections is None else tuple(p.sections for p in parts if p.sections is not None)
    return Probed(end.request, results, end.finished_at, sections, end.error)


class WorkerGone(Exception):
    """The worker exited or stopped answering; its targets fail with reason exporter."""


@dataclass(slots=True)
class _Handle:
    index: int
    process: Any  # multiprocessing.Process of the pool's context
    inbox: Connection  # what we send on
    listener: _Listener | None = None
    waiting: dict[int, asyncio.Future[Probed]] = field(default_factory=dict)
    parts: dict[int, list[ProbedPart]] = field(default_factory=dict)  # of the answers still coming
    assigned: asyncio.Future[Assigned] | None = None
    alive: bool = True
    batch: list[bytes] = field(default_factory=list)  # messages of this loop iteration, written together


@dataclass(frozen=True, slots=True)
class Shares:
    """Which worker owns which targets in one generation of the plan: a scrape keeps the
    shares it started with (in the state's snapshot), as the workers keep that generation."""

    generation: int
    owner: dict[str, int]  # site -> worker
    targets: tuple[tuple[ProbeTarget, ...], ...]  # each worker's, in the order it has them
    by_site: tuple[dict[str, tuple[ProbeTarget, ...]], ...]  # each worker's, by site

    def select(self, index: int, site: str | None, path: str | None) -> tuple[ProbeTarget, ...]:
        return select_targets(self.by_site[index], self.targets[index], site, path)


@dataclass(frozen=True, slots=True)
class Part:
    """One worker's answer to a scrape: its targets, their results as they crossed the pipe
    (each one's fields) and its metric lines. The outcomes are made when the serving process
    takes them (:meth:`outcomes`), once it has let go of the results they replace."""

    targets: tuple[ProbeTarget, ...]
    results: Sequence[tuple[Any, ...]]
    finished_at: float
    sections: tuple[Sections, ...] | None

    def outcomes(self) -> Outcomes:
        return Outcomes(self.targets, self.results, self.finished_at)

    def by_site(self) -> dict[str, Outcomes]:
        """The outcomes of each site (a share's targets come site by site), each holding
        only its own results, so a site's next /probe lets go of them."""
        sites: dict[str, Outcomes] = {}
        start = 0
        for site, group in itertools.groupby(self.targets, key=operator.attrgetter("site")):
            stop = start + sum(1 for _ in group)
            sites[site] = Outcomes(self.targets[start:stop], tuple(self.results[start:stop]), self.finished_at)
            start = stop
        return sites

    def not_run(self) -> Iterator[NotRun]:
        """Why the exporter could not run each probe it could not run."""
        return (reason for reason in map(not_run_of, self.results) if reason is not None)


def start_method() -> str:
    """forkserver on Linux (this package's fork server: forkserver.py), spawn elsewhere;
    $ILLIAD_EXPORTER_PROBE_WORKER_START (forkserver or spawn) overrides it, so Linux can run
    the way Windows and macOS do (the tests do)."""
    method = os.environ.get("ILLIAD_EXPORTER_PROBE_WORKER_START") or (
        "forkserver" if sys.platform.startswith("linux") else "spawn")
    if method not in ("forkserver", "spawn") or method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"probe workers cannot start with {method!r} here (forkserver on Linux, or spawn)")
    return method


class WorkerPool:
    """N probe worker processes and the share of the plan each owns. Made before the event
    loop starts and before any thread: on Linux it forks the workers' fork server then."""

    def __init__(self, count: int, *, log_level: str = "info", log_format: str = "logfmt",
                 event_loop: str = "auto") -> None:
        if count < 2:
            raise ValueError("a worker pool has at least 2 workers (1 means probing in the serving process)")
        self.count = count
        self._options = (log_level, log_format, event_loop)
        method = start_method()
        self._spawn = multiprocessing.get_context("spawn") if method == "spawn" else None
        if method == "forkserver":
            import_loop(event_loop)
        self._fork_server = ForkServer(worker_main) if method == "forkserver" else None
        # the fork server froze what this process holds: it stays frozen (forkserver.py)
        self.keeps_frozen = self._fork_server is not None
        self._handles: list[_Handle | None] = [None] * count
        self._requests = itertools.count()
        self._generation = 0
        self._assignment: list[Assign] = []  # the latest generation's share of each worker
        self._closed = False

    # -- plans -----------------------------------------------------------------------------

    async def assign(self, by_site: Mapping[str, tuple[ProbeTarget, ...]], *, required: Container[tuple[str, str]],
                     failure_reasons: FailureReasons, max_concurrency: int, strict: bool = False) -> Shares:
        """Give every worker its share of a new plan; the scrapes started with the returned
        shares name its generation. A worker that cannot take it is started again at the
        next scrape (``strict``: raises WorkerGone instead, for the first plan)."""
        sites_of = share_sites(by_site, self.count)
        generation = self._generation + 1
        per_worker = max(1, -(-max_concurrency // self.count))  # the config's limit, split
        owner: dict[str, int]
        assignment, owner, mine_all, mine_by_site = [], {}, [], []
        for index, sites in enumerate(sites_of):
            mine = {site: by_site[site] for site in sites}
            mine_all.append(tuple(t for ts in mine.values() for t in ts))
            mine_by_site.append(mine)
            owner.update((site, index) for site in sites)
            assignment.append(Assign(generation, mine_all[-1], RequiredPaths.of(mine_all[-1], required),
                                     failure_reasons, per_worker))
        self._generation, self._assignment = generation, assignment
        results = await asyncio.gather(*(self._give(i, share) for i, share in enumerate(assignment)),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed and strict:
            raise WorkerGone(f"{len(failed)} probe worker(s) did not start: {failed[0]}")
        return Shares(generation, owner, tuple(mine_all), tuple(mine_by_site))

    async def _give(self, index: int, share: Assign) -> None:
        handle = self._handles[index]
        if handle is None or not handle.alive:
            handle = await self._start(index)
        loop = asyncio.get_running_loop()
        handle.assigned = loop.create_future()
        handle.assigned.add_done_callback(_retrieved)
        self._send(handle, share)
        await asyncio.wait_for(asyncio.shield(handle.assigned), START_TIMEOUT)

    # -- processes -------------------------------------------------------------------------

    async def _start(self, index: int) -> _Handle:
        loop = asyncio.get_running_loop()
        inbox_reader, inbox = multiprocessing.Pipe(duplex=False)
        outbox, outbox_writer = multiprocessing.Pipe(duplex=False)
        args = (index, *self._options)
        # starting (a fork from the fork server, or a spawn) takes a while: not on the loop
        try:
            if self._fork_server is not None:
                process: Any = await loop.run_in_executor(None, self._fork_server.start, inbox_reader, outbox_writer,
                                                          *args)
            else:
                assert self._spawn is not None
                process = self._spawn.Process(target=worker_main, name=f"illiad-probe-worker-{index}",
                                              args=(inbox_reader, outbox_writer, *args), daemon=True)
                await loop.run_in_executor(None, process.start)
        except BaseException:
            for end in (inbox_reader, inbox, outbox, outbox_writer):
                end.close()
            raise
        inbox_reader.close()
        outbox_writer.close()
        handle = _Handle(index, process, inbox)
        handle.listener = _Listener(outbox, loop, functools.partial(self._deliver, handle),
                                    functools.partial(self._lost, handle, "exited", gone=True),
                                    name=f"illiad-worker-{index}-read")
        self._handles[index] = handle
        log.info("probe worker started", extra={"worker": index, "pid": process.pid})
        return handle

    def _deliver(self, handle: _Handle, message: object) -> None:
        if isinstance(message, Assigned):
            if handle.assigned is not None and not handle.assigned.done():
                handle.assigned.set_result(message)
        elif isinstance(message, ProbedPart):
            if message.request in handle.waiting:
                handle.parts.setdefault(message.request, []).append(message)
        elif isinstance(message, Probed):
            waiter = handle.waiting.pop(message.request, None)
            parts = handle.parts.pop(message.request, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message if parts is None else _joined(parts, message))

    def _lost(self, handle: _Handle, why: str, *, gone: bool = False) -> None:
        """The worker is gone (``gone``: its pipe says so) or given up on: everyone waiting on
        it fails; the next scrape starts a new one."""
        if not handle.alive:
            return
        handle.alive = False
        code = handle.process.exitcode
        ended = f" ({_exit_text(code)})" if code is not None else ""
        error = WorkerGone(f"probe worker {handle.index} {why}{ended}")
        for waiter in [*handle.waiting.values(), handle.assigned]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        handle.waiting.clear()
        handle.parts.clear()
        try:
            handle.inbox.close()
        except OSError:
            pass
        if self._closed:  # close() waits for every worker itself
            return
        if code is None and gone:
            # its pipe closes before its exit is reaped: wait for the exit status (off the
            # loop) rather than log none, or kill a worker that is still exiting
            waited = asyncio.get_running_loop().run_in_executor(None, handle.process.join, STOP_TIMEOUT)
            waited.add_done_callback(lambda _: self._log_lost(handle, why))
        else:
            self._log_lost(handle, why)

    def _log_lost(self, handle: _Handle, why: str) -> None:
        code = handle.process.exitcode
        if code is None:  # still running (it stopped answering): given up on
            handle.process.kill()
        if self._closed:
            return
        status = {} if code is None else {"signal": _signal_name(-code)} if code < 0 else {"exit_code": code}
        log.error("probe worker lost; it is started again at the next scrape",
                  extra={"worker": handle.index, "pid": handle.process.pid, "why": why, **status})

    def _send(self, handle: _Handle, message: object) -> None:
        """The messages of one loop iteration (site requests arriving together) go in one
        write at its end; a worker that cannot be written to is lost, which fails its waiters."""
        if not handle.alive:
            raise WorkerGone(f"probe worker {handle.index} is gone")
        if not handle.batch:
            asyncio.get_running_loop().call_soon(self._flush, handle)
        handle.batch.append(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _flush(self, handle: _Handle) -> None:
        messages, handle.batch = handle.batch, []
        if not messages or not handle.alive:
            return
        try:
            write_messages(handle.inbox, messages)
        except OSError as error:
            self._lost(handle, f"cannot be written to ({error})", gone=True)

    async def _ready(self, index: int) -> _Handle:
        """The worker, started again with the current plan if it was lost."""
        handle = self._handles[index]
        if handle is not None and handle.alive:
            return handle
        await self._give(index, self._assignment[index])
        handle = self._handles[index]
        assert handle is not None
        return handle

    # -- scrapes ---------------------------------------------------------------------------

    async def probe(self, shares: Shares, budget: float, *, site: str | None = None, path: str | None = None,
                    sections: bool = True) -> list[Part]:
        """Probe the selection (every target, a site, or a site's path) in the workers that
        own it; a worker that fails to answer by the budget (plus a grace for writing) makes
        its targets' results reason exporter."""
        started = time.monotonic()
        if site is not None:  # a site's /probe: one worker, no gather (it is the per-request cost)
            index = shares.owner.get(site)
            return [] if index is None else [await self._probe_one(shares, index, budget, site, path, sections,
                                                                    started)]
        return list(await asyncio.gather(*(self._probe_one(shares, i, budget, site, path, sections, started)
                                           for i in range(self.count))))

    async def _probe_one(self, shares: Shares, index: int, budget: float, site: str | None, path: str | None,
                         sections: bool, started: float) -> Part:
        targets = shares.select(index, site, path)
        if not targets:
            return Part((), (), time.time(), () if sections else None)
        limit = budget + SETTLE_GRACE + ANSWER_GRACE
        try:
            handle = self._handles[index]
            if handle is None or not handle.alive:
                async with asyncio.timeout(limit):  # a worker that cannot start costs no more
                    handle = await self._ready(index)
            remaining = max(budget - (time.monotonic() - started), 0.05)
            request = next(self._requests)
            waiter: asyncio.Future[Probed] = asyncio.get_running_loop().create_future()
            waiter.add_done_callback(_retrieved)
            handle.waiting[request] = waiter
            self._send(handle, Probe(request, shares.generation, site, path, remaining, sections))
            try:
                async with asyncio.timeout(remaining + SETTLE_GRACE + ANSWER_GRACE):
                    answer = await waiter
            except TimeoutError:
                self._lost(handle, f"gave no answer within {remaining + SETTLE_GRACE + ANSWER_GRACE:.3g}s")
                raise WorkerGone(f"probe worker {index} gave no answer in time") from None
            if answer.error or len(answer.results) != len(targets):
                raise WorkerGone(f"probe worker {index}: {answer.error or 'answered for other targets'}")
        except (WorkerGone, OSError, TimeoutError) as error:
            detail = str(error) or f"probe worker {index} could not be started in {limit:.3g}s"
            failed = _packed(_exporter_failure(detail))  # read only: one for all
            return Part(targets, [failed] * len(targets), time.time(), None)
        return Part(targets, answer.results, answer.finished_at, answer.sections)

    # -- shutdown --------------------------------------------------------------------------

    async def close(self) -> None:
        """Ask every worker to stop (they finish their in-flight probes), then make sure."""
        self._closed = True
        loop = asyncio.get_running_loop()
        for handle in self._handles:
            if handle is not None and handle.alive:
                self._flush(handle)
                try:
                    write_messages(handle.inbox, [pickle.dumps(STOP)])
                except OSError:
                    pass
        for handle in self._handles:
            if handle is None:
                continue
            await loop.run_in_executor(None, handle.process.join, STOP_TIMEOUT)
            if handle.process.is_alive():
                handle.process.kill()
                await loop.run_in_executor(None, handle.process.join, STOP_TIMEOUT)
            handle.alive = False
            try:
                handle.inbox.close()
            except OSError:
                pass
            if handle.listener is not None:
                await loop.run_in_executor(None, handle.listener.join, STOP_TIMEOUT)
        if self._fork_server is not None:
            await loop.run_in_executor(None, self._fork_server.close)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _exit_text(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    return f"killed by {_signal_name(-code)}" if code < 0 else f"exit code {code}"


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A worker lost fails the futures waiting on it, whether or not anyone still awaits them
    (a send that failed before its await): never a 'Future exception was never retrieved'."""
    if not future.cancelled():
        future.exception()


def _exporter_failure(detail: str) -> ProbeResult:
    result = ProbeResult()
    result.fail(Reason.EXPORTER, detail, not_run=NotRun.NO_WORKER)
    return result
