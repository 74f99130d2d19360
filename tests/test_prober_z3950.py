"""The z3950 prober: its BER codec against what the real yaz-client and yaz-ztest exchange,
probes against yaz-ztest, and answers it cuts short (other wrong and misbehaving services:
test_prober_wrong_servers.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illiad_exporter.probers import Reason, z3950
from illiad_exporter.probers.z3950 import InitAnswer, Z3950Error

from .exporter_process import exporter, fetch, loopback_site_config
from .fakes import ThreadedServer
from .peers import need_binary
from .probing import make_target, probe
from .scripted import ScriptedServer
from .test_server import value


class Relay:
    """A loopback TCP relay that records the first message each way of one connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.request = b""
        self.response = b""
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        client, _ = self.listener.accept()
        with client, socket.create_connection(("127.0.0.1", self.upstream), timeout=5) as server:
            client.settimeout(5)
            self.request = client.recv(65536)
            server.sendall(self.request)
            self.response = server.recv(65536)
            client.sendall(self.response)
            client.recv(65536)  # until the client leaves

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture(scope="module")
def yaz_exchange(yaz_ztest):
    """The initRequest the real yaz-client sends to yaz-ztest, the initResponse it gets back,
    and what yaz-client prints of it."""
    client = need_binary("yaz-client", "yaz")
    relay = Relay(yaz_ztest)
    try:
        shown = subprocess.run([client, f"tcp:127.0.0.1:{relay.port}"], input="quit\n", capture_output=True,
                               text=True, timeout=15).stdout
    finally:
        relay.close()
    assert "Connection accepted by v3 target." in shown, shown
    return relay.request, relay.response, shown


# -- the codec, against the real exchange -----------------------------------------------------


def test_codec_decodes_the_init_request_yaz_client_sends(yaz_exchange):
    request_bytes, _, _ = yaz_exchange
    request = z3950.decode_init_request(request_bytes)
    assert str(request["implementationName"]) == "YAZ"
    assert str(request["implementationId"]) == "81"  # YAZ's registered implementation id
    assert [int(b) for b in request["protocolVersion"]][:3] == [1, 1, 1]
    options = [int(b) for b in request["options"]]
    assert options[z3950.OPTION_SEARCH] == 1 and options[z3950.OPTION_PRESENT] == 1


def test_the_probe_init_request_has_the_fields_yaz_client_sends(yaz_exchange):
    ours = z3950.decode_init_request(z3950.encode_init_request())
    theirs = z3950.decode_init_request(yaz_exchange[0])
    mandatory = ("protocolVersion", "options", "preferredMessageSize", "exceptionalRecordSize")
    for name in mandatory:
        assert ours[name].isValue and theirs[name].isValue
    assert [int(b) for b in ours["protocolVersion"]] == [1, 1, 1]
    assert [int(b) for b in ours["options"]] == [1, 1]  # search and present, nothing more
    assert str(ours["implementationName"]) == "illiad-port-exporter"


def test_codec_decodes_the_init_response_yaz_ztest_sends_as_yaz_client_shows_it(yaz_exchange):
    _, response_bytes, shown = yaz_exchange
    answer, rest = z3950.decode_init_response(response_bytes)
    assert rest == b""
    assert answer.accepted and answer.protocol_versions == (1, 2, 3)
    assert f"Name   : {answer.implementation_name}" in shown
    assert f"Version: {answer.implementation_version}" in shown
    assert f"ID     : {answer.implementation_id}" in shown


def test_codec_reads_past_user_information_and_other_info(yaz_exchange):
    response_bytes = yaz_exchange[1]
    assert response_bytes[1] < 0x80  # short-form length, so it can be rewritten below
    # [11] EXTERNAL { direct-reference OID, single-ASN1-type [0] ... } and [201] otherInfo.
    extra = bytes.fromhex("ab0a2808060 22a038102 4142".replace(" ", "")) + bytes.fromhex("bf814905 3003020101".replace(" ", ""))
    body = response_bytes[2:] + extra
    answer, _ = z3950.decode_init_response(b"\xb5" + bytes([len(body)]) + body)
    assert answer.implementation_name == "GFS/YAZ"


def test_codec_reads_a_rejected_init():
    response = bytes.fromhex("b5 1b 8302 00e0 8402 00c0 8503 100000 8603 100000 8c01 00 9f6f 03 414243".replace(" ", ""))
    answer, _ = z3950.decode_init_response(response)
    assert answer == InitAnswer(False, "", "ABC", "", (1, 2, 3))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Z39.50 initResponse"),
        (bytes.fromhex("bf3003 8f0100"), "answered the init with a Close"),
        (bytes.fromhex("b503 8c0101"), "malformed initResponse"),
    ],
)
def test_codec_rejects_what_is_not_an_init_response(data, why):
    with pytest.raises(Z3950Error, match=why):
        z3950.decode_init_response(data)


# -- the probe ---------------------------------------------------------------------------------


def test_z3950_against_yaz_ztest_is_up_with_its_implementation(yaz_ztest):
    result = probe(make_target("z3950", yaz_ztest))
    assert result.up, result.detail
    version = subprocess.run([need_binary("yaz-ztest", "yaz"), "-V"], capture_output=True, text=True).stdout
    expected_version = re.search(r"YAZ version: (.+)", version).group(1).strip()  # type: ignore[union-attr]
    assert [(f.name, dict(f.labels)) for f in result.infos] == [
        ("z3950", {"implementation_name": "GFS/YAZ", "implementation_version": expected_version,
                   "implementation_id": "81"})
    ]
    assert result.phases["handshake"] > 0


def test_z3950_rejected_init_is_protocol_and_still_names_the_target(yaz_exchange):
    rejected = yaz_exchange[1].replace(b"\x8c\x01\x01", b"\x8c\x01\x00")
    with ScriptedServer(rejected) as server:
        result = probe(make_target("z3950", server.port))
    assert result.reason is Reason.PROTOCOL and "rejected the init" in result.detail
    assert dict(result.infos[0].labels)["implementation_name"] == "GFS/YAZ"


@pytest.mark.parametrize(
    ("cut", "why"),
    [
        (0, "closed the connection without an initResponse"),
        (1, "cut the initResponse short"),
        (40, "cut the initResponse short"),
    ],
)
def test_z3950_truncated_answer_is_protocol(yaz_exchange, cut, why):
    with ScriptedServer(yaz_exchange[1][:cut]) as server:
        result = probe(make_target("z3950", server.port))
    assert result.reason is Reason.PROTOCOL
    assert why in result.detail


# -- a long answer costs linear work -------------------------------------------------------------

YAZ_INIT_RESPONSE = bytes.fromhex(
    "b559830200e0840300e9a28504040000008604040000008c01019f6e0238319f6f074746532f59415a9f702f352e33342e3020"
    "64656330633861306237363231333234363863633832363463316232323065616531633637626437")


def long_init_response(entries: int = 12_000, *, indefinite: bool = True) -> bytes:
    """yaz-ztest's initResponse with an otherInfo of ``entries`` small elements: about 60 KB
    of flat segments. In indefinite-length form (end marked by 00 00, as BER allows) only
    walking every element finds the end."""
    inner = b"\x30\x03\x02\x01\x01" * entries
    if indefinite:
        return b"\xb5\x80" + YAZ_INIT_RESPONSE[2:] + b"\xbf\x81\x49\x80" + inner + b"\x00\x00" + b"\x00\x00"
    other_info = b"\xbf\x81\x49\x82" + len(inner).to_bytes(2, "big") + inner
    body = YAZ_INIT_RESPONSE[2:] + other_info
    return b"\xb5\x82" + len(body).to_bytes(2, "big") + body


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=60), st.booleans())
def test_the_apdu_reader_finds_the_end_once_however_the_bytes_arrive(cuts, indefinite):
    apdu = long_init_response(60, indefinite=indefinite)
    reader = z3950.ApduReader(64 * 1024)
    position, complete_at = 0, []
    for size in cuts * (len(apdu) // max(sum(cuts), 1) + 1):
        if position >= len(apdu):
            break
        chunk = apdu[position:position + size]
        position += len(chunk)
        if reader.feed(chunk):
            complete_at.append(position)
            break
    assert complete_at == [len(apdu)]
    assert reader.apdu == apdu
    assert z3950.decode_init_response(reader.apdu)[0].implementation_name == "GFS/YAZ"


def test_the_apdu_reader_refuses_an_answer_that_claims_more_than_its_limit():
    reader = z3950.ApduReader(64 * 1024)
    with pytest.raises(z3950.Z3950Error, match="longer than 65536 bytes"):
        reader.feed(b"\xb5\x83\x01\x00\x00")


def trickle_long_answer(conn: socket.socket, server: ThreadedServer) -> None:
    """Reads the initRequest, then sends a 60 KB initResponse in 64-byte segments."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.recv(4096)
    answer = long_init_response()
    for at in range(0, len(answer), 64):
        conn.sendall(answer[at:at + 64])
        server.sleep(0.002)  # so the exporter reads them as many chunks
    server.sleep(1.0)


@pytest.mark.process
def test_a_long_answer_in_small_segments_costs_the_real_exporter_little_cpu(tmp_path):
    """60 KB of flat segments in indefinite-length form, sent 64 bytes at a time: the
    exporter's CPU for the probe stays under a second (each chunk used to decode the whole
    buffer again, walking every segment to look for the end: 7.5 s for 64 KB)."""
    with ThreadedServer(trickle_long_answer) as server:
        config = loopback_site_config(tmp_path / "c.yml", timeout="20s", custom=(
            f"      - {{name: opac, from: [web_server], host: 127.0.0.1, port: {server.port}, prober: z3950}}"))
        peer, url = exporter(config, tmp_path)
        with peer:
            fetch(url + "/-/ready")
            before = process_cpu_seconds(peer.pid)
            status, text = fetch(url + "/probe?site=lib", headers={"X-Prometheus-Scrape-Timeout-Seconds": "25"},
                                 timeout=30)
            spent = process_cpu_seconds(peer.pid) - before
    assert status == 200 and value(text, "illiad_port_up") == 1.0, text[-1500:]
    assert spent < 1.0, f"{spent:.2f}s of CPU"


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
