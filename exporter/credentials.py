"""Credentials by reference: a config names an environment variable or a file, never the
secret itself, and the value is read only when a probe needs it."""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from .configfile import StrictModel
from .files import read_bounded

MAX_SECRET_BYTES = 64 * 1024


def _no_inline_secret(value: Any) -> Any:
    if isinstance(value, (str, bytes, int, float)):
        raise ValueError("inline secrets are not allowed: use {env: VARIABLE} or {file: PATH}")
    return value


class SecretRef(StrictModel):
    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        if self.env is not None and self.env not in os.environ:
            raise ValueError(f"environment variable {self.env} is not set")
        if self.file is not None and not os.access(self.file, os.R_OK):
            raise ValueError(f"secret file {self.file} cannot be read")
        return self

    def reveal(self) -> str:
        """The secret's current value (read now, so a rotated file is picked up)."""
        if self.env is not None:
            return os.environ.get(self.env, "")
        # a secret is a line or a key, never megabytes; a FIFO here would stall the probe
        return read_bounded(self.file or "", MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r})" if self.env else f"SecretRef(file={self.file!r})"

    __str__ = __repr__


Secret = Annotated[SecretRef, BeforeValidator(_no_inline_secret)]
