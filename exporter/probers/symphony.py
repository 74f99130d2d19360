"""SirsiDynix Symphony web services: the server answers HTTP at its base URL.

Symphony's web services need a client id and usually a login for anything useful, so the
default check is only that *an* HTTP answer comes back from the base path (any status: a
401 or 404 from Symphony's Tomcat still shows the service listens). A site that has a
request worth checking sets ``request_path`` and the status it expects.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .http import fetch
from .tlsclient import TlsOptions

MAX_BODY = 16 * 1024  # the body is not looked at; read a little so the server is not cut off


class SymphonyOptions(TlsOptions):
    scheme: Literal["http", "https"] | None = None  # default: https on 443 and 8443, else http
    base_path: str = "/"  # e.g. /symws
    request_path: str | None = None  # an extra GET whose status is checked
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    host_header: str | None = None

    @field_validator("base_path", "request_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    def scheme_for(self, port: int) -> str:
        return self.scheme or ("https" if port in (443, 8443) else "http")


async def _get(target: ProbeTarget, result: ProbeResult, options: SymphonyOptions, path: str, *,
               first: bool) -> int:
    https = options.scheme_for(target.port) == "https"
    # The first connection's connect and TLS facts are the ones reported.
    response = await fetch(target, result, options, path, https=https, max_body=MAX_BODY,
                           connect_facts=None if first else ProbeResult())
    return response.status


async def probe_symphony(target: ProbeTarget, result: ProbeResult) -> bool:
    options = target.options
    assert isinstance(options, SymphonyOptions)
    await _get(target, result, options, options.base_path, first=True)  # any HTTP answer will do
    if options.request_path is not None:
        status = await _get(target, result, options, options.request_path, first=False)
        if status not in options.expect_status:
            raise ProbeFailure(Reason.HTTP_STATUS, f"GET {options.request_path} answered {status}, expected "
                                                   f"{', '.join(map(str, options.expect_status))}")
    return True


PROBER = Prober("symphony_api", probe_symphony, SymphonyOptions,
                "SirsiDynix Symphony web services: an HTTP answer, optionally a request's status")
