"""Odyssey and ISO ILL receive nothing: every byte would be a real document or transaction."""

from __future__ import annotations

import pytest

from .probing import make_target, probe
from .scripted import ScriptedServer


@pytest.mark.parametrize("prober", ["odyssey", "iso_ill"])
def test_connect_only_probe_sends_zero_bytes_and_closes(prober):
    with ScriptedServer(record=True) as listener:
        result = probe(make_target(prober, listener.port))
        assert listener.closed_by_client.wait(5), "the probe did not close its connection"
    assert result.up, result.detail
    assert listener.received == [b""]
