"""Helpers for the hostile-input tests, tools/soak.py and tools/fuzz.py.

The firmware runs for real: built with tools/build.py, served by the MicroPython unix port
with an ESP32-sized heap on a free 127.0.0.1 port. Clients here are raw sockets (a hostile
peer does what no library would) plus the real `websockets` client for the well-behaved
ones. Resources are read from /stats and from /proc/<pid>/fd.
"""
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
HEAP = os.environ.get("RINGWS_HEAP", "110k")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)

# Quick timeouts so every timeout case finishes in about a second.
FAST = {
    "handshake_timeout_ms": 500,
    "ping_interval_ms": 300,
    "pong_timeout_ms": 300,
    "close_timeout_ms": 500,
    "tick_ms": 50,
}

# Test entry point: main.py itself, with a hook (launch.after_install) run right after
# app.install() that, for the out-of-memory cases, fills the heap with ballast until only
# `leave_free` bytes are left.
_HOOK_MAIN = """\
import gc
import os
# The ballast as a chain of pairs [rest, piece]: appending to one list would grow it,
# and growing a list takes one block of its whole size, which a fragmented heap may not
# have; every later piece was then refused (seen: 2.8 KB left free for a target of 64).
_ballast = [None]
_held = [0]
def _squeeze(target):
    # Fill the heap with ballast until only `target` bytes are free.
    gc.collect()
    size = 2048
    while size >= 16:
        room = gc.mem_free() - target
        if room < 16:
            break
        try:
            _ballast[0] = [_ballast[0], bytearray(min(room - 16, size))]
            _held[0] += 1
        except MemoryError:
            size //= 2  # no free block that big left: take smaller ones
def _release():
    _ballast[0] = None
    _held[0] = 0
_reserve = None
_digits = bytearray(16)
_target = [None]
def _read_target():
    # The byte count in ./squeeze, None when there is no file, -1 while the test is still
    # writing it (empty or partial: keep the last target). Read into a buffer
    # allocated at start-up: f.read() wants a 256 B block, which a squeezed heap may not
    # have in one piece (it failed on most checks, and then freed memory was never soaked
    # up again). MemoryError (from open() itself) goes to the caller.
    try:
        with open("squeeze", "rb") as f:
            n = f.readinto(_digits)
    except OSError:
        return None
    value = 0
    for i in range(n):
        d = _digits[i] - 48
        if not 0 <= d <= 9:
            return -1
        value = value * 10 + d
    return value if n else -1
def _squeeze_file(now):
    # The test writes a byte count into ./squeeze to take the heap away while the
    # server runs, and deletes the file to give it back. A small reserve, dropped at the
    # start of each check and taken again at its end, lets the check itself run on a
    # starved heap (it is synchronous: nothing else allocates in between).
    global _reserve
    _reserve = None
    try:
        target = _read_target()
    except MemoryError:
        target = -1  # could not even open the file
    if target == -1:
        target = _target[0]  # keep the last target
    was = _target[0]
    _target[0] = target
    if target is None:
        if _held[0]:
            _release()
            gc.collect()
            print("ringws-test: ballast released, heap free %d" % gc.mem_free())
        return
    if target != was:
        print("ringws-test: squeezed to %d" % target)
    _squeeze(target + 300)  # every check soaks up what the server freed since the last
    if _held[0]:
        try:
            _reserve = bytearray(256)
        except MemoryError:
            pass
def _hostile_hook(srv, cfg):
    h = cfg.get("hostile") or {}
    if h.get("leave_free"):
        _squeeze(h["leave_free"])
        print("ringws-test: ballast %d blocks, heap free %d" % (_held[0], gc.mem_free()))
    if h.get("squeeze"):
        srv.add_timer(100, _squeeze_file)
        # Soak again at each accept: what a connection's teardown freed since the last
        # check would otherwise carry the next handshake (a handshake takes a few
        # hundred bytes once its slot has a reader task).
        start = srv._start
        def _start_squeezed(slot, sock, remote):
            if _target[0] is not None and _held[0]:  # (a target is never -1: see above)
                _squeeze(_target[0])
            start(slot, sock, remote)
        srv._start = _start_squeezed
import launch
launch.after_install = _hostile_hook
exec(open("main.py").read())
"""


def micropython():
    exe = os.path.join(VENV_BIN, "micropython")
    return exe if os.path.exists(exe) else "micropython"


class Firmware:
    """The firmware under the unix port: build(), start(), stats(), fds(), stop()."""

    def __init__(self, out_dir, server=None, access=None, heap=HEAP, leave_free=None,
                 squeeze=False):
        self.dir = str(out_dir)
        self.port = free_port()
        self.heap = heap
        self.proc = None
        self._log_from = 0
        # /stats needs the token when one is configured
        self.stats_path = "/stats"
        if access and access.get("token"):
            self.stats_path += "?token=" + access["token"]
        self.hooked = access is not None or leave_free is not None or squeeze
        self.log_path = self.dir + ".log"
        cmd = [sys.executable, os.path.join(ROOT, "tools", "build.py"), "--board", "host",
               "--out", self.dir, "--port", str(self.port)]
        for key, value in (server or {}).items():
            cmd += ["--set", "%s=%s" % (key, json.dumps(value))]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        if self.hooked:
            path = os.path.join(self.dir, "config.json")
            with open(path) as f:
                cfg = json.load(f)
            if access is not None:
                cfg["access"] = access
            cfg["hostile"] = {"leave_free": leave_free, "squeeze": squeeze}
            with open(path, "w") as f:
                json.dump(cfg, f)
            with open(os.path.join(self.dir, "hostile_main.py"), "w") as f:
                f.write(_HOOK_MAIN)

    def start(self, timeout=15):
        log = open(self.log_path, "ab")
        self._log_from = log.tell()  # this run's output starts here
        entry = "hostile_main.py" if self.hooked else "main.py"
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + self.heap, entry],
                                     cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("firmware exited (%s):\n%s" % (self.proc.returncode,
                                                                  self.log()))
            if "listening on" in self.log(since_start=True):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("firmware did not listen on %d:\n%s" % (self.port, self.log()))

    def squeeze(self, leave_free):
        """Take the heap away (ballast until leave_free bytes are free), or give it back
        (None). Applied by a server timer within about 100 ms; waits for the log line."""
        path = os.path.join(self.dir, "squeeze")
        mark = "ringws-test: squeezed" if leave_free is not None else "ringws-test: ballast released"
        seen = self.log(since_start=True).count(mark)
        if leave_free is None:
            os.remove(path)
        else:
            with open(path + ".new", "w") as f:
                f.write(str(leave_free))
            os.replace(path + ".new", path)  # the server never reads a half-written file
        if not wait_until(lambda: self.log(since_start=True).count(mark) > seen, 5):
            raise RuntimeError("squeeze not applied:\n" + self.log())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._log_from)
                return f.read()[-6000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def fds(self):
        """Open file descriptors of the server process."""
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def get(self, path, headers=None, timeout=5):
        """(status, headers dict, body) of one HTTP GET read to EOF."""
        return http_get(self.port, path, headers, timeout)

    def stats(self):
        # /stats is the measuring instrument here: on a busy 110 KiB heap it may itself be
        # refused for memory (docs/hostile.md, finding 3), so ask again a few times.
        for _ in range(5):
            status, _, body = self.get(self.stats_path)
            if status == 200:
                return json.loads(body)
            time.sleep(0.1)
        raise AssertionError("/stats answered %r %r\n%s" % (status, body[:200], self.log()))

    def settle(self, timeout=5.0, busy=0):
        """Wait until no connection holds a slot (beyond the /stats request itself, and
        `busy` more); returns that /stats."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st["slots_free"] >= st["slots_total"] - 1 - busy and st["connections"] <= busy:
                return st
            if time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def resources(self):
        """What must return to baseline after every scenario."""
        st = self.settle()
        return {"slots_free": st["slots_free"], "connections": st["connections"],
                "http_active": st["http_active"], "mem_alloc": st["mem_alloc"],
                "fds": self.fds()}


def assert_baseline(fw, base, mem_slack=2048, what=""):
    """Slots, connections and fds exactly at baseline; mem_alloc within a small slack
    (interned strings and the GC's granularity move it by a few hundred bytes)."""
    now = fw.resources()
    for key in ("slots_free", "connections", "http_active", "fds"):
        assert now[key] == base[key], (what, key, base, now, fw.log())
    assert now["mem_alloc"] - base["mem_alloc"] <= mem_slack, (what, base, now)
    return now


# -- raw clients --------------------------------------------------------------------------

def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def reset(sock):
    """Close with SO_LINGER 0: the peer sees a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock, timeout=5.0, limit=1 << 20):
    """Everything until EOF (or a reset, or the timeout)."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while len(out) < limit and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


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


def parse_response(data):
    """(status, headers with lower-case names, body) of a raw HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1."):
        return None, {}, data
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def http_get(port, path, headers=None, timeout=5.0):
    s = connect(port, timeout)
    try:
        req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        s.sendall((req + "\r\n").encode())
        return parse_response(read_all(s, timeout))
    finally:
        s.close()


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


def wait_until(pred, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def warm_slots(port, n, timeout=5.0):
    """n connections open at once, one message each, then closed: every slot then has
    its reader task (created at a slot's first connection and kept, parked, between
    connections), so a baseline taken after this is the steady one."""
    from contextlib import ExitStack

    from websockets.sync.client import connect as ws_connect

    with ExitStack() as stack:
        conns = [stack.enter_context(ws_connect("ws://127.0.0.1:%d/echo" % port,
                                                open_timeout=timeout, close_timeout=timeout))
                 for _ in range(n)]
        for ws in conns:
            ws.send(b"warm")
        for ws in conns:
            assert ws.recv(timeout) == b"warm"


def echo_roundtrip(port, payload=b"ping", timeout=5.0):
    """One message through /echo with the real websockets client."""
    from websockets.sync.client import connect as ws_connect

    with ws_connect("ws://127.0.0.1:%d/echo" % port, open_timeout=timeout,
                    close_timeout=timeout) as ws:
        ws.send(payload)
        return ws.recv(timeout)
