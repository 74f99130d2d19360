"""The tds prober: PRELOGIN codec against MS-TDS, the SQL Server Browser, and probes against
a real FreeTDS tdspool (in clear and behind TLS first); wrong services and misbehaving ones
are in test_prober_wrong_servers.py."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prometheus_client import CollectorRegistry, generate_latest

from illiad_exporter.metrics import ProbeCollector
from illiad_exporter.probers import Reason, tds
from illiad_exporter.probers.tds import Prelogin, TdsError
from illiad_exporter.scrape import Outcome

from .probing import make_target, probe
from .scripted import FakeBrowser, SilentBrowser

# MS-TDS section 4.1 "Pre-Login Request", the example a client sends (Microsoft Open
# Specifications, [MS-TDS] Tabular Data Stream Protocol): VERSION 9.0.0.0, ENCRYPTION on (1),
# INSTOPT empty, THREADID B8 0D 00 00, MARS on.
MS_TDS_4_1_PRELOGIN = bytes.fromhex(
    "12 01 00 2F 00 00 01 00 00 00 1A 00 06 01 00 20"
    "00 01 02 00 21 00 01 03 00 22 00 04 04 00 26 00"
    "01 FF 09 00 00 00 00 00 01 00 B8 0D 00 00 01"
)

# A SQL Server Browser SVR_RESP to CLNT_UCAST_INST "ILLIAD", laid out as MC-SQLR 2.2.5 gives
# it (0x05, RESP_SIZE little-endian, then "key;value;...;;"), with the fields a SQL Server
# 2019 named instance sends. The port is patched in by browser_reply().
BROWSER_TEXT = (
    "ServerName;SQLHOST;InstanceName;ILLIAD;IsClustered;No;Version;15.0.2000.5;"
    "tcp;{port};np;\\\\SQLHOST\\pipe\\MSSQL$ILLIAD\\sql\\query;;"
)


def browser_reply(port: int, text: str = BROWSER_TEXT) -> bytes:
    data = text.format(port=port).encode("latin-1")
    return b"\x05" + struct.pack("<H", len(data)) + data


def info(result, name: str) -> dict[str, str]:
    found = [dict(f.labels) for f in result.infos if f.name == name]
    assert len(found) == 1, result.infos
    return found[0]


# -- the codec ---------------------------------------------------------------------------------


def test_prelogin_encoder_produces_the_ms_tds_example_byte_for_byte():
    message = Prelogin(version=(9, 0, 0, 0), encryption=tds.ENCRYPT_ON, instance=b"", thread_id=3512, mars=True)
    assert tds.encode_packet(tds.PACKET_PRELOGIN, tds.encode_prelogin(message)) == MS_TDS_4_1_PRELOGIN


def test_prelogin_decoder_reads_every_value_of_the_ms_tds_example():
    packet_type, status, length = tds.decode_header(MS_TDS_4_1_PRELOGIN[:8])
    assert (packet_type, status, length) == (0x12, 0x01, len(MS_TDS_4_1_PRELOGIN) - 8)
    message = tds.decode_prelogin(MS_TDS_4_1_PRELOGIN[8:])
    assert message == Prelogin(version=(9, 0, 0, 0), encryption=1, instance=b"", thread_id=3512, mars=True)
    assert message.version_text == "9.0.0" and message.encryption_word == "on"


def test_the_probe_sends_a_prelogin_with_encryption_off_and_no_instance_name():
    sent = tds.client_prelogin()
    assert sent[0] == 0x12 and sent[1] == 0x01 and struct.unpack(">H", sent[2:4])[0] == len(sent)
    message = tds.decode_prelogin(sent[8:])
    assert message.encryption == tds.ENCRYPT_OFF and message.instance == b"" and message.mars is False


@settings(deadline=None)
@given(
    version=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535)),
    encryption=st.none() | st.integers(0, 3),
    instance=st.none() | st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"")),
    thread_id=st.none() | st.integers(0, 2**32 - 1),
    mars=st.none() | st.booleans(),
)
def test_prelogin_decode_inverts_encode(version, encryption, instance, thread_id, mars):
    message = Prelogin(version, encryption, instance, thread_id, mars)
    assert tds.decode_prelogin(tds.encode_prelogin(message)) == message


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "no terminator"),
        (b"\x00\x00\x00\x00\x00", "no terminator"),
        (b"\x00\x00", "cut short"),
        (b"\x00\x00\x06\x00\x40\xff" + b"\x00" * 6, "points past the data"),
        (b"\x01\x00\x06\x00\x01\xff\x00", "no VERSION"),
        (b"\x00\x00\x06\x00\x02\xff\x0a\x00", "no VERSION"),
    ],
)
def test_prelogin_decoder_rejects_malformed_data_with_a_reason(data, why):
    with pytest.raises(TdsError, match=why):
        tds.decode_prelogin(data)


def test_browser_parser_reads_the_instance_port_and_version_from_a_recorded_reply():
    reply = browser_reply(49712)
    (instance,) = tds.parse_browser_reply(reply)
    assert instance == tds.BrowserInstance("SQLHOST", "ILLIAD", "15.0.2000.5", 49712)
    assert tds.instance_port(reply, "illiad") == 49712  # instance names are case-insensitive


def test_browser_parser_reads_a_reply_listing_several_instances():
    text = BROWSER_TEXT + "ServerName;SQLHOST;InstanceName;REPORTS;IsClustered;No;Version;15.0.2000.5;tcp;50001;;"
    reply = browser_reply(49712, text)
    assert [i.instance_name for i in tds.parse_browser_reply(reply)] == ["ILLIAD", "REPORTS"]
    assert tds.instance_port(reply, "REPORTS") == 50001


def test_browser_parser_says_which_instance_it_does_not_know():
    with pytest.raises(TdsError, match="does not know instance ARCHIVE"):
        tds.instance_port(browser_reply(49712), "ARCHIVE")


def test_browser_parser_tells_an_instance_without_tcp():
    reply = browser_reply(0, "ServerName;SQLHOST;InstanceName;ILLIAD;IsClustered;No;Version;15.0.2000.5;np;x;;")
    with pytest.raises(TdsError, match="no TCP port"):
        tds.instance_port(reply, "ILLIAD")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"", "not a SQL Server Browser reply"),
        (b"HTTP/1.1 400", "not a SQL Server Browser reply"),
        (browser_reply(49712)[:40], "truncated"),
        (browser_reply(0, "ServerName;SQLHOST;InstanceName;ILLIAD;tcp;port;;"), "non-numeric"),
        (browser_reply(0, "ServerName;SQLHOST;InstanceName;ILLIAD;tcp;70000;;"), "out of range"),
        (browser_reply(0, "ServerName;SQLHOST;tcp;1433;;"), "names no instance"),
        (browser_reply(0, "ServerName;SQLHOST;InstanceName;;"), "key without a value"),
    ],
)
def test_browser_parser_rejects_malformed_replies(reply, why):
    with pytest.raises(TdsError, match=why):
        tds.parse_browser_reply(reply)


# -- against FreeTDS ---------------------------------------------------------------------------


def test_tds_against_freetds_is_up_with_its_version_and_encryption(tdspool):
    result = probe(make_target("tds", tdspool.port))
    assert result.up and result.reason is None, result.detail
    # tdspool answers as SQL Server 2008 RTM would, and does not offer encryption.
    assert info(result, "sqlserver") == {"version": "10.0.1600", "encryption": "not_supported"}
    assert result.phases["handshake"] > 0
    assert result.tls is None


def test_tds_strict_mode_speaks_tls_first_then_prelogin_inside(tdspool):
    result = probe(make_target("tds", tdspool.strict_port, strict=True, ca_file=str(tdspool.certs.ca)))
    assert result.up, result.detail
    assert info(result, "sqlserver") == {"version": "10.0.1600", "encryption": "not_supported"}
    assert result.tls is not None and result.tls.verified and result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.phases["tls"] > 0 and result.phases["handshake"] > 0


def test_tds_strict_mode_against_a_server_in_clear_fails_as_tls(tdspool):
    result = probe(make_target("tds", tdspool.port, strict=True, ca_file=str(tdspool.certs.ca)))
    assert result.reason is Reason.TLS


def test_tds_in_clear_against_a_strict_server_is_not_tds(tdspool):
    result = probe(make_target("tds", tdspool.strict_port))
    assert result.reason is Reason.PROTOCOL


def test_named_instance_port_comes_from_the_browser_and_is_reported(tdspool):
    with FakeBrowser({"ILLIAD": browser_reply(tdspool.port)}) as browser:
        result = probe(make_target("tds", 1433, instance="illiad", browser_port=browser.port))
    assert result.up, result.detail
    assert result.port == tdspool.port
    assert info(result, "sqlserver")["version"] == "10.0.1600"
    assert browser.requests == [b"\x04illiad\x00"]


def test_metrics_carry_the_port_the_browser_gave(tdspool):
    target = make_target("tds", 1433, instance="ILLIAD", path_id="sql")
    with FakeBrowser({"ILLIAD": browser_reply(tdspool.port)}) as browser:
        object.__setattr__(target, "options", target.options.model_copy(update={"browser_port": browser.port}))
        result = probe(target)
    registry = CollectorRegistry()
    registry.register(ProbeCollector([Outcome(target, result, 0.0)]))
    text = generate_latest(registry).decode()
    assert (f'illiad_sqlserver_info{{encryption="not_supported",expect="open",host="127.0.0.1",path="sql",'
            f'port="{tdspool.port}",site="lib",vantage="web_server",version="10.0.1600"}} 1.0') in text
    assert f'illiad_port_up{{expect="open",host="127.0.0.1",path="sql",port="{tdspool.port}"' in text
    assert 'port="1433"' not in text


def test_instance_the_browser_does_not_know_is_reason_browser(tdspool):
    with FakeBrowser({"ILLIAD": browser_reply(tdspool.port)}) as browser:
        started = time.monotonic()
        result = probe(make_target("tds", 1433, instance="ARCHIVE", browser_port=browser.port, timeout=1.0))
    assert result.reason is Reason.BROWSER
    assert "did not answer" in result.detail
    assert time.monotonic() - started < 1.5
    assert result.address is None  # no TCP connection was tried


def test_browser_reply_naming_another_instance_is_reason_browser(tdspool):
    # A Browser that answers with the wrong instance (a misbehaving one, or a proxy).
    with FakeBrowser({"ARCHIVE": browser_reply(tdspool.port)}) as browser:
        result = probe(make_target("tds", 1433, instance="ARCHIVE", browser_port=browser.port))
    assert result.reason is Reason.BROWSER
    assert "does not know instance ARCHIVE" in result.detail


def test_browser_answering_garbage_is_reason_browser():
    with FakeBrowser({"ILLIAD": b"HTTP/1.1 400 Bad Request\r\n\r\n"}) as browser:
        result = probe(make_target("tds", 1433, instance="ILLIAD", browser_port=browser.port))
    assert result.reason is Reason.BROWSER
    assert result.detail == "not a SQL Server Browser reply"


def test_silent_browser_is_reason_browser_within_the_timeout():
    with SilentBrowser() as browser:
        started = time.monotonic()
        result = probe(make_target("tds", 1433, instance="ILLIAD", browser_port=browser.port, timeout=1.0))
        elapsed = time.monotonic() - started
        browser.socket.settimeout(1)
        asked = [browser.socket.recv(100), browser.socket.recv(100)]
    assert result.reason is Reason.BROWSER
    assert "did not answer" in result.detail
    assert elapsed < 1.5
    assert asked == [b"\x04ILLIAD\x00"] * 2  # asked twice: UDP may lose one


def test_no_browser_on_the_host_is_reason_browser():
    closed_udp = SilentBrowser()
    closed_udp.__exit__()  # the port is now closed: the kernel answers ICMP port unreachable
    result = probe(make_target("tds", 1433, instance="ILLIAD", browser_port=closed_udp.port, timeout=1.0))
    assert result.reason is Reason.BROWSER
