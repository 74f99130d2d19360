"""Innovative PatronAPI: look up a barcode no library issues, and recognise the answer.

``GET /PATRONAPI/<barcode>/dump`` is a read-only lookup; for a barcode that does not exist
the server answers ``ERRNUM=1`` ("requested record not found"). The prober never calls
``pintest``: that endpoint checks a patron's PIN, and failed PIN checks can lock a patron out.
The barcode is validated to be letters and digits only, so no option can reach another
endpoint.
"""

from __future__ import annotations

import re

from pydantic import Field

from .base import Prober, ProbeFailure, ProbeResult, ProbeTarget, Reason
from .http import HttpOrHttpsOptions, fetch

# Obviously not a library's barcode (those are digits), so the lookup finds no one.
PROBE_BARCODE = "ILLIADPORTEXPORTERPROBE0"
# A dump of one record is a few kilobytes; an error answer a hundred bytes.
MAX_BODY = 32 * 1024
_ERRNUM = re.compile(rb"ERRNUM=(\d{1,4})")
_ERRMSG = re.compile(rb"ERRMSG=([^<\r\n]{0,80})")
# A field line of a record dump: "P BARCODE[pb]=..." or "RECORD #[p81]=...".
_DUMP_FIELD = re.compile(rb"^[A-Z0-9 #./-]{1,40}\[p[!0-9a-z]{1,4}\]=", re.MULTILINE)


class PatronApiOptions(HttpOrHttpsOptions):
    HTTPS_PORTS = (443, 54620)  # 54620: Innovative's usual PatronAPI port over TLS
    barcode: str = Field(default=PROBE_BARCODE, pattern=r"^[A-Za-z0-9]{1,40}$")


def dump_path(barcode: str) -> str:
    return f"/PATRONAPI/{barcode}/dump"


def recognise(status: int, body: bytes) -> None:
    """Accept a PatronAPI answer (unknown barcode, or a record dump); else ``protocol``."""
    if status != 200:
        raise ProbeFailure(Reason.PROTOCOL, f"not a PatronAPI answer: HTTP {status}")
    errnum = _ERRNUM.search(body)
    if errnum is not None:
        if errnum.group(1) == b"1":
            return  # record not found: the service looked the barcode up
        message = _ERRMSG.search(body)
        text = message.group(1).decode("latin-1").strip() if message else ""
        raise ProbeFailure(Reason.PROTOCOL, f"PatronAPI error ERRNUM={errnum.group(1).decode()} {text}".rstrip())
    if _DUMP_FIELD.search(body) is None:
        raise ProbeFailure(Reason.PROTOCOL, f"not a PatronAPI answer: {body[:60]!r}")


async def probe_patron_api(target: ProbeTarget[PatronApiOptions], result: ProbeResult) -> bool:
    options = target.options
    https = options.https_for(target.port)
    response = await fetch(target, result, options, dump_path(options.barcode), https=https, max_body=MAX_BODY)
    recognise(response.status, response.body)
    return True


PROBER = Prober("patron_api", probe_patron_api, PatronApiOptions,
                "Innovative PatronAPI: a made-up barcode's dump gives a PatronAPI answer (never pintest)")
