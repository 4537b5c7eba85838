"""The churn mix: one short-lived connection of each kind, for test_hostile_churn and
tools/soak.py. Each kind returns what happened ("clean", "reset", ..., "refused" on a 503).

KINDS: clean WebSocket close, reset mid-frame (SO_LINGER 0), half-closed socket, silent
connect, request then reset, HTTP request then half close.
churn(port, cycles, workers): the mix from `workers` threads; ({kind: count}, errors).
"""
import socket
import threading

from wspeer import FrameReader, connect, frame, parse_response, read_all, reset, ws_request

WORKERS = 3


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


