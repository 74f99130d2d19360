"""What every request to the exporter passes when a web config is given: the rate limit,
the client certificate's allowed names, basic auth and the configured security headers.
webconfig.py reads the file and builds these checks; this module knows nothing of the file.

Basic auth: bcrypt runs on a thread of its own and its results are cached (least recently
used first out) by a hash of user, stored hash and password; an unknown user is checked
against a fixed hash so timing does not tell which users exist; beyond 8 unknown passwords
waiting for bcrypt, a request with another unknown one is answered 429 at once. When the
server stops, the logins still waiting are answered 503 at once, and a check running in
bcrypt's C code does not keep the process alive (the thread is a daemon).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

# bcrypt of a password nobody has: checked for unknown users so they cost the same time
_DECOY_HASH = b"$2b$10$MMCr8ttChrB8yt3h.CH8a.p4EoW1zqxDELD/YUMcH.Z3BjcuNCK0a"


class AccessRules(Protocol):
    """What the checks read on every request (webconfig.WebConfig): read per request, so a
    reload applies at once."""

    @property
    def headers(self) -> dict[str, str]: ...  # added to every answer
    @property
    def client_allowed_sans(self) -> list[str] | None: ...  # None: any verified certificate
    @property
    def auth(self) -> BasicAuth | None: ...
    @property
    def limiter(self) -> RateLimiter | None: ...


def access_middleware(config: AccessRules) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware that checks every request against ``config``, read per request so a
    reload applies at once."""

    @web.middleware
    async def web_config_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        headers = config.headers
        allowed_sans = config.client_allowed_sans
        if config.limiter is not None and not config.limiter.allow():
            return _with(web.Response(status=429, text="Too Many Requests\n"), headers)
        if allowed_sans is not None and not _client_san_allowed(request, allowed_sans):
            return _with(web.Response(status=403, text="Forbidden: client certificate not allowed\n"), headers)
        if config.auth is not None:
            try:
                verdict = await config.auth.check(request.headers.get("Authorization", ""))
            except ShuttingDown:
                response = web.Response(status=503, text="Service Unavailable: shutting down\n",
                                        headers={"Connection": "close"})
                return _with(response, headers)
            if verdict is None:  # too many unknown passwords already waiting for bcrypt
                response = web.Response(status=429, text="Too Many Requests: too many logins being checked\n",
                                        headers={"Retry-After": "1"})
                return _with(response, headers)
            if not verdict:
                response = web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})
                return _with(response, headers)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405: headers on those too
            return _with(exc, headers)
        return _with(response, headers)

    return web_config_middleware


def _with(response: web.StreamResponse, headers: dict[str, str]) -> web.StreamResponse:
    for name, value in headers.items():
        response.headers[name] = value
    return response


def _client_san_allowed(request: web.Request, allowed: list[str]) -> bool:
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    if not peer:
        return False
    sans = {value for kind, value in peer.get("subjectAltName", ()) if kind in ("DNS", "IP Address", "email", "URI")}
    return any(san in sans for san in allowed)


class BasicAuth:
    """bcrypt-checked basic auth with the toolkit's cache: a result is remembered by a hash
    of (user, stored hash, password), so a scrape every 15 s costs one bcrypt, not one each.

    The cache is least-recently-used: every scrape refreshes the right password's entry, so a
    stream of new wrong guesses (each a new entry) cannot push it out. bcrypt runs on its own
    one-thread executor (never the loop's default pool, which name lookups and reloads would
    share) and at most ``max_waiting`` unknown passwords wait for it: beyond that a request
    with an unknown password is answered 429 at once (check returns None), so hundreds of
    guessers cannot queue work in front of the real scraper, whose password is cached."""

    def __init__(self, users: dict[str, str], *, checks: PasswordChecks | None = None, cache_size: int = 1024,
                 max_waiting: int = 8) -> None:
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        self.checks = checks if checks is not None else PasswordChecks()
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._max_waiting = max_waiting
        self._waiting = 0
        self.bcrypt_checks = 0  # how many times bcrypt actually ran (tests, benchmarks)

    async def check(self, authorization: str) -> bool | None:
        """True: a known user's right password; False: anything else; None: not checked now
        (too many unknown passwords already waiting for bcrypt). ShuttingDown: the server
        stops before bcrypt could check it."""
        credentials = _parse_basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        known = user in self.users
        hashed = self.users.get(user, _DECOY_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password))).digest()
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)  # used: the last to be evicted
            return known and cached
        if self._waiting >= self._max_waiting:
            return None
        self._waiting += 1
        try:
            self.bcrypt_checks += 1
            cached = await self.checks.verify(password, hashed)
        finally:
            self._waiting -= 1
        self._cache[key] = cached
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # the least recently used
        return known and cached


class ShuttingDown(Exception):
    """The server stops: a login still waiting for bcrypt is not checked (answered 503)."""


class PasswordChecks:
    """The bcrypt checks of one server (one web config, across its reloads), run one at a
    time by the process's bcrypt thread; :meth:`close` answers every login still waiting
    (ShuttingDown) and refuses new ones, so a stopping server waits for no check."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Future[bool]] = set()
        self.closed = False

    async def verify(self, password: bytes, hashed: bytes) -> bool:
        if self.closed:
            raise ShuttingDown
        future = _BCRYPT_THREAD.submit(password, hashed)
        self._waiting.add(future)
        try:
            return await future
        finally:
            self._waiting.discard(future)

    def close(self) -> None:
        self.closed = True
        for future in self._waiting:
            if not future.done():
                future.set_exception(ShuttingDown())


class _BcryptThread:
    """bcrypt is CPU: one check at a time, like the toolkit, on a thread of its own (never
    the loop's default pool, which name lookups and reloads share).

    A daemon thread, not a ThreadPoolExecutor: the interpreter joins an executor's threads
    at exit, and a check cannot be interrupted once bcrypt's C code runs, so a stopped
    server stayed alive until it ended (with a cost-31 hash, hours at 100% CPU). A daemon
    ends with the process. A check whose login is no longer waiting (answered at shutdown,
    or its request cancelled) is skipped rather than run."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool], bytes, bytes]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, password: bytes, hashed: bytes) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use, or in a forked child
                self._thread = threading.Thread(target=self._run, name="illiad-bcrypt", daemon=True)
                self._thread.start()
        self._jobs.put((loop, future, password, hashed))
        return future

    def _run(self) -> None:
        while True:
            loop, future, password, hashed = self._jobs.get()
            if future.done():  # read off the loop's thread: at worst one check runs for nobody
                continue
            ok = _bcrypt_ok(password, hashed)
            try:
                loop.call_soon_threadsafe(_settle, future, ok)
            except RuntimeError:  # its loop is closed
                pass


def _settle(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


_BCRYPT_THREAD = _BcryptThread()


def _bcrypt_ok(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


def _parse_basic(header: str) -> tuple[str, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class RateLimiter:
    """A token bucket: ``burst`` requests, one more every ``interval`` seconds."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) / self.interval)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
