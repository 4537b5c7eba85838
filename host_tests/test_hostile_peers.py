"""Slow and hostile peers against the firmware under the MicroPython unix port.

One firmware process (4 slots, ESP32-sized heap, timeouts shortened so each case takes
about a second) serves every case here. After each case the slots, connections, open file
descriptors and mem_alloc (after gc.collect(), from /stats) must be back at the baseline
taken before it, and well-behaved clients must have been served throughout.
"""
import os
import select
import socket
import threading
import time

import pytest

from conftest import FAST, assert_baseline
from fwrun import Firmware, until
from wspeer import (
    FrameReader,
    closed_by_peer,
    connect,
    echo_roundtrip,
    frame,
    parse_response,
    read_all,
    reset,
    warm_slots,
    ws_open,
    ws_request,
)

SLOTS = 4
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("hostile") / "fw",
                 server=dict(FAST, max_connections=SLOTS)).start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    """Keepalive off: clients that are admitted stay admitted however long a case takes."""
    f = Firmware(tmp_path_factory.mktemp("hostile") / "calm",
                 server=dict(FAST, max_connections=SLOTS, ping_interval_ms=0)).start()
    yield f
    f.stop()


@pytest.fixture
def base(fw):
    """Resources before the case; the case must give every one of them back."""
    assert fw.alive(), fw.log()
    warm_slots(fw.port, SLOTS)  # lazy imports and every slot's reader: a steady baseline
    b = fw.resources()
    yield b
    assert fw.alive(), fw.log()
    assert echo_roundtrip(fw.port, b"after") == b"after"
    assert_baseline(fw, b)


def closed_count(fw, cause):
    return fw.stats()["closed"][cause]


# -- opening handshake ------------------------------------------------------------------

def test_slowloris_gets_408_after_the_handshake_timeout(fw, base):
    before = closed_count(fw, "handshake_timeout")
    t0 = time.monotonic()  # before the server can start the connection's clock
    s = connect(fw.port)
    stop = threading.Event()

    def trickle():  # a header byte every 100 ms: never completes within the timeout
        try:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            while not stop.wait(0.1):
                s.sendall(b"X")
        except OSError:
            pass

    th = threading.Thread(target=trickle)
    th.start()
    data = read_all(s, 5)
    took = time.monotonic() - t0
    stop.set()
    th.join()
    s.close()
    assert parse_response(data)[0] == 408, data
    timeout = FAST["handshake_timeout_ms"] / 1000
    assert timeout * 0.9 <= took <= timeout + 1.5, took
    assert closed_count(fw, "handshake_timeout") == before + 1


def test_silent_connections_fill_no_slot_for_long(fw, base):
    # Every slot taken by a client that sends nothing; all freed by the timeout.
    socks = [connect(fw.port) for _ in range(SLOTS)]
    time.sleep(0.05)
    for s in socks:
        assert closed_by_peer(s, 3), "a silent connection kept its slot"
        s.close()


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 3000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n",
    b"GET /echo HTTP/1.1\r\n" + b"Cookie: " + b"c" * 2000,  # never ends, larger than recv_buf
], ids=["header-too-long", "too-many-headers", "endless-head"])
def test_oversized_heads_get_431(fw, base, head):
    s = connect(fw.port)
    try:
        s.sendall(head)
    except OSError:
        pass  # the server may answer and close before taking everything
    data = read_all(s, 5)
    s.close()
    status, headers, _ = parse_response(data)
    assert status == 431, data[:200]
    assert headers.get("connection") == "close"


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",  # TLS
    b"\x00" * 64 + b"\r\n\r\n",
    b"\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: \xff\xfe\xc0\xaf\r\n\r\n",  # not UTF-8
    b"GET /echo HTTP/1.1\r\n Folded: x\r\n\r\n",
    b"GET  HTTP/1.1\r\n\r\n",
    b"GET http://evil/echo HTTP/1.1\r\nHost: x\r\n\r\n",
    os.urandom(300) + b"\r\n\r\n" + ws_request(),  # garbage, then a valid handshake
], ids=["tls", "nul", "blank", "ssh", "not-utf8", "folded", "no-target", "absolute",
        "random-then-handshake"])
def test_garbage_before_the_handshake_gets_400(fw, base, garbage):
    s = connect(fw.port)
    s.sendall(garbage)
    data = read_all(s, 5)
    s.close()
    assert parse_response(data)[0] == 400, data[:200]


def test_vanish_mid_handshake(fw, base):
    for how in ("fin", "rst"):
        s = connect(fw.port)
        s.sendall(ws_request()[:40])
        time.sleep(0.05)
        s.close() if how == "fin" else reset(s)


def test_pipelined_handshake_and_frames_in_one_write(fw, base):
    # The client's first frames arrive in the same segment as the request head.
    s = connect(fw.port)
    s.sendall(ws_request() + frame(0x1, b"first") + frame(0x2, b"\x00second")
              + frame(0x8, b"\x03\xe8"))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert parse_response(head)[0] == 101
    r = FrameReader(s)
    assert r.next()[::2] == (0x1, b"first")
    assert r.next()[::2] == (0x2, b"\x00second")
    assert r.close_code() == 1000
    assert closed_by_peer(s)
    s.close()


def test_pipelined_http_requests_answer_the_first_and_close(fw, base):
    s = connect(fw.port)
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    data = read_all(s, 5)
    s.close()
    status, headers, body = parse_response(data)
    assert status == 200 and headers["connection"] == "close"
    assert len(body) == int(headers["content-length"]), "a second response was appended"


# -- after the handshake ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["fin", "rst", "half-close"])
def test_vanish_mid_frame(fw, base, how):
    before = closed_count(fw, "peer_reset")
    s = ws_open(fw.port)
    s.sendall(frame(0x2, b"x" * 600)[:300])  # header and half the payload
    time.sleep(0.05)
    if how == "fin":
        s.close()
    elif how == "rst":
        reset(s)
    else:
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s)
        s.close()
    assert fw.idle()["closed"]["peer_reset"] == before + 1


def test_never_answering_pings_closes_1011_after_keepalive_timeout(fw, base):
    before = closed_count(fw, "ping_timeout")
    t0 = time.monotonic()  # before the server can open it and start the keepalive's clock
    s = ws_open(fw.port)
    r = FrameReader(s, auto_pong=False)
    op, _, payload = r.next()
    assert op == 0x9, "expected a keepalive ping"
    assert r.close_code() == 1011
    took = time.monotonic() - t0
    keepalive = (FAST["ping_interval_ms"] + FAST["pong_timeout_ms"]) / 1000
    assert keepalive * 0.9 <= took <= keepalive + 1.5, took
    assert closed_by_peer(s, 3)
    s.close()
    assert closed_count(fw, "ping_timeout") == before + 1


# Found by this test: server.py's read loop looked at proto.pong_seen right after
# received(n), before next_event() has parsed the pong, so a pong is only noticed when more
# bytes follow it. A quiet client that answers every ping is closed with 1011.
def test_answering_pings_keeps_a_quiet_connection(fw, base):
    s = ws_open(fw.port)
    r = FrameReader(s)  # answers pings
    deadline = time.monotonic() + 1.5
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            r.next(0.2)
        except socket.timeout:
            pass
    assert r.pings >= 2
    s.sendall(frame(0x1, b"still here"))
    assert r.next()[::2] == (0x1, b"still here")
    s.sendall(frame(0x8, b"\x03\xe8"))
    assert r.close_code() == 1000
    s.close()


def test_client_that_stops_reading_is_dropped_and_bounded(fw, base):
    # It floods /echo and never reads: the echo replies fill the ring, the server stops
    # reading, TCP backpressure stalls the client; the keepalive ping cannot be answered
    # through the full pipe, so the server gives up. Meanwhile others are served and the
    # heap does not grow. (The client must not read here: reading even slowly is progress,
    # and the server rightly keeps a connection that makes progress.)
    before = closed_count(fw, "ping_timeout")
    s = ws_open(fw.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(0.5)
    msg = frame(0x2, b"z" * 200)
    sent = 0
    try:
        for _ in range(200000):
            s.sendall(msg)
            sent += len(msg)
    except (socket.timeout, OSError):
        pass
    # Loopback buffers take a few MB before the client stalls; 40 MB would mean the server
    # went on reading without being able to answer.
    assert sent < 40 * 1024 * 1024, "the server kept reading a client that never reads"
    peak = fw.stats()["mem_alloc"]
    assert echo_roundtrip(fw.port, b"others served") == b"others served"
    assert peak - base["mem_alloc"] < 4096
    freed = until(lambda: fw.stats()["connections"] == 0, 5)
    assert freed, "a client that never reads kept its slot"
    assert closed_count(fw, "ping_timeout") == before + 1
    reset(s)


def flood(port, n, timeout=10):
    """n connections begun at once, each sending its upgrade request as soon as it is up.
    (Connected one after another, the listener's short backlog drops SYNs: a connect can
    take 1-3 s, and a connection already accepted into the slot kept for HTTP waited that
    long for its request, beyond handshake_timeout_ms: a 408 that depended on timing.)"""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    waiting = list(socks)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        _, up, _ = select.select([], waiting, [], 0.5)
        for s in up:
            waiting.remove(s)
            s.settimeout(5)
            try:
                s.sendall(ws_request())
            except OSError:
                pass
    assert not waiting, "connections never established"
    return socks


def test_flood_more_clients_than_slots(calm):
    from contextlib import ExitStack

    from websockets.sync.client import connect as ws_connect

    fw = calm
    warm_slots(fw.port, SLOTS)
    base = fw.resources()
    st0 = fw.stats()
    with ExitStack() as stack:
        admitted = [stack.enter_context(ws_connect("ws://127.0.0.1:%d/echo" % fw.port))
                    for _ in range(SLOTS - 1)]  # (every slot but the one kept for HTTP)
        extra = flood(fw.port, 12)
        t0 = time.monotonic()
        answers = []
        for s in extra:
            answers.append(read_all(s, 3))
            s.close()
        took = time.monotonic() - t0
        statuses = [parse_response(a)[0] for a in answers]
        # Each refused client gets a 503 with Retry-After, or (beyond max_rejecting at
        # once) an immediate close; none waits for a slot. One at a time may get the slot
        # kept for HTTP: its upgrade gets 503 too, or 408 when its request came later than
        # handshake_timeout_ms (the flood overflows the accept queue: the kernel holds a
        # client's first bytes back until it retransmits them).
        assert all(st in (503, 408, None) for st in statuses), statuses
        assert statuses.count(408) <= 2, statuses
        assert statuses.count(503) >= 1
        for a in answers:
            if a and parse_response(a)[0] == 503:
                assert parse_response(a)[1]["retry-after"] == "1"
        assert took < 2, "refusals were not quick: %.2f s" % took
        for i, ws in enumerate(admitted):
            ws.send("still served %d" % i)
            assert ws.recv(5) == "still served %d" % i
    assert fw.stats()["rejected_full"] - st0["rejected_full"] == 12 - statuses.count(408)
    assert echo_roundtrip(fw.port, b"after") == b"after"
    assert_baseline(fw, base)
