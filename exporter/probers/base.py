"""The contract every prober keeps.

A prober is ``async def probe(target: ProbeTarget[ItsOptions], result: ProbeResult) -> bool``,
declared with its options class in a :class:`Prober` table entry (the config validates a
path's options against that class, so ``target.options`` is always of it). It
records what it measured into ``result`` (phases, TLS facts, info facts) and returns whether
the path works. To fail with a reason it raises :class:`ProbeFailure`; the runner turns a
timeout into reason ``timeout`` and keeps whatever the prober had recorded by then. A
prober never knows about metric names or HTTP serving.
"""

from __future__ import annotations

import enum
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from ..catalog import Expect, Require
from ..configfile import StrictModel


class Reason(enum.StrEnum):
    """Why a probe failed: one word an operator can act on."""

    DNS = "dns"  # the name did not resolve
    REFUSED = "refused"  # TCP RST: nothing listens, or a firewall rejects
    TIMEOUT = "timeout"  # no answer in time: a firewall drops, or the service hangs
    UNREACHABLE = "unreachable"  # no route to the network or host
    NETWORK = "network"  # any other socket error (reset mid-exchange, ...)
    TLS = "tls"  # handshake or certificate verification failed
    PROTOCOL = "protocol"  # something answered, but not the expected service
    HTTP_STATUS = "http_status"  # HTTP answered with an unexpected status
    BROWSER = "browser"  # SQL Server Browser gave no port for the named instance
    AUTH = "auth"  # a configured bind/login was refused
    ERROR = "error"  # a bug in the exporter; logged with its traceback
    # the exporter itself could not run the probe (no free probe slot before the deadline,
    # no socket or descriptor): the exporter's owner acts, not the library's network team
    EXPORTER = "exporter"


ALL_REASONS: tuple[str, ...] = tuple(r.value for r in Reason)
# Reasons that say nothing about the path, only about the exporter: a path verdict that
# depends on a target failing with one of these is unknown (verdict.py), never "closed".
EXPORTER_SIDE_REASONS: frozenset[Reason] = frozenset({Reason.ERROR, Reason.EXPORTER})


class NotRun(enum.StrEnum):
    """Why the exporter could not run a probe (reason ``exporter``); the self-metric's cause."""

    NO_SLOT = "no_slot"  # every probe slot (exporter.max_concurrency) was busy until the deadline
    NO_SOCKET = "no_socket"  # the process or the system had no descriptor or buffer for a socket
    NO_WORKER = "no_worker"  # the probe worker process owning the target exited or did not answer


class ProbeFailure(Exception):
    """Raised by a prober to end the probe with a reason and a one-line detail.

    Made while handling a lower-level error (a reset, a TLS alert), it replaces that error:
    the error's frames are released at once (see :func:`release_frames`)."""

    def __init__(self, reason: Reason, detail: str = "", *, not_run: NotRun | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        # with reason exporter: why the probe could not run (a socket error mapped to
        # reason exporter is always a missing descriptor or buffer: net.reason_for)
        self.not_run = not_run or (NotRun.NO_SOCKET if reason is Reason.EXPORTER else None)
        replaced = sys.exc_info()[1]
        if replaced is not None and not isinstance(replaced, ProbeFailure):
            release_frames(replaced)


def release_frames(exc: BaseException) -> None:
    """Let a dead connection go now rather than at the next cyclic garbage collection.

    A caught exception's traceback holds the finished frames it passed through, and those
    frames hold the futures and tasks that hold the exception: reference cycles that keep an
    asyncio SSL protocol's 256 KiB read buffer, or a stream's unread garbage, alive until
    the cycle collector runs. Against targets that reset or flood, hundreds of them piled up
    between collections and the allocator kept that high-water mark. Clearing the frames'
    locals breaks the cycles, so reference counting frees the connection at once."""
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # a frame still running is skipped
        current.__traceback__ = None
        pending += (current.__cause__, current.__context__)


class ProberOptions(StrictModel):
    """Base of every prober's options; a path's extra config keys are validated against it."""


OptionsT = TypeVar("OptionsT", bound=ProberOptions)


@dataclass(frozen=True, slots=True)
class ProbeTarget(Generic[OptionsT]):
    """One concrete probe: a path of a site, from this vantage, to one host and port."""

    site: str
    path: str
    vantage: str
    host: str
    port: int
    prober: str
    expect: Expect
    timeout: float
    options: OptionsT  # of the class its prober declares
    ip_protocol: str = "ip4"  # preferred family: ip4 or ip6
    ip_fallback: bool = True  # try the other family when the preferred has no address
    source_address: str | None = None
    # addresses the config pins for this host (its hosts: table); skips name resolution
    static_addresses: tuple[str, ...] = ()
    system_resolver: bool = True  # False: a host missing from the hosts table fails as dns
    require: Require = Require.ALL  # of the path: every target, or any one, must meet expect

    @property
    def labels(self) -> tuple[str, str, str, str, str, str]:
        """Label values in the order of ``PATH_LABELS`` (metrics module)."""
        return (self.site, self.vantage, self.path, self.host, str(self.port), self.expect.value)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.site, self.path, self.host, self.port)

    def ends_by(self, started: float, deadline: float) -> float:
        """When a probe of this target begun at ``started`` must end: at its own timeout or
        at the scrape's ``deadline``, whichever comes first (both on one clock)."""
        return min(deadline, started + self.timeout)


@dataclass(frozen=True, slots=True)
class TlsFacts:
    version: str  # "TLSv1.3"
    cert_not_after: float  # earliest expiry in the presented chain, unix seconds
    verified: bool
    subject: str = ""
    issuer: str = ""


@dataclass(frozen=True, slots=True)
class InfoFact:
    """A ``illiad_<name>_info`` gauge (value 1) with these extra labels, e.g. a server's version."""

    name: str
    labels: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class ProbeResult:
    up: bool = False
    reason: Reason | None = None
    detail: str = ""
    # resolve, connect, tls, handshake: seconds
    phases: dict[str, float] = field(default_factory=dict)
    address: str | None = None  # the address actually connected to
    port: int | None = None  # the port actually probed (may differ: SQL Browser)
    tls: TlsFacts | None = None
    infos: list[InfoFact] = field(default_factory=list)
    duration: float = 0.0
    not_run: NotRun | None = None  # with reason exporter: why the exporter could not run it
    # the step under way when a deadline struck ("resolve" turns a timeout into reason dns)
    step: str = ""
    # What the prober saw on the way, for explaining a failure; never a metric. Keys:
    # "source" (local address of the connection), "addresses" (destinations tried, comma-
    # separated), "tls_issuer" and "tls_subject" (of a chain that failed verification).
    facts: dict[str, str] = field(default_factory=dict)

    PHASES: ClassVar[tuple[str, ...]] = ("resolve", "connect", "tls", "handshake")

    @property
    def connect_latency(self) -> float | None:
        """TCP connect time; None when no connection was made."""
        return self.phases.get("connect") if self.address is not None else None

    @property
    def observed(self) -> Expect:
        """Whether the path was seen open. A listener that answered is open even when its
        protocol check failed: for a must-be-closed path that is what matters."""
        if self.up or self.address is not None:
            return Expect.OPEN
        return Expect.CLOSED

    def add_info(self, name: str, **labels: str) -> None:
        self.infos.append(InfoFact(name, tuple(sorted(labels.items()))))

    @contextmanager
    def timed(self, phase: str, *, add: bool = False, keep_on_failure: bool = False) -> Iterator[None]:
        """Time the block as ``phase`` when it completes (``add``: on top of the phase's time
        so far). ``keep_on_failure``: also when it ends in a ProbeFailure, for the network
        steps whose time tells a drop from a refusal; never when the deadline cancels it."""
        started = time.perf_counter()
        try:
            yield
        except ProbeFailure:
            if keep_on_failure:
                self._record(phase, time.perf_counter() - started, add)
            raise
        self._record(phase, time.perf_counter() - started, add)

    def _record(self, phase: str, seconds: float, add: bool) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds if add else seconds

    def fail(self, reason: Reason, detail: str = "", *, not_run: NotRun | None = None) -> None:
        self.up = False
        self.reason = reason
        self.detail = detail
        self.not_run = not_run


@dataclass(frozen=True, slots=True)
class Prober(Generic[OptionsT]):
    """A table entry: the config word, the function, and the class of its options."""

    name: str
    probe: Callable[[ProbeTarget[OptionsT], ProbeResult], Awaitable[bool]]
    options: type[OptionsT]
    description: str = ""
