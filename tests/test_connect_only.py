"""Odyssey and ISO ILL receive nothing: every byte would be a real document or transaction."""

from __future__ import annotations

import asyncio

import pytest

from illiad_exporter.scrape import run_probe

from .conftest import make_target
from .scripted import ScriptedServer


async def probe(target):
    return await run_probe(target, deadline=asyncio.get_running_loop().time() + 5)


@pytest.mark.parametrize("prober", ["odyssey", "iso_ill"])
def test_connect_only_probe_sends_zero_bytes_and_closes(prober):
    with ScriptedServer(record=True) as listener:
        result = asyncio.run(probe(make_target(prober, listener.port)))
        assert listener.closed_by_client.wait(5), "the probe did not close its connection"
    assert result.up, result.detail
    assert listener.received == [b""]
