"""Odyssey (7968) and ISO ILL (1611): connect and close, sending nothing.

Both services treat whatever arrives as a real document or transaction: the Odyssey
Manager discards non-TIFF/PDF data only after logging it, and every ISO ILL message is a
request. So the only safe check is the TCP handshake itself.
"""

from __future__ import annotations

from .base import Prober, ProberOptions
from .tcp import probe_tcp

ODYSSEY = Prober("odyssey", probe_tcp, ProberOptions, "Odyssey document delivery: connect only, sends nothing")
ISO_ILL = Prober("iso_ill", probe_tcp, ProberOptions, "ISO ILL: connect only, sends nothing")
