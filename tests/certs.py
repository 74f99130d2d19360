"""Test certificates: a leaf issued by a trustme CA, written as PEM files a server can load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path  # the leaf and its chain
    key: Path


def write_cert(ca: trustme.CA, directory: Path, name: str, *identities: str, **kwargs: object) -> CertFiles:
    """``name``.pem (the chain) and ``name``.key for ``identities``, and the CA as ca.pem;
    ``kwargs`` go to trustme (not_before, not_after)."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*identities, **kwargs)  # type: ignore[arg-type]
    files = CertFiles(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    with open(files.cert, "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return files
