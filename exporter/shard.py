"""Scale-out: split a consortium's sites across n exporter replicas.

Each replica (a StatefulSet pod, say) is given ``--shard i/n`` and probes only the sites it
owns. Ownership is rendezvous (highest-random-weight) hashing of the site name: every
replica computes the same owner for a site without talking to the others, and when a
replica is added only the sites the new replica wins move, about 1/(n+1) of them, all to the
new replica. The hash is BLAKE2b, never Python's ``hash()``, so it is the same in every
process and on every platform.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_MAX_REPLICAS = 10_000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica ``index`` (0-based, as a StatefulSet ordinal) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= _MAX_REPLICAS:
            raise ValueError(f"the shard count must be between 1 and {_MAX_REPLICAS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"the shard index must be between 0 and {self.count - 1} (0-based), got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, site: str) -> bool:
        return owner(site, self.count) == self.index


def parse_shard(value: Any) -> Shard:
    """``"2/5"`` -> Shard(2, 5): replica 2 of 5, counted from 0."""
    if isinstance(value, Shard):
        return value
    match = _SHARD.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a shard as INDEX/COUNT counted from 0, such as 0/3, got {value!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def _weight(site: str, replica: int) -> int:
    digest = hashlib.blake2b(f"{replica}\x00{site}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(site: str, count: int) -> int:
    """The replica (0-based) that owns ``site`` among ``count`` replicas."""
    if count == 1:
        return 0
    return max(range(count), key=lambda replica: _weight(site, replica))


def select(items: Iterable[T], shard: Shard | None, *, name: Any = lambda item: item) -> list[T]:
    """The items whose ``name(item)`` this shard owns (all of them when ``shard`` is None)."""
    if shard is None or shard.count == 1:
        return list(items)
    return [item for item in items if shard.owns(name(item))]
