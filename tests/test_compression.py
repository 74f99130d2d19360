"""gzip on /metrics and /probe: given when the client asks for it (as Prometheus always
does), never when it does not, and the negotiation follows Accept-Encoding's q-values."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from illiad_exporter.catalog import Role
from illiad_exporter.exposition import NotAcceptable, wants_gzip

from .test_server import running, value, write_config

OPENMETRICS = "application/openmetrics-text;version=1.0.0"


@pytest.mark.parametrize(
    ("accept_encoding", "gzip_wanted"),
    [
        (None, False),  # no header: the body as it is
        ("", False),
        ("gzip", True),  # what Prometheus sends
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("br, deflate", False),  # only codings this server does not offer
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),  # refused by name: the wildcard does not bring it back
        ("*;q=0, identity", False),
        ("gzip;q=0.5, identity", False),  # the uncompressed body preferred
        ("gzip;q=0.5, identity;q=0.5", True),  # a tie goes to gzip
        ("identity;q=0, gzip", True),
        ("identity;q=0, *", True),
        ("gzip;q=banana, identity", False),  # a malformed q drops its element
    ],
)
def test_gzip_is_chosen_by_accept_encoding(accept_encoding: str | None, gzip_wanted: bool) -> None:
    assert wants_gzip(accept_encoding) is gzip_wanted


@pytest.mark.parametrize("accept_encoding", ["identity;q=0", "*;q=0", "br, identity;q=0", "gzip;q=0, identity;q=0"])
def test_refusing_both_gzip_and_identity_is_not_acceptable(accept_encoding: str) -> None:
    with pytest.raises(NotAcceptable, match="offers gzip and identity"):
        wants_gzip(accept_encoding)


def _series(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return [(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples]


async def _raw_get(url: str, accept_encoding: str | None, accept: str = "") -> tuple[int, dict[str, str], bytes]:
    """GET without the client's own Accept-Encoding and without decompressing the answer."""
    headers = {"Accept": accept} if accept else {}
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as session:
        async with session.get(url, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize("endpoint", ["/metrics", "/probe?site=lib"])
def test_metrics_and_probe_answer_gzip_only_when_asked(tmp_path, silent_port, refusing_port, endpoint: str) -> None:
    async def scenario() -> None:
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        async with running(config, Role.STAFF_CLIENT) as (url, _):
            status, headers, plain = await _raw_get(url + endpoint, None)
            assert status == 200 and "Content-Encoding" not in headers
            assert value(plain.decode(), "illiad_port_up", path="web_https") == 0.0

            status, headers, packed = await _raw_get(url + endpoint, "gzip")
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            assert headers["Vary"] == "Accept-Encoding"
            text = gzip.decompress(packed).decode()
            assert value(text, "illiad_port_up", path="web_https") == 0.0
            assert value(text, "illiad_probe_failure_reason", path="web_https", reason="refused") == 1.0
            assert len(packed) < len(plain)
            assert _series(text) == _series(plain.decode())  # the same series either way

            status, headers, refused = await _raw_get(url + endpoint, "gzip;q=0")
            assert status == 200 and "Content-Encoding" not in headers
            assert value(refused.decode(), "illiad_port_up", path="web_https") == 0.0

            status, _, body = await _raw_get(url + endpoint, "identity;q=0")
            assert status == 406
            assert b"offers gzip and identity" in body

    asyncio.run(scenario())


def test_openmetrics_is_compressed_too_and_ends_with_eof(tmp_path, silent_port, refusing_port) -> None:
    async def scenario() -> None:
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        async with running(config, Role.STAFF_CLIENT) as (url, _):
            status, headers, packed = await _raw_get(url + "/metrics", "gzip", accept=OPENMETRICS)
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            assert headers["Content-Type"].startswith("application/openmetrics-text")
            text = gzip.decompress(packed).decode()
            assert text.endswith("# EOF\n") and text.count("# EOF") == 1
            assert "illiad_exporter_build_info{" in text

    asyncio.run(scenario())


def test_the_exporters_own_metrics_are_compressed_when_metrics_probes_nothing(tmp_path, silent_port,
                                                                               refusing_port) -> None:
    async def scenario() -> None:
        config = write_config(tmp_path / "c.yml", sql_port=silent_port, web_port=refusing_port)
        config.write_text("exporter: {probe_on_metrics: false}\n" + config.read_text())
        async with running(config, Role.STAFF_CLIENT) as (url, _):
            status, headers, packed = await _raw_get(url + "/metrics", "gzip")
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(packed).decode()
            assert value(text, "illiad_exporter_build_info") == 1.0
            assert "illiad_port_up" not in text

    asyncio.run(scenario())


def test_a_big_answer_is_streamed_in_chunks_and_a_small_one_sent_whole(tmp_path, refusing_port) -> None:
    """600 paths: chunked transfer, no Content-Length, and still one gzip stream holding
    every path; one site's /probe: sent whole, with its length."""
    customs = "".join(f"      - {{name: p{i}, from: [sql_server], host: 127.0.0.1, port: {refusing_port}}}\n"
                      for i in range(600))
    config = tmp_path / "c.yml"
    config.write_text("defaults: {system_resolver: false, timeout: 2s}\nsites:\n  - name: big\n    custom:\n"
                      + customs + "  - name: small\n    custom:\n"
                      f"      - {{name: door, from: [sql_server], host: 127.0.0.1, port: {refusing_port}}}\n")

    async def scenario() -> None:
        async with running(config, Role.SQL_SERVER) as (url, _):
            status, headers, packed = await _raw_get(url + "/metrics", "gzip")
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            assert headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
            text = gzip.decompress(packed).decode()
            assert len([n for n, _ in _series(text) if n == "illiad_port_up"]) == 601
            status, headers, packed = await _raw_get(url + "/probe?site=small", "gzip")
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            assert int(headers["Content-Length"]) == len(packed)
            assert value(gzip.decompress(packed).decode(), "illiad_port_up", path="door") == 0.0

    asyncio.run(scenario())
