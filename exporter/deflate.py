"""One gzip body made of pieces compressed apart: a probe worker compresses the lines of its
paths as it writes them, and the serving process sends its pieces as they are, between
headers it compresses itself, without ever holding the text.

A piece is a raw deflate stream that ends on a byte boundary without a final block
(``Z_SYNC_FLUSH``), from a compressor of its own: deflate streams like that may follow each
other, since none refers back into another. The gzip trailer's CRC-32 of the whole text is
worked out from each piece's own CRC-32 and length (:func:`crc32_combine`, zlib's way), and
its length is their sum. The result decompresses to exactly the text the pieces were made
of, in order (tests/test_deflate.py).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# zlib level 3, measured with bench/run.py part (e) on a 10,000-path exposition (11.7 MB):
# levels 1 and 3 cost the same, about 30 ms a scrape (1-2% of its CPU), and level 3's
# output is 8% smaller (0.54 MB, a twentieth of the text); level 6 takes three times as long
# for 10% less, level 9 eleven times.
GZIP_LEVEL = 3
# magic, deflate, no flags, no time, no extra flags, unknown OS (RFC 1952)
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True, slots=True)
class Deflated:
    """A piece of text compressed on its own: raw deflate ending on a byte boundary, with
    the CRC-32 and the length of the text it holds."""

    data: bytes
    crc: int
    size: int

    def __reduce__(self) -> tuple[type[Deflated], tuple[bytes, int, int]]:
        return (Deflated, (self.data, self.crc, self.size))  # crosses a pipe: pickled by its fields

    def text(self) -> bytes:
        # a decompressor object: zlib.decompress wants a final block, which a piece has not
        return zlib.decompressobj(-15).decompress(self.data) if self.size else b""


# Text shorter than this stays text (a site's /probe answer): a compressor's setup costs
# more than compressing a few lines saves, and the answer is compressed where it is sent.
COMPRESS_FROM = 16 * 1024


class Deflater:
    """Text written in chunks, compressed into one :class:`Deflated` piece once it passes
    COMPRESS_FROM bytes (kept as text below that)."""

    __slots__ = ("_compressor", "_out", "_crc", "_size")

    def __init__(self) -> None:
        self._compressor: zlib._Compress | None = None
        self._out: list[bytes] = []
        self._crc = 0
        self._size = 0

    def write(self, text: bytes) -> None:
        self._size += len(text)
        if self._compressor is None:
            self._out.append(text)
            if self._size < COMPRESS_FROM:
                return
            text, self._out = b"".join(self._out), []
            self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
        self._crc = zlib.crc32(text, self._crc)
        data = self._compressor.compress(text)
        if data:
            self._out.append(data)

    def done(self) -> bytes | Deflated:
        if self._compressor is None:
            return b"".join(self._out)
        self._out.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        return Deflated(b"".join(self._out), self._crc, self._size)


def deflated(text: bytes) -> bytes | Deflated:
    """``text`` compressed, or as it is when short (see COMPRESS_FROM)."""
    deflater = Deflater()
    deflater.write(text)
    return deflater.done()


def gzip_body(pieces: Iterable[bytes | Deflated]) -> Iterator[bytes]:
    """One gzip body of ``pieces`` in order, yielded as it is made: text is compressed here
    (a run of short texts in one call), a Deflated piece is sent as it is."""
    yield GZIP_HEADER
    own = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    crc = size = 0
    text: list[bytes] = []  # the run of text since the last piece
    held = 0  # its length
    pending = False  # own text compressed since the last flush

    def compress_text() -> bytes:
        nonlocal crc, size, held
        run = b"".join(text)
        text.clear()
        held = 0
        crc, size = zlib.crc32(run, crc), size + len(run)
        return own.compress(run)

    for piece in pieces:
        if not isinstance(piece, Deflated):
            if piece:
                text.append(piece)
                held += len(piece)
                if held >= COMPRESS_FROM:  # a chunk of a long text: compressed as it comes
                    yield compress_text()
                    pending = True
            continue
        if not piece.size:
            continue
        if text:
            yield compress_text()
            pending = True
        if pending:  # own output first, and nothing of ours referred back to across the piece
            yield own.flush(zlib.Z_FULL_FLUSH)
            pending = False
        yield piece.data
        crc, size = crc32_combine(crc, piece.crc, piece.size), size + piece.size
    if text:
        yield compress_text()
    yield own.flush(zlib.Z_FINISH)
    yield struct.pack("<II", crc, size & 0xFFFFFFFF)


def plain_body(pieces: Iterable[bytes | Deflated]) -> Iterator[bytes]:
    """The text of ``pieces`` in order, each Deflated piece decompressed."""
    for piece in pieces:
        yield piece.text() if isinstance(piece, Deflated) else piece


# -- CRC-32 of a concatenation, from the CRC-32 of each part (zlib's crc32_combine) ---------------

_POLY = 0xEDB88320  # CRC-32, reflected


def _multmodp(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial (reflected bit order)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _x2nmodp(n: int, k: int) -> int:
    """x^(n * 2^k) modulo the polynomial."""
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A followed by B, from CRC-32(A), CRC-32(B) and len(B)."""
    return _multmodp(_x2nmodp(len2, 3), crc1) ^ crc2
