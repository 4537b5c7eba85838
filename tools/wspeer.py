"""Raw WebSocket and HTTP peers for tests and tools: a hostile peer does what no library
would (half a frame, a reset, a client that stops reading), plus the real `websockets`
client for the well-behaved ones. Everything talks to 127.0.0.1.

connect(port), reset(sock), read_all(sock), closed_by_peer(sock), http_get(port, path),
http_request(port, raw_bytes), ws_request(path), ws_open(port, path), frame(opcode,
payload), read_frame(sock), FrameReader(sock), warm_slots(port, n),
echo_roundtrip(port, payload).
"""
import base64
import os
import socket
import struct
import time

from fwrun import http_get, parse_response, read_all  # noqa: F401  (re-exported for the peers)


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def reset(sock):
    """Close with SO_LINGER 0: the peer sees a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closed_by_peer(sock, timeout=5.0):
    """True when the server closes (EOF or reset) within timeout, ignoring data."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def http_request(port, data, timeout=5.0):
    """Send raw bytes on a fresh connection; everything the server answers until it closes."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        return read_all(s, timeout)
    finally:
        s.close()


def read_frame(sock):
    """(fin, opcode, payload) of the next server frame off a blocking socket, as is (pings
    too); ConnectionError if the server closes first."""

    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    b0, b1 = exact(2)
    assert not b1 & 0x80, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    return bool(b0 & 0x80), b0 & 0x0F, exact(n)


def ws_request(path="/echo", key=None, headers=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           % (path, key))
    for k, v in (headers or {}).items():
        req += "%s: %s\r\n" % (k, v)
    return (req + "\r\n").encode()


def ws_open(port, path="/echo", headers=None, timeout=5.0):
    """A raw socket past a successful opening handshake."""
    s = connect(port, timeout)
    s.sendall(ws_request(path, headers=headers))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during handshake: %r" % head)
        head += chunk
    status = parse_response(head)[0]
    if status != 101:
        s.close()
        raise ConnectionError("handshake answered %r" % head)
    return s


def frame(opcode, payload=b"", fin=True, mask=b"\x01\x02\x03\x04", rsv=0):
    """A client frame (masked unless mask is None)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + body


class FrameReader:
    """Server frames off a raw socket."""

    def __init__(self, sock, auto_pong=True):
        self.sock = sock
        self.buf = b""
        self.auto_pong = auto_pong  # answer keepalive pings and skip them
        self.pings = 0

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def next(self, timeout=5.0):
        """(opcode, fin, payload) of the next frame (pings answered and skipped)."""
        while True:
            op, fin, payload = self._next(timeout)
            if op == 0x9 and self.auto_pong:
                self.pings += 1
                self.sock.sendall(frame(0xA, payload))
                continue
            return op, fin, payload

    def _next(self, timeout):
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        size = 2
        if n == 126:
            size = 4
            self._need(size, deadline)
            n = struct.unpack(">H", self.buf[2:4])[0]
        elif n == 127:
            size = 10
            self._need(size, deadline)
            n = struct.unpack(">Q", self.buf[2:10])[0]
        self._need(size + n, deadline)
        payload = self.buf[size:size + n]
        self.buf = self.buf[size + n:]
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def close_code(self, timeout=5.0):
        """Skip frames until a close frame; its code (1005 if empty)."""
        while True:
            op, _, payload = self.next(timeout)
            if op == 0x8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005


def warm_slots(port, n, timeout=5.0):
    """n connections open at once (n - 1 WebSockets, one message each, and a /stats
    request: WebSockets may hold every slot but one), then closed: every slot then has
    its reader task (created at a slot's first connection and kept, parked, between
    connections), so a baseline taken after this is the steady one."""
    from contextlib import ExitStack

    from websockets.sync.client import connect as ws_connect

    with ExitStack() as stack:
        conns = [stack.enter_context(ws_connect("ws://127.0.0.1:%d/echo" % port,
                                                open_timeout=timeout, close_timeout=timeout))
                 for _ in range(n - 1)]
        for ws in conns:
            ws.send(b"warm")
        for ws in conns:
            assert ws.recv(timeout) == b"warm"
        assert http_get(port, "/stats", timeout=timeout)[0] in (200, 401)  # (401: a token)


def echo_roundtrip(port, payload=b"ping", timeout=5.0):
    """One message through /echo with the real websockets client."""
    from websockets.sync.client import connect as ws_connect

    with ws_connect("ws://127.0.0.1:%d/echo" % port, open_timeout=timeout,
                    close_timeout=timeout) as ws:
        ws.send(payload)
        return ws.recv(timeout)
