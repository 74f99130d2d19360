"""SirsiDynix Symphony web services: the server answers HTTP at its base URL.

Symphony's web services need a client id and usually a login for anything useful, so the
default check is only that *an* HTTP answer comes back from the base path (any status: a
401 or 404 from Symphony's Tomcat still shows the service listens). A site that has a
request worth checking sets ``request_path`` and the status it expects.
"""

from __future__ import annotations

from pydantic import Field

from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .http import AbsolutePath, HttpOrHttpsOptions, fetch

MAX_BODY = 16 * 1024  # the body is not looked at; read a little so the server is not cut off


class SymphonyOptions(HttpOrHttpsOptions):
    base_path: AbsolutePath = "/"  # e.g. /symws
    request_path: AbsolutePath | None = None  # an extra GET whose status is checked
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)


async def _get(target: ProbeTarget[SymphonyOptions], result: ProbeResult, path: str, *, first: bool) -> int:
    https = target.options.https_for(target.port)
    response = await fetch(target, result, target.options, path, https=https, max_body=MAX_BODY, first=first)
    return response.status


async def probe_symphony(target: ProbeTarget[SymphonyOptions], result: ProbeResult) -> bool:
    options = target.options
    await _get(target, result, options.base_path, first=True)  # any HTTP answer will do
    if options.request_path is not None:
        status = await _get(target, result, options.request_path, first=False)
        if status not in options.expect_status:
            raise ProbeFailure(Reason.HTTP_STATUS, f"GET {options.request_path} answered {status}, expected "
                                                   f"{', '.join(map(str, options.expect_status))}")
    return True


PROBER = Prober("symphony_api", probe_symphony, SymphonyOptions,
                "SirsiDynix Symphony web services: an HTTP answer, optionally a request's status")
