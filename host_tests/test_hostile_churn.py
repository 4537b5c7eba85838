"""10,000 connect/close cycles against the firmware under the unix port, mixing clean
WebSocket closes, resets (SO_LINGER 0), half-closed sockets, silent connects and HTTP
requests. Afterwards slots, connections, file descriptors and mem_alloc (after
gc.collect()) must equal the baseline, and every cycle must be accounted for in /stats.

RINGWS_CHURN=N changes the number of cycles (tools/soak.py runs longer mixes).
"""
import os
import socket
import threading
import time

import pytest

from hostile_util import (
    Firmware,
    FrameReader,
    assert_baseline,
    connect,
    echo_roundtrip,
    frame,
    parse_response,
    read_all,
    reset,
    ws_request,
)

CYCLES = int(os.environ.get("RINGWS_CHURN", "10000"))
WORKERS = 3  # fewer than the slots: a cycle never has to be refused
SLOTS = 4


def _handshake(s):
    s.sendall(ws_request())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    status = parse_response(head)[0]
    return status, head.partition(b"\r\n\r\n")[2]


def ws_clean(port):
    s = connect(port)
    status, _ = _handshake(s)
    if status != 101:
        s.close()
        return "refused"
    s.sendall(frame(0x2, b"churn") + frame(0x8, b"\x03\xe8bye"))
    r = FrameReader(s)
    assert r.next()[::2] == (0x2, b"churn")
    assert r.close_code() == 1000
    assert read_all(s, 5) == b""  # the server closes the TCP connection first
    s.close()
    return "clean"


def ws_reset(port):
    s = connect(port)
    status, _ = _handshake(s)
    s.sendall(frame(0x1, b"x" * 100)[:50])  # and vanish mid-frame
    reset(s)
    return "reset" if status == 101 else "refused"


def ws_half_close(port):
    s = connect(port)
    status, _ = _handshake(s)
    s.shutdown(socket.SHUT_WR)  # EOF without a close frame; our side can still read
    read_all(s, 5)
    s.close()
    return "half" if status == 101 else "refused"


def silent(port):
    connect(port).close()
    return "silent"


def request_reset(port):
    s = connect(port)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
    reset(s)
    return "request_reset"


def http_half_close(port):
    s = connect(port)
    s.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    status = parse_response(read_all(s, 5))[0]
    s.close()
    assert status in (404, 503), status
    return "http" if status == 404 else "refused"


KINDS = (ws_clean, ws_reset, ws_half_close, silent, request_reset, http_half_close)


def churn(port, cycles, workers=WORKERS):
    """Run the mix from `workers` threads; returns {kind: count} and any errors."""
    counts = {}
    errors = []
    lock = threading.Lock()
    next_i = [0]

    def work():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= cycles or len(errors) > 5:
                return
            try:
                kind = KINDS[i % len(KINDS)](port)
            except Exception as e:  # collected, reported below
                with lock:
                    errors.append("cycle %d %s: %r" % (i, KINDS[i % len(KINDS)].__name__, e))
                continue
            with lock:
                counts[kind] = counts.get(kind, 0) + 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, errors


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("churn") / "fw",
                 server={"max_connections": SLOTS, "handshake_timeout_ms": 2000}).start()
    yield f
    f.stop()


@pytest.mark.timeout(240)
def test_churn_returns_every_resource(fw):
    echo_roundtrip(fw.port)
    churn(fw.port, 60)  # warm every path once (lazy imports, interned names)
    base = fw.resources()
    st0 = fw.stats()
    t0 = time.monotonic()
    counts, errors = churn(fw.port, CYCLES)
    took = time.monotonic() - t0
    assert not errors, errors
    assert fw.alive(), fw.log()
    assert sum(counts.values()) == CYCLES
    assert counts.get("refused", 0) == 0, counts
    after = assert_baseline(fw, base, what="after %d cycles" % CYCLES)
    st1 = fw.stats()
    closed = {k: st1["closed"][k] - st0["closed"][k] for k in st1["closed"]}
    # Every connection ended exactly once, with the cause its client gave it. (+1 http:
    # the /stats request that read st1 counts itself only on the next read.)
    per_kind = CYCLES // len(KINDS)
    assert closed["normal"] >= per_kind
    assert closed["peer_reset"] >= 2 * per_kind  # resets and half-closes
    assert sum(closed.values()) >= CYCLES
    print("\nchurn: %d cycles in %.1f s; %s; closed %s; base %s; after %s"
          % (CYCLES, took, counts, {k: v for k, v in closed.items() if v}, base, after))
    assert echo_roundtrip(fw.port, b"still serving") == b"still serving"
