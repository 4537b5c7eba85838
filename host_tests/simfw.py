"""Run the real firmware under the MicroPython unix port for integration tests.

Firmware(...) builds firmware/ with tools/build.py (mpy-cross, as `make sim` does) into a
temporary folder, starts `micropython -X heapsize=110k main.py` on a free port and waits
until it accepts connections. Everything a test sees goes through real sockets.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MICROPYTHON = os.path.join(BIN, "micropython")

sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "firmware"))

import build  # noqa: E402  (tools/build.py)
from conftest import free_port  # noqa: E402


class Firmware:
    def __init__(self, heap="110k", board="host", **settings):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ringws-sim-")
        overrides = dict(settings)
        overrides["port"] = self.port
        build.build(board, self.dir, overrides=overrides)
        self.log_path = os.path.join(self.dir, "console.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [MICROPYTHON, "-X", "heapsize=" + heap, "main.py"],
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    def _wait_listening(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("firmware exited:\n" + self.output())
            if "listening on" in self.output():
                return
            time.sleep(0.02)
        raise RuntimeError("firmware did not start:\n" + self.output())

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def ws_url(self, path="/echo"):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def stats(self, retries=20):
        # /stats needs a free slot: retry briefly while connections are closing.
        for i in range(retries):
            try:
                with urllib.request.urlopen(self.url("/stats"), timeout=5) as r:
                    return json.load(r)
            except Exception:
                if i == retries - 1:
                    raise
                time.sleep(0.05)

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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
