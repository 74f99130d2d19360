"""The exporter's own front door under attack, against the real process (issue 13): idle and
slow clients, a descriptor limit (prlimit), password guessers, malformed requests."""

from __future__ import annotations

import asyncio
import base64
import socket
import statistics
import time
from pathlib import Path

import aiohttp
import bcrypt

from .exporter_process import exporter, fetch, log_text, loopback_site_config, wait_until

PASSWORD = "scrape-secret-7"


def one_path_config(tmp_path: Path, port: int, *, exporter_settings: str = "") -> Path:
    return loopback_site_config(
        tmp_path / "c.yml", custom=f"      - {{name: app, from: [web_server], host: 127.0.0.1, port: {port}}}",
        top=f"exporter: {{{exporter_settings}}}\n" if exporter_settings else "")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


MALFORMED = [
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",  # a header line without a colon
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",  # an unknown version
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # a request line past the limit
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 9 + b"\r\n\r\n",  # TLS spoken to plain HTTP
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
        return answer


def test_malformed_requests_log_nothing_at_info_and_one_line_without_traceback_at_debug(tmp_path, silent_port):
    config = one_path_config(tmp_path, silent_port)
    for level, lines_per_request in (("info", 0), ("debug", 1)):
        peer, url = exporter(config, tmp_path, "--log.level", level)
        with peer:
            fetch(url + "/-/ready")
            before = log_text(peer)
            for data in MALFORMED * 4:
                assert send_raw(peer.port, data).split(b"\r\n")[0].endswith(b" 400 Bad Request"), data[:30]  # type: ignore[arg-type]
            added = log_text(peer)[len(before):]
        malformed = [line for line in added.splitlines() if "malformed request" in line]
        assert len(malformed) == lines_per_request * len(MALFORMED) * 4, (level, added[-2000:])
        assert "Traceback" not in added and "level=error" not in added, added[-2000:]
        if malformed:
            assert "level=debug" in malformed[0] and "peer=127.0.0.1" in malformed[0] and "reason=" in malformed[0]


def test_hundreds_of_password_guessers_do_not_slow_the_real_scraper(tmp_path, silent_port):
    """300 clients guess passwords without pause (each a new one, bcrypt cost 10) while the
    real scraper scrapes /metrics twice a second with the right one. Its scrapes stay under
    2 s (its cached password is never evicted by the guesses, and guesses queue no work in
    front of it); the guessers are answered 401 or, beyond the bcrypt queue, 429."""
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(f"basic_auth_users: {{prometheus: '{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()}'}}\n")
    peer, url = exporter(one_path_config(tmp_path, silent_port), tmp_path, "--web.config.file", str(web_yml))

    async def scenario() -> tuple[list[float], dict[int, int]]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        stop = asyncio.Event()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async with session.get(url + "/metrics", headers=basic("prometheus", PASSWORD)) as response:
                assert response.status == 200  # the first login, before the guessers

            async def guesser(n: int) -> None:
                for attempt in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        async with session.get(url + "/metrics", headers=basic("prometheus", f"g{n}-{attempt}"),
                                               timeout=aiohttp.ClientTimeout(total=10)) as response:
                            statuses[response.status] = statuses.get(response.status, 0) + 1
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        statuses[0] = statuses.get(0, 0) + 1

            guessers = [asyncio.create_task(guesser(n)) for n in range(300)]
            await asyncio.sleep(1.0)  # the flood is on
            for _ in range(12):
                started = time.monotonic()
                async with session.get(url + "/metrics", headers=basic("prometheus", PASSWORD),
                                       timeout=aiohttp.ClientTimeout(total=20)) as response:
                    assert response.status == 200
                    await response.read()
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*guessers)
        return latencies, statuses

    with peer:
        latencies, statuses = asyncio.run(scenario())
    assert max(latencies) < 2.0, latencies
    assert statuses.get(401, 0) > 0 and statuses.get(429, 0) > 0, statuses
    assert set(statuses) <= {401, 429}, statuses
    print(f"scraper latency median {statistics.median(latencies):.3f}s max {max(latencies):.3f}s; guessers {statuses}")
