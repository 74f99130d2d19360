"""Metrics answers over HTTP: the format and the content coding a client asks for, and a
body sent as it is written.

The path metrics of a big scrape (25 MB of text at 10,000 paths with every failure reason)
are written in chunks (metrics.write_exposition); each chunk is encoded, compressed when the
client accepts gzip (Prometheus always does) and handed to aiohttp before the next is
written, so neither the whole text nor the whole compressed body is ever held, and the
event loop serves probes and other requests between chunks. The probe workers' parts come
compressed already (deflate.py): they are sent as they are, or decompressed one section at
a time for a client that does not take gzip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .deflate import Deflated, gzip_body, plain_body
from .metrics import FailureReasons, ProbeCollector, Sections, fast_format, join_sections, write_exposition
from .scrape import Outcome

# Fewer paths than this are answered in one piece, with a Content-Length (a site's
# /probe): chunks and a streaming compressor cost more than they save on a small answer.
STREAM_FROM_PATHS = 500


class NotAcceptable(Exception):
    """The client refuses both gzip and the uncompressed body."""


def _qualities(accept_encoding: str) -> dict[str, float]:
    """coding -> q of an Accept-Encoding header (RFC 9110 12.5.3); a malformed q drops its entry."""
    qualities: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *params = (part.strip() for part in element.split(";"))
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            qualities[coding.lower()] = q
    return qualities


def wants_gzip(accept_encoding: str | None) -> bool:
    """Whether to answer with gzip: when the client accepts it at least as gladly as the
    uncompressed body. Raises NotAcceptable when it accepts neither."""
    if not accept_encoding or not accept_encoding.strip():
        return False
    qualities = _qualities(accept_encoding)
    anything = qualities.get("*")
    gzip = qualities.get("gzip", qualities.get("x-gzip", anything if anything is not None else 0.0))
    identity = qualities.get("identity", anything if anything is not None else 1.0)
    if gzip > 0 and gzip >= identity:
        return True
    if identity > 0:
        return False
    raise NotAcceptable(f"no acceptable content coding in {accept_encoding[:200]!r}; this server offers gzip "
                        "and identity")


def not_acceptable(error: NotAcceptable) -> web.Response:
    return web.Response(status=406, text=f"{error}\n")


Piece = bytes | str | Deflated


def _body(chunks: Iterable[Piece], gzip: bool) -> Iterator[bytes]:
    pieces = (chunk.encode() if isinstance(chunk, str) else chunk for chunk in chunks)
    return gzip_body(pieces) if gzip else plain_body(pieces)


async def _stream(chunks: Iterable[Piece], gzip: bool) -> AsyncIterator[bytes]:
    for data in _body(chunks, gzip):
        if data:
            yield data
            await asyncio.sleep(0)  # probes still running and other requests get the loop


def _response(chunks: Iterable[Piece], content_type: str, gzip: bool, *, stream: bool) -> web.Response:
    headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    if stream:
        return web.Response(body=_stream(chunks, gzip), headers=headers)
    return web.Response(body=b"".join(_body(chunks, gzip)), headers=headers)  # one compress call for all its text


def registry_response(request: web.Request, *collectors: Collector) -> web.Response:
    """These collectors through prometheus_client, in the format and coding negotiated."""
    try:
        gzip = wants_gzip(request.headers.get("Accept-Encoding"))
    except NotAcceptable as error:
        return not_acceptable(error)
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return _response([encoder(registry)], content_type, gzip, stream=False)


def written_fast(request: web.Request) -> bool:
    """Whether the answer to ``request`` is in a format write_exposition() writes (and the
    probe workers write for their share), not prometheus_client's way."""
    return fast_format(choose_encoder(request.headers.get("Accept", ""))[1]) is not None


def outcomes_response(
    request: web.Request, outcomes: Sequence[Outcome], *, required: frozenset[tuple[str, str]],
    failure_reasons: FailureReasons, registry: CollectorRegistry | None = None, parts: Sequence[Sections] | None = None,
) -> web.Response:
    """The path metrics of ``outcomes`` (then the registry's, when given): written directly
    and in chunks in the text and OpenMetrics formats (joined from the probe workers'
    ``parts`` when they wrote them), through prometheus_client for any other format a
    client negotiates."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    kind = fast_format(content_type)
    if kind is None:
        collectors: list[Collector] = [ProbeCollector(outcomes, required=required, failure_reasons=failure_reasons)]
        return registry_response(request, *collectors, *([registry] if registry is not None else []))
    try:
        gzip = wants_gzip(request.headers.get("Accept-Encoding"))
    except NotAcceptable as error:
        return not_acceptable(error)

    def chunks() -> Iterator[Piece]:
        if parts is not None:
            yield from join_sections(parts, openmetrics=kind == "openmetrics")
        else:
            yield from write_exposition(outcomes, required=required, failure_reasons=failure_reasons,
                                        openmetrics=kind == "openmetrics")
        if registry is not None:
            yield encoder(registry)  # ends with the OpenMetrics "# EOF" where there is one
        elif kind == "openmetrics":
            yield "# EOF\n"

    return _response(chunks(), content_type, gzip, stream=len(outcomes) >= STREAM_FROM_PATHS)
