"""Whatever bytes a peer sends, the protocol decoders answer with a value or their own
one-line error (which the probers turn into reason protocol), never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.error import SubstrateUnderrunError

from illiad_exporter.probers import rdp, tds, z3950


# Random bytes, and random bytes behind each protocol's real first byte(s), so the fuzzing
# gets past the first check.
def _after(prefix: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300).map(lambda tail: prefix + tail)


# name -> (decoder, the errors it may raise, the bytes to give it)
DECODERS = {
    "tds prelogin": (tds.decode_prelogin, (tds.TdsError,), st.one_of(st.binary(max_size=300), _after(b"\x00\x00"))),
    "sql browser": (tds.parse_browser_reply, (tds.TdsError,), st.one_of(
        st.binary(max_size=300), _after(b"\x05"), st.text(max_size=200).map(
            lambda t: b"\x05" + len(t.encode("latin-1", "replace")).to_bytes(2, "little")
            + t.encode("latin-1", "replace")))),
    "rdp confirm": (rdp.decode_confirm, (rdp.RdpError,), st.one_of(st.binary(max_size=64),
                                                                  _after(b"\x03\x00\x00\x13"))),
    "z3950 initResponse": (z3950.decode_init_response, (z3950.Z3950Error, SubstrateUnderrunError),
                           st.one_of(st.binary(max_size=300), _after(b"\xb5"), _after(b"\xb5\x81\x80"))),
}


@pytest.mark.parametrize("name", DECODERS)
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_decoder_never_raises_anything_but_its_own_errors(name, data):
    decode, errors, inputs = DECODERS[name]
    try:
        decode(data.draw(inputs))
    except errors:
        pass


# An initResponse of yaz-ztest 5.34 (as captured by test_prober_z3950's relay), to mutate.
YAZ_INIT_RESPONSE = bytes.fromhex("b559830200e0840300e9a28504040000008604040000008c01019f6e0238319f6f074746532f59415a9f702f352e33342e302064656330633861306237363231333234363863633832363463316232323065616531633637626437")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(YAZ_INIT_RESPONSE) - 1), st.integers(0, 255)), max_size=4),
       st.integers(1, len(YAZ_INIT_RESPONSE)))
def test_mutated_yaz_init_responses_decode_or_fail_cleanly(changes, keep):
    data = bytearray(YAZ_INIT_RESPONSE)
    for position, value in changes:
        data[position] = value
    try:
        z3950.decode_init_response(bytes(data[:keep]))
    except (z3950.Z3950Error, SubstrateUnderrunError):
        pass
