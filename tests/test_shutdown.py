"""Graceful shutdown: SIGTERM or Ctrl-C mid-scrape lets the scrape finish by its deadline,
then the process exits 0."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from .exporter_process import exporter, fetch, log_text, loopback_site_config
from .test_server import value


def slow_config(path, port: int):
    return loopback_site_config(path, custom=f"""\
      - {{name: slow, from: [web_server], host: 127.0.0.1, port: {port}, prober: http}}""")


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_scrape_lets_the_scrape_answer_then_exits_0(tmp_path, silent_port, signame):
    """The target accepts and never answers, so the scrape runs for the probe's 2 s timeout;
    the signal arrives 0.5 s in. The scrape still gets its full answer (reason timeout),
    new connections are refused, and the process exits 0 right after."""
    config = slow_config(tmp_path / "c.yml", silent_port)
    peer, url = exporter(config, tmp_path)
    answer: list[tuple[int, str]] = []
    with peer:
        scrape = threading.Thread(target=lambda: answer.append(fetch(url + "/metrics")), daemon=True)
        started = time.monotonic()
        scrape.start()
        time.sleep(0.5)
        peer.process.send_signal(getattr(signal, signame))  # type: ignore[union-attr]
        returncode = peer.process.wait(10)  # type: ignore[union-attr]
        stopped_after = time.monotonic() - started
        scrape.join(5)
    assert returncode == 0, log_text(peer)
    assert 1.5 <= stopped_after < 4.0  # waited for the in-flight scrape, then went at once
    [(status, text)] = answer
    assert status == 200
    assert value(text, "illiad_probe_failure_reason", path="slow", reason="timeout") == 1.0
    log = log_text(peer)
    assert "shutting down" in log and "stopped" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_sigterm_when_idle_exits_0_at_once(tmp_path, silent_port):
    peer, url = exporter(slow_config(tmp_path / "c.yml", silent_port), tmp_path)
    with peer:
        assert fetch(url + "/-/healthy") == (200, "Healthy\n")
        started = time.monotonic()
        peer.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert peer.process.wait(10) == 0  # type: ignore[union-attr]
        assert time.monotonic() - started < 1.5
