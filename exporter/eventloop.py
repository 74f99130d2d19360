"""Which event loop runs the exporter: uvloop when it is installed (``auto``) or asked for,
else asyncio's own. The serving process and each probe worker start theirs here."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

EVENT_LOOPS = ("auto", "uvloop", "asyncio")  # --event-loop

T = TypeVar("T")


def run_on_loop(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """Run ``main`` on uvloop when it is installed (``auto``) or asked for, else on asyncio's loop."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise SystemExit("error: --event-loop uvloop, but uvloop is not installed "
                                 "(the [fast] extra, or pip install uvloop)") from None
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)


def import_loop(event_loop: str = "auto") -> None:
    """Import the event loop ``event_loop`` names, if it is installed, without starting it:
    a process about to fork its probe workers' fork server, whose workers then share the
    loop's pages instead of each importing it (uvloop: 3-4 MiB a worker, bench/run.py)."""
    if event_loop != "asyncio":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pass  # run_on_loop says so, if it was asked for
