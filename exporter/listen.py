"""``--web.listen-address``: parsed once, where the flag is read, into the value the server binds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address to serve on. ``host`` None means every interface (``:9968``)."""

    host: str | None
    port: int

    def __str__(self) -> str:
        if self.host is None:
            return f":{self.port}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT``, as exporter-toolkit takes it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT, [IPv6]:PORT or :PORT: {text!r}")
    host = host.strip("[]")
    return ListenAddress(host or None, int(port))
