"""Request bodies for srv.http routes (methods=...), end to end under the MicroPython unix
port at 110 KiB with raw sockets and the standard library's http.client: every status the
body path answers (200, 400, 405, 408, 411, 413, 417, 100-continue), bodies split across
many writes or arriving slowly, the exact limit (the slot: head + body) and one byte more,
and an open WebSocket that none of it disturbs. The routes: host_tests/body_main.py."""
import hashlib
import http.client
import os
import socket
import time

import pytest
from websockets.sync.client import connect

from conftest import ROOT
from fwrun import Firmware, parse_response, read_all, until

pytestmark = pytest.mark.timeout(90)
DEADLINE_MS = 1500  # handshake_timeout_ms: the head, then the body, each within it


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("bodies") / "fw",
                 entry=os.path.join(ROOT, "host_tests", "body_main.py"),
                 # 6 slots: body.py (about 2.5 KB of heap on this port, loaded with the
                 # first body route) and the test's routes beside the default app.
                 server={"handshake_timeout_ms": DEADLINE_MS, "max_connections": 6}).start()
    yield f
    f.stop()
    assert "Traceback" not in f.log(tail=None), f.log()


@pytest.fixture
def ws(fw):
    """An open WebSocket on /echo during the test; checked to still echo at the end."""
    with connect(fw.ws_url("/echo"), open_timeout=5) as c:
        c.send("before")
        assert c.recv(5) == "before"
        yield c
        c.send("after")
        assert c.recv(5) == "after"


def form(method, body=b""):
    """What /form answers."""
    return ("%s %d %s" % (method, len(body), hashlib.sha1(body).hexdigest())).encode()


def head(method, path="/form", length=None, extra=""):
    h = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    if length is not None:
        h += "Content-Length: %s\r\n" % length
    return (h + extra + "\r\n").encode()


def raw(fw, data, timeout=5.0):
    """Send data at once, read the answer to EOF: (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=timeout)
    try:
        s.sendall(data)
        return parse_response(read_all(s, timeout))
    finally:
        s.close()


def slot_bytes(fw):
    cfg = fw.config["server"]
    return cfg["recv_buf"] + cfg["send_ring"] + cfg["max_message"]


def test_post_and_put_bodies_reach_the_route(fw, ws):
    assert raw(fw, head("POST", length=5) + b"hello")[::2] == (200, form("POST", b"hello"))
    assert raw(fw, head("PUT", length=3) + b"abc")[::2] == (200, form("PUT", b"abc"))
    assert raw(fw, head("POST", length=0))[::2] == (200, form("POST"))
    # GET on the same route: no body, req.body is b""; HEAD answered with GET's headers.
    assert raw(fw, head("GET"))[::2] == (200, form("GET"))
    status, headers, body = raw(fw, head("HEAD"))
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(form("HEAD"))))
    # The same Content-Length twice is one length.
    assert raw(fw, head("POST", length="4, 4") + b"abcd")[::2] == (200, form("POST", b"abcd"))


def test_http_client_posts_a_form(fw, ws):
    c = http.client.HTTPConnection("127.0.0.1", fw.port, timeout=5)
    c.request("POST", "/form", body=b"ssid=home&pass=s%C3%A9cret",
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    assert (r.status, r.read()) == (200, form("POST", b"ssid=home&pass=s%C3%A9cret"))
    c.close()
    c = http.client.HTTPConnection("127.0.0.1", fw.port, timeout=5)
    c.request("POST", "/upload", body=b"x" * 700)
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"700")
    c.close()


def test_body_split_across_many_writes(fw, ws):
    body = bytes(range(256)) * 3
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = head("POST", length=len(body)) + body
    for i in range(0, len(data), 7):  # the head too, cut anywhere
        s.sendall(data[i : i + 7])
        time.sleep(0.001)
    status, _, got = parse_response(read_all(s, 5))
    s.close()
    assert (status, got) == (200, form("POST", body))


def test_body_arriving_slowly_within_the_deadline(fw, ws):
    body = b"0123456789" * 4
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(head("POST", length=len(body)))
    t0 = time.monotonic()
    for i in range(0, len(body), 4):  # 10 pieces over about 60% of the deadline
        time.sleep(DEADLINE_MS / 1000 * 0.06)
        s.sendall(body[i : i + 4])
    assert time.monotonic() - t0 < DEADLINE_MS / 1000
    status, _, got = parse_response(read_all(s, 5))
    s.close()
    assert (status, got) == (200, form("POST", body))


def test_body_slower_than_the_deadline_gets_408(fw, ws):
    before = fw.stats()["closed"]["handshake_timeout"]
    t0 = time.monotonic()  # before the server can start any clock of this connection
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(head("POST", length=10) + b"abc")  # 7 bytes never come
    status, headers, body = parse_response(read_all(s, 5))
    took = time.monotonic() - t0
    s.close()
    assert status == 408, body
    assert headers["Connection"] == "close"
    assert DEADLINE_MS / 1000 * 0.9 <= took <= DEADLINE_MS / 1000 + 1.5, took
    assert until(lambda: fw.stats()["closed"]["handshake_timeout"] == before + 1)


def test_exact_limit_body_and_one_byte_more(fw, ws):
    # The whole request (head and body) lives in the slot: recv_buf + send_ring + max_message.
    h = head("POST", "/upload", length="%04d" % 0)
    limit = slot_bytes(fw) - len(h)
    assert raw(fw, head("POST", "/upload", length="%04d" % limit) + b"y" * limit)[::2] == (
        200, str(limit).encode())
    status, headers, body = raw(fw, head("POST", "/upload", length="%04d" % (limit + 1))
                                + b"y" * (limit + 1))
    assert status == 413, body
    assert headers["Connection"] == "close"
    assert ("at most %d bytes" % limit).encode() in body


def test_413_is_answered_before_the_body_is_read(fw, ws):
    # The head alone: the answer comes without a byte of the (large) body sent.
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(head("POST", length=1000000))
    status, headers, _ = parse_response(read_all(s, 5))
    s.close()
    assert (status, headers["Connection"]) == (413, "close")
    # http.client sends the body anyway: it still gets the 413 (or, at worst, a reset
    # while its body is refused: never a 200 or a hang).
    c = http.client.HTTPConnection("127.0.0.1", fw.port, timeout=5)
    try:
        c.request("POST", "/form", body=b"z" * 100000)
        r = c.getresponse()
        assert r.status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass
    c.close()


@pytest.mark.parametrize("data,status", [
    (head("POST"), 411),  # no Content-Length
    (head("PUT"), 411),
    (head("POST", extra="Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n", 411),
    (head("POST", length=5, extra="Transfer-Encoding: chunked\r\n") + b"hello", 411),
    (head("POST", length=-1), 400),
    (head("POST", length="+5") + b"hello", 400),
    (head("POST", length="5x") + b"hello", 400),
    (head("POST", length="") + b"hello", 400),
    (head("POST", length=5, extra="Content-Length: 6\r\n") + b"hello!", 400),
    (head("POST", length="5, 6") + b"hello!", 400),
    (head("POST", length=99999999999999999999), 413),
    (head("POST", length=5, extra="Expect: teapot\r\n") + b"hello", 417),
])
def test_bad_bodies_get_a_clear_status(fw, ws, data, status):
    got, headers, body = raw(fw, data)
    assert got == status, body
    assert headers["Connection"] == "close"
    assert body.startswith(b"%d " % status)


@pytest.mark.parametrize("method,path,allow", [
    ("DELETE", "/form", "GET, POST, PUT, HEAD"),
    ("GET", "/upload", "POST"),
    ("HEAD", "/upload", "POST"),
    ("PUT", "/upload", "POST"),
    ("POST", "/stats", "GET, HEAD"),
    ("POST", "/", "GET, HEAD"),
])
def test_a_method_the_route_does_not_take_gets_405_with_allow(fw, method, path, allow):
    status, headers, _ = raw(fw, head(method, path, length=0))
    assert status == 405
    assert headers["Allow"] == allow


def test_expect_100_continue_is_answered(fw, ws):
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(head("POST", length=5, extra="Expect: 100-continue\r\n"))
    first = s.recv(100)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(b"hello")
    status, _, body = parse_response(read_all(s, 5))
    s.close()
    assert (status, body) == (200, form("POST", b"hello"))
    # Too large: the final answer instead of 100, so the client never sends the body.
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(head("POST", length=slot_bytes(fw), extra="Expect: 100-continue\r\n"))
    status, _, _ = parse_response(read_all(s, 5))
    s.close()
    assert status == 413


def test_websocket_stays_served_while_a_body_trickles_in(fw, ws):
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(head("POST", length=6) + b"ab")
    for i in range(20):
        ws.send("m%d" % i)
        assert ws.recv(5) == "m%d" % i
    s.sendall(b"cdef")
    status, _, body = parse_response(read_all(s, 5))
    s.close()
    assert (status, body) == (200, form("POST", b"abcdef"))
    fw.idle(busy=1)  # only the WebSocket holds a slot afterwards
