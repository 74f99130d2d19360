"""Reading the files the exporter is pointed at (its config, the web config, secrets) without
letting one hang or swamp it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_bounded(path: str | Path, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit``; OSError (its strerror says why) for a FIFO,
    a device or a directory, which could block or never end, and for a larger file (EFBIG,
    unread when its size says so)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)  # non-blocking: opening a FIFO with no writer returns at once
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            what = ("a FIFO" if stat.S_ISFIFO(kind) else "a directory" if stat.S_ISDIR(kind)
                    else "a socket" if stat.S_ISSOCK(kind) else "a device")
            raise OSError(errno.EINVAL, f"not a regular file ({what})")
        if os.fstat(fd).st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        return data
    finally:
        os.close(fd)
