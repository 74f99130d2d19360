"""The HTTP face of the exporter (aiohttp). Thin: parse the request, ask the state, render."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Sequence

from aiohttp import web

from . import __version__, statuspage
from .adhoc import ProbeRequestRefused, adhoc_target, check_parameters
from .exposition import outcomes_response, registry_response, written_fast
from .frontdoor import DoorLimits, FrontDoor
from .listen import ListenAddress
from .metrics import ProbeCollector
from .state import ExporterState
from .webconfig import WebConfig

log = logging.getLogger("illiad_exporter.server")

STATE_KEY = web.AppKey("state", ExporterState)
WEB_CONFIG_KEY = web.AppKey("web_config", WebConfig)
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
# The status page needs nothing but its own inline CSS.
STATUS_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def scrape_timeout(request: web.Request) -> float | None:
    """Prometheus' scrape timeout from its header, in seconds; None when it sent none or
    nothing usable ("nan", "inf", "-1", text): the config's default then applies."""
    header = request.headers.get(SCRAPE_TIMEOUT_HEADER)
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


async def handle_metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    snapshot = state.snapshot
    assert snapshot is not None
    if not snapshot.config.exporter.probe_on_metrics:
        return registry_response(request, state.registry)
    started = time.perf_counter()
    scrape = await state.scrape(snapshot, state.budget(scrape_timeout(request)), sections=written_fast(request))
    state.metrics.scrape_duration.set(time.perf_counter() - started)
    return outcomes_response(request, scrape.outcomes, parts=scrape.parts, required=snapshot.plan.required,
                             failure_reasons=snapshot.config.exporter.failure_reasons, registry=state.registry)


async def handle_probe(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    snapshot = state.snapshot
    assert snapshot is not None
    query = request.query
    budget = state.budget(scrape_timeout(request))
    try:
        check_parameters([key for key, _ in query.items()])
        if "target" in query:  # not a configured path: only what probe_allow permits
            if "site" in query or "path" in query:
                raise ProbeRequestRefused(400, "give site (and path) or target, not both")
            target = await adhoc_target(snapshot.config, state.vantage.value, query["target"],
                                        query.get("prober", "tcp"))
            outcomes = await state.probe([target], budget, record=False)
            return registry_response(request, ProbeCollector(
                outcomes, failure_reasons=snapshot.config.exporter.failure_reasons))
        if "prober" in query:
            raise ProbeRequestRefused(400, "prober goes with target=; a configured path uses its configured prober")
    except ProbeRequestRefused as refused:
        return web.Response(status=refused.status, text=refused.reason + "\n")
    site = query.get("site", "")
    if not site:
        return web.Response(status=400, text="missing parameter: site\n")
    targets = snapshot.plan.by_site.get(site)
    if targets is None:
        return web.Response(status=400, text=f"unknown site: {site[:100]!r}\n")
    path = query.get("path")
    if path is not None and not any(t.path == path for t in targets):
        return web.Response(
            status=400, text=f"site {site} has no path {path[:100]!r} probed from {state.vantage.value}\n"
        )
    scrape = await state.scrape(snapshot, budget, site=site, path=path, record=path is None,
                                sections=written_fast(request))
    return outcomes_response(request, scrape.outcomes, parts=scrape.parts, required=snapshot.plan.required,
                             failure_reasons=snapshot.config.exporter.failure_reasons)


async def handle_healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def handle_ready(request: web.Request) -> web.Response:
    if request.app[STATE_KEY].snapshot is None:
        return web.Response(status=503, text="Not ready: no config loaded\n")
    return web.Response(text="Ready\n")


async def handle_reload(request: web.Request) -> web.Response:
    web_error = reload_web_config(request.app.get(WEB_CONFIG_KEY))
    error = await request.app[STATE_KEY].reload()
    if error is not None:
        return web.Response(status=500, text=f"failed to reload config, keeping the running one:\n{error}\n")
    if web_error is not None:
        return web.Response(status=500, text=f"failed to reload the web config, keeping the running one:\n{web_error}\n")
    return web.Response(text="config reloaded\n")


def reload_web_config(web_config: WebConfig | None) -> Exception | None:
    if web_config is None:
        return None
    error = web_config.reload()
    if error is not None:
        log.error("web config reload failed, keeping the running one", extra={"errors": str(error)})
    else:
        log.info("web config reloaded", extra={"file": web_config.file})
    return error


async def handle_index(request: web.Request) -> web.Response:
    """The status page: the latest results, never a new probe (see statuspage)."""
    state = request.app[STATE_KEY]
    snapshot = state.snapshot
    assert snapshot is not None
    page = statuspage.render(
        targets_by_site=snapshot.plan.by_site, outcomes_by_site=state.last_outcomes, vantage=state.vantage.value,
        version=__version__, now=time.time(), reload_error=state.last_reload_error,
        required=snapshot.plan.required, impact=snapshot.plan.impact,
        explanations=state.explanations(),
    )
    return web.Response(text=page, content_type="text/html", headers={"Content-Security-Policy": STATUS_PAGE_CSP})


def build_app(state: ExporterState, *, web_config: WebConfig | None = None,
              front_door: FrontDoor | None = None) -> web.Application:
    # the front door sees every request first (a request waiting for auth is one being served);
    # the web config's auth, rate limit and headers wrap every endpoint, health included
    middlewares = [front_door.middleware()] if front_door is not None else []
    if web_config is not None:
        middlewares.append(web_config.middleware())
    app = web.Application(middlewares=middlewares)
    app[STATE_KEY] = state
    if web_config is not None:
        app[WEB_CONFIG_KEY] = web_config
    app.router.add_get("/", handle_index)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/probe", handle_probe)
    app.router.add_get("/-/healthy", handle_healthy)
    app.router.add_get("/-/ready", handle_ready)
    app.router.add_post("/-/reload", handle_reload)
    return app


class CannotListen(Exception):
    """One of the listen addresses could not be bound; the message names which."""

    def __init__(self, address: ListenAddress, error: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")
        self.address = address


async def serve(state: ExporterState, listen_addresses: Sequence[ListenAddress], *,
                started: asyncio.Event | None = None, web_config: WebConfig | None = None) -> None:
    """Serve on every address until SIGTERM/SIGINT (or Ctrl-C on Windows); SIGHUP reloads where it exists."""
    door = FrontDoor(lambda: door_limits(state))
    runner = web.AppRunner(build_app(state, web_config=web_config, front_door=door), handle_signals=False,
                           access_log=None)
    await runner.setup()
    assert runner.server is not None
    listeners: list[asyncio.AbstractServer] = []
    try:
        for address in listen_addresses:  # each one served, as exporter-toolkit does with a repeated flag
            try:
                listeners.append(await door.listen(runner.server, address.host, address.port,
                                                   ssl_context=web_config.ssl_context if web_config else None))
            except OSError as exc:
                raise CannotListen(address, exc) from exc
            log.info("listening", extra={"address": str(address), "vantage": state.vantage.value,
                                         "version": __version__,
                                         "tls": web_config is not None and web_config.ssl_context is not None,
                                         "basic_auth": web_config is not None and web_config.auth is not None})
    except BaseException:
        await _stop_serving(listeners, door, runner)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        reload_web_config(web_config)
        task = loop.create_task(state.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for name, action in (("SIGTERM", stop.set), ("SIGINT", stop.set), ("SIGBREAK", stop.set), ("SIGHUP", reload)):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            loop.add_signal_handler(sig, action)
        except (NotImplementedError, RuntimeError):
            # Windows: no loop signal handlers, but signal.signal still sees Ctrl-C and
            # Ctrl-Break; hand them to the loop so shutdown is as graceful as on POSIX.
            if name != "SIGHUP":
                try:
                    signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
                except ValueError:  # not the main thread (embedded use): the caller stops us
                    pass
    if started is not None:
        started.set()
    try:
        await stop.wait()
        log.info("shutting down: no new connections; in-flight scrapes finish by their deadline")
        if web_config is not None:
            web_config.close()  # logins waiting for bcrypt are answered 503 now
    finally:
        # stop listening, then aiohttp waits for running handlers; every scrape is bounded
        # by its deadline, so this ends by the longest probe timeout.
        await _stop_serving(listeners, door, runner)
        log.info("stopped")


async def _stop_serving(listeners: Sequence[asyncio.AbstractServer], door: FrontDoor, runner: web.AppRunner) -> None:
    for listener in listeners:
        listener.close()
    await door.close()
    await runner.cleanup()


def door_limits(state: ExporterState) -> DoorLimits:
    """The front door's limits from the running config (a reload changes them)."""
    assert state.snapshot is not None
    settings = state.snapshot.config.exporter
    return DoorLimits(settings.max_connections, settings.header_timeout, settings.idle_timeout)
