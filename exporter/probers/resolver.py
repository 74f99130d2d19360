"""Name lookups for probes, kept from starving each other and everything else.

asyncio's ``getaddrinfo`` runs on the event loop's default thread pool, which bcrypt checks
and reloads used as well. Behind a resolver that drops queries each lookup holds a thread
for the resolver's whole retry schedule (glibc: 5 s, twice, per address family), so 500
dead names once made a ``localhost`` path time out and a first login wait 9 s. Here:

- names in the hosts file (``/etc/hosts``, or Windows' own) are answered at once from the
  file, never queued (the config's ``hosts:`` table never reaches this module at all);
- other names go to a pool of ``WORKERS`` threads that serves lookups only;
- a name already being looked up is not looked up again: later probes wait for the same
  answer, so a dead name costs one thread however many scrapes ask for it;
- at most ``MAX_PENDING`` distinct names wait at once; past that a lookup fails at once
  (reason ``dns``) instead of growing the queue.

A probe whose deadline strikes while its name is still being resolved fails with reason
``dns`` (``scrape.run_probe`` sees the step), not ``timeout``: the resolver gave no answer.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import ProbeFailure, Reason

WORKERS = 16
MAX_PENDING = 512
HOSTS_FILE = (Path(os.environ.get("SYSTEMROOT", r"C:\Windows")) / "System32" / "drivers" / "etc" / "hosts"
              if sys.platform == "win32" else Path("/etc/hosts"))
MAX_HOSTS_FILE_BYTES = 1024 * 1024

Found = list[tuple[int, str]]  # (address family, address)


class HostsFile:
    """The hosts file's names (compared without case), read again when it changes."""

    def __init__(self, path: Path = HOSTS_FILE) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, list[str]] = {}

    def addresses(self, host: str) -> list[str]:
        self._refresh()
        return self._names.get(host.lower().rstrip("."), [])

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
        except OSError:
            self._stamp, self._names = None, {}
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        self._stamp, self._names = stamp, self._parse()

    def _parse(self) -> dict[str, list[str]]:
        from ..files import read_bounded

        names: dict[str, list[str]] = {}
        try:
            text = read_bounded(self.path, MAX_HOSTS_FILE_BYTES).decode("utf-8", "replace")
        except OSError:
            return names
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address = fields[0].split("%", 1)[0]
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
            except OSError:
                continue
            for name in fields[1:]:
                found = names.setdefault(name.lower().rstrip("."), [])
                if address not in found:
                    found.append(address)
        return names


class Resolver:
    def __init__(self, *, workers: int = WORKERS, max_pending: int = MAX_PENDING,
                 hosts_file: HostsFile | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="illiad-resolve")
        self._max_pending = max_pending
        self.hosts_file = hosts_file or HostsFile()
        self._pending: dict[tuple[str, int], asyncio.Future[Found]] = {}
        self.lookups = 0  # lookups actually sent to the system resolver (tests)

    def __len__(self) -> int:
        return len(self._pending)

    async def lookup(self, host: str, port: int) -> Found:
        """The addresses of ``host``; ProbeFailure(dns) when it has none, or too many other
        names are waiting."""
        from_file = self.hosts_file.addresses(host)
        if from_file:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in from_file]
        key = (host.lower().rstrip("."), port)
        shared = self._pending.get(key)
        if shared is None:
            if len(self._pending) >= self._max_pending:
                raise ProbeFailure(Reason.DNS, f"cannot resolve {host}: {len(self._pending)} other names are "
                                               "waiting for the resolver")
            self.lookups += 1
            shared = asyncio.get_running_loop().run_in_executor(self._executor, _getaddrinfo, host, port)
            self._pending[key] = shared
            shared.add_done_callback(functools.partial(self._forget, key))
        try:  # shielded: a probe that gives up does not cancel the lookup the others wait for
            return await asyncio.shield(shared)
        except ProbeFailure as failure:  # each probe its own exception, not the one shared
            raise ProbeFailure(failure.reason, failure.detail) from None

    def _forget(self, key: tuple[str, int], done: asyncio.Future[Found]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved: a lookup nobody waits for any more is not an error


def _getaddrinfo(host: str, port: int) -> Found:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ProbeFailure(Reason.DNS, f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:
        raise ProbeFailure(Reason.DNS, f"cannot resolve {host}: not a valid name") from None
    return [(info[0], str(info[4][0])) for info in infos]


RESOLVER = Resolver()
