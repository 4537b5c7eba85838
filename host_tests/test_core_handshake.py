"""handshake.py: bounded request parsing and RFC 6455 section 4 upgrade validation."""
import base64
import hashlib

import pytest

from ringws import handshake as H

pytestmark = pytest.mark.timeout(30)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def req(lines, request_line="GET /echo?x=1 HTTP/1.1"):
    head = (request_line + "\r\n" + "".join(l + "\r\n" for l in lines) + "\r\n").encode("latin-1")
    buf = bytearray(head + b"TRAILING")
    end = H.find_end(buf, 0, len(buf))
    assert end == len(head)
    return H.parse_request(buf, end)


GOOD = ["Host: h", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13"]


def with_(name, value):
    out = [l for l in GOOD if not l.lower().startswith(name.lower() + ":")]
    if value is not None:
        out.append("%s: %s" % (name, value))
    return out


def status_of(lines, request_line="GET /echo HTTP/1.1"):
    try:
        H.validate_upgrade(req(lines, request_line))
    except H.HttpError as e:
        return e.status
    return 101


def test_rfc_example_accept_key():
    assert H.validate_upgrade(req(GOOD)) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert H.validate_upgrade(req(GOOD)) == base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def test_request_fields():
    r = req(GOOD + ["Sec-WebSocket-Protocol: a", "sec-websocket-protocol: b", "X-Other: dropped"])
    assert (r.method, r.path, r.query, r.version) == ("GET", "/echo", "x=1", "HTTP/1.1")
    assert r.header("sec-websocket-protocol") == "a, b"  # repeats joined
    assert r.header("sec-websocket-version") == "13"
    assert r.header("x-other") is None  # only the fields ringws uses are kept (KNOWN)


@pytest.mark.parametrize(
    "lines,status",
    [
        (with_("Upgrade", "WebSocket"), 101),
        (with_("Connection", "keep-alive, Upgrade"), 101),
        (with_("Connection", "UPGRADE"), 101),
        (with_("Upgrade", "h2c, websocket"), 101),
        (with_("Host", None), 400),
        (with_("Upgrade", None), 400),
        (with_("Upgrade", "websockets"), 400),
        (with_("Connection", "keep-alive"), 400),
        (with_("Sec-WebSocket-Version", "8"), 426),
        (with_("Sec-WebSocket-Version", None), 426),
        (with_("Sec-WebSocket-Key", None), 400),
        (with_("Sec-WebSocket-Key", "dG9vc2hvcnQ="), 400),
        (with_("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="), 400),
        (GOOD + ["Sec-WebSocket-Key: " + KEY], 400),  # repeated
    ],
)
def test_upgrade_validation(lines, status):
    assert status_of(lines) == status


def test_426_names_the_version():
    with pytest.raises(H.HttpError) as e:
        H.validate_upgrade(req(with_("Sec-WebSocket-Version", "12")))
    assert e.value.status == 426
    from ringws.http import error_response

    resp = error_response(e.value)
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in resp


@pytest.mark.parametrize("line,status", [("POST /echo HTTP/1.1", 405), ("GET /echo HTTP/1.0", 400)])
def test_method_and_version(line, status):
    assert status_of(GOOD, line) == status


@pytest.mark.parametrize("line", ["GET /echo", "GET  /echo HTTP/1.1", "GET echo HTTP/1.1", "GET /echo SPDY/3"])
def test_malformed_request_line_is_400(line):
    with pytest.raises(H.HttpError) as e:
        req(GOOD, line)
    assert e.value.status == 400


@pytest.mark.parametrize("bad", ["NoColon", " Leading: space", "Host : x", ": no name"])
def test_malformed_header_is_400(bad):
    with pytest.raises(H.HttpError) as e:
        req(GOOD + [bad])
    assert e.value.status == 400


def test_too_many_headers_is_431():
    with pytest.raises(H.HttpError) as e:
        req(GOOD + ["X-%d: y" % i for i in range(H.MAX_HEADERS)])
    assert e.value.status == 431


def test_find_end_resumes_across_reads():
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = bytearray(64)
    got = 0
    end = -1
    for b in data:  # one byte per read
        buf[got] = b
        end = H.find_end(buf, got, got + 1)
        got += 1
        if end >= 0:
            break
    assert end == len(data) == got


def test_subprotocol_selection_follows_server_preference():
    r = req(GOOD + ["Sec-WebSocket-Protocol: chat, superchat"])
    assert H.select_subprotocol(r, ("superchat", "chat")) == "superchat"
    assert H.select_subprotocol(r, ("mqtt",)) is None
    assert H.select_subprotocol(req(GOOD), ("chat",)) is None
    assert b"Sec-WebSocket-Protocol: chat\r\n" in H.response_101("abc", "chat")
    assert b"Sec-WebSocket-Protocol" not in H.response_101("abc")


def test_response_101_shape():
    r = H.response_101("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    assert r.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and r.endswith(b"\r\n\r\n")
    assert b"\r\nUpgrade: websocket\r\n" in r and b"\r\nConnection: Upgrade\r\n" in r
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in r
