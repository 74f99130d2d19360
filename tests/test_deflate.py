"""A gzip body made of pieces compressed apart (a probe worker's lines) and text compressed
where it is sent decompresses to the text of the pieces in order, by any gzip reader."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from illiad_exporter.deflate import Deflated, Deflater, crc32_combine, deflated, gzip_body, plain_body


@pytest.mark.parametrize("seed", range(5))
def test_crc32_combine_is_the_crc_of_the_concatenation(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        first = rng.randbytes(rng.randrange(0, 5000))
        second = rng.randbytes(rng.choice([0, 1, 7, 4096, rng.randrange(1, 300_000)]))
        assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)


def _text(rng: random.Random, lines: int) -> bytes:
    return "".join(f'illiad_port_up{{host="127.0.{rng.randrange(256)}.1",site="s{i}"}} {rng.random()}\n'
                   for i in range(lines)).encode()


def test_pieces_and_text_make_one_gzip_body_of_their_text_in_order() -> None:
    rng = random.Random(1)
    deflater = Deflater()
    for _ in range(3):  # a section written in chunks
        deflater.write(_text(rng, 500))
    pieces: list[bytes | Deflated] = [
        b"# HELP a x\n# TYPE a gauge\n", deflater.done(), deflated(_text(rng, 10)),
        b"# HELP b y\n", b"# TYPE b gauge\n", deflated(b""), deflated(_text(rng, 2000)), b"# EOF\n",
    ]
    assert [type(p) for p in pieces[1:3]] == [Deflated, bytes]  # a few lines stay text
    text = b"".join(plain_body(pieces))
    assert text.startswith(b"# HELP a x\n") and text.endswith(b"# EOF\n") and text.count(b"\n") == 3 * 500 + 2010 + 5
    body = b"".join(gzip_body(pieces))
    assert gzip.decompress(body) == text
    # a reader that checks the trailer's CRC and length as it streams, in small reads
    reader = zlib.decompressobj(31)
    assert b"".join(reader.decompress(body[i:i + 1000]) for i in range(0, len(body), 1000)) + reader.flush() == text
    assert reader.eof and not reader.unused_data


def test_a_body_of_text_alone_or_of_nothing_is_valid_gzip() -> None:
    assert gzip.decompress(b"".join(gzip_body([b"only text\n"]))) == b"only text\n"
    assert gzip.decompress(b"".join(gzip_body([]))) == b""
    big = b"z" * 100_000
    assert gzip.decompress(b"".join(gzip_body([deflated(big), deflated(big)]))) == big + big


def test_a_long_text_is_compressed_as_it_comes_never_held_whole() -> None:
    consumed = []

    def chunks():  # 20 chunks of 100 kB, as write_exposition yields a big scrape's text
        for i in range(20):
            consumed.append(i)
            yield _text(random.Random(i), 2000)

    body = gzip_body(chunks())
    assert next(body) == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    while not next(body):  # the compressor may hold its first output back a little
        pass
    assert len(consumed) < 5
    rest = b"".join(body)
    assert len(consumed) == 20 and rest
