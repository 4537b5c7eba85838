"""Run the real firmware under the MicroPython unix port for integration tests.

Firmware(...) is tools/fwrun.py's, started at once. Everything a test sees goes through real
sockets.
"""
import os
import shutil
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fwrun  # noqa: E402  (tools/fwrun.py)


class Firmware(fwrun.Firmware):
    """fwrun.Firmware started at once, with settings as keyword arguments."""

    def __init__(self, heap=fwrun.HEAP, board="host", **settings):
        fwrun.Firmware.__init__(self, heap=heap, board=board, server=settings)
        self.start(timeout=10)

    def output(self):
        return self.log(tail=None)

    def stop(self):
        fwrun.Firmware.stop(self)
        shutil.rmtree(os.path.dirname(self.dir), ignore_errors=True)


def raw_connect(port, path="/echo", extra=b""):
    """A raw socket after a successful upgrade (for byte-exact protocol tests)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during handshake: %r" % head)
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def http_request(port, data, timeout=5):
    """Send raw bytes, return everything the server answers until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def read_frame(s):
    """(fin, opcode, payload) of one server frame (unmasked) from a blocking socket."""

    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
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
