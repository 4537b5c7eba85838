"""The load client: CPython, raw sockets, pre-built masked frames, one selector loop.

It never builds a frame while measuring: every connection sends slices of one buffer of
`inflight` identical masked frames, and counts replies by walking frame headers only (or
bytes, for the raw TCP echo). Its own CPU time is measured so the report can show it was
not the bottleneck.
"""
import base64
import collections
import json
import os
import selectors
import socket
import time

MASK = b"\x37\xfa\x21\x3d"


def json_like(size):
    """size bytes of JSON-ish text, as telemetry looks (the compressed cell's payload)."""
    rec = b'{"id": %d, "sensor": "temperature", "value": %d.%d, "ok": true}, '
    out = b"".join(rec % (i, 20 + i % 7, i % 10) for i in range(size // 40 + 1))
    return out[:size]


def deflated(payload):
    """payload as a permessage-deflate client sends it: raw deflate, window 9, the sync
    flush's 00 00 ff ff taken off."""
    import zlib

    c = zlib.compressobj(6, zlib.DEFLATED, -9)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def masked_frame(size, opcode=2, fin=True, deflate=False):
    """One masked frame of size payload bytes; deflate: JSON-like text, compressed (RSV1).
    Returns (frame, the payload as the echo returns it)."""
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    plain = payload
    if deflate:
        plain = json_like(size)
        payload = deflated(plain)
        size = len(payload)
        opcode = 0x41  # RSV1 + text
    head = bytearray([(0x80 if fin else 0) | opcode])
    if size < 126:
        head.append(0x80 | size)
    elif size < 65536:
        head.append(0x80 | 126)
        head += size.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += size.to_bytes(8, "big")
    body = bytes(b ^ MASK[i & 3] for i, b in enumerate(payload))
    return bytes(head) + MASK + body, plain


class CtlError(Exception):
    """The target's control port gave no usable answer (the target may be out of heap)."""


def ctl(port, cmd, timeout=10):
    """One command on a target's control port (servers/ctl.py); returns the JSON reply.

    "mem" and "off" are retried (a target at the edge of its heap may fail to answer
    once); "on" is not, since it re-enables the collector the first time it runs.
    """
    tries = 1 if cmd == "on" else 3
    why = None
    for attempt in range(tries):
        if attempt:
            time.sleep(0.1 * attempt)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                s.sendall(cmd.encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
        except OSError as e:
            why = repr(e)
            continue
        try:
            reply = json.loads(data)
        except ValueError:
            why = "reply %r" % data[:60]
            continue
        if "error" not in reply:
            return reply
        why = reply["error"]
    raise CtlError("control port: %r got no answer (%s)" % (cmd, why))


class HandshakeError(Exception):
    pass


def connect(port, path, timeout=5.0, deflate=False):
    """A connected blocking socket, upgraded when path is given; returns (sock, leftover).
    deflate: offer permessage-deflate, and insist that it is accepted."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if path is None:
        return s, b""
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
              b"\r\nSec-WebSocket-Version: 13\r\n" + (
                  b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                  if deflate else b"") + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = s.recv(4096)
        except OSError as e:
            s.close()
            raise HandshakeError("handshake: %s" % e)
        if not chunk:
            s.close()
            raise HandshakeError("closed during handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        s.close()
        # The status line and, for an error, the start of the body: it says why (ringws
        # tells "all connection slots are busy" from "out of memory").
        why = head.split(b"\r\n")[0].decode("latin-1")
        body = rest.strip()[:80].decode("latin-1", "replace")
        raise HandshakeError(why + (": " + body if body else ""))
    if deflate and b"permessage-deflate" not in head:
        s.close()
        raise HandshakeError("permessage-deflate declined")
    return s, rest


class FrameCounter:
    """Counts complete data messages in a server's (unmasked) frame stream, headers only."""

    def __init__(self):
        self.buf = b""
        self.skip = 0
        self.pending_fin = False
        self.closed = False
        self.payload = 0

    def feed(self, data):
        done = 0
        n = len(data)
        skip = self.skip
        if skip:
            if n < skip:
                self.skip = skip - n
                return 0
            self.skip = 0
            if self.pending_fin:
                done = 1
            if n == skip:
                return done
            data = data[skip:]
            n -= skip
        if self.buf:
            data = self.buf + data
            n = len(data)
            self.buf = b""
        pos = 0
        while pos + 2 <= n:
            b0 = data[pos]
            ln = data[pos + 1] & 127
            h = 2
            if ln == 126:
                if pos + 4 > n:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                h = 4
            elif ln == 127:
                if pos + 10 > n:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                h = 10
            op = b0 & 15
            if op == 8:
                self.closed = True
            end = pos + h + ln
            fin = b0 & 0x80 and op < 8
            if op < 8:
                self.payload += ln
            if end > n:
                self.skip = end - n
                self.pending_fin = fin
                return done
            pos = end
            if fin:
                done += 1
        if pos < n:
            self.buf = data[pos:]
        return done


class ByteCounter:
    """The raw echo's counterpart: a message is back when its bytes are back."""

    def __init__(self, frame_len):
        self.frame_len = frame_len
        self.rest = 0
        self.closed = False

    def feed(self, data):
        total = self.rest + len(data)
        self.rest = total % self.frame_len
        return total // self.frame_len


class Conn:
    __slots__ = ("sock", "counter", "owed", "tail", "sent_at", "done", "dead")

    def __init__(self, sock, counter):
        self.sock = sock
        self.counter = counter
        self.owed = 0
        self.tail = None
        self.sent_at = collections.deque()
        self.done = 0
        self.dead = None


def open_conns(port, path, n, frame_len, deflate=False):
    conns = []
    for _ in range(n):
        s, rest = connect(port, path, deflate=deflate)
        c = Conn(s, ByteCounter(frame_len) if path is None else FrameCounter())
        if rest:
            c.counter.feed(rest)
        conns.append(c)
    return conns


def close_conns(conns, path):
    for c in conns:
        try:
            if path is not None and c.dead is None:
                c.sock.setblocking(True)
                c.sock.settimeout(0.2)
                c.sock.sendall(b"\x88\x82" + MASK + bytes([0x03 ^ MASK[0], 0xE8 ^ MASK[1]]))
        except OSError:
            pass
        c.sock.close()


def run_load(port, path, size, inflight, nconns, duration, warmup=0.1, max_messages=None,
             latency=True, conns=None, deflate=False):
    """Keep `inflight` messages in flight on each of `nconns` connections.

    Returns a dict: messages, MB (payload one way), seconds, msg_s, mb_s, client_cpu (share
    of one core), latencies (seconds, measured after warm-up), errors.
    With max_messages, stops once that many replies arrived (for allocation counting).
    With conns (from open_conns), uses and keeps those connections: nothing is opened or
    closed inside the measurement.
    """
    frame, _payload = masked_frame(size, deflate=deflate)
    flen = len(frame)
    batch = memoryview(frame * inflight)
    keep = conns is not None
    if not keep:
        conns = open_conns(port, path, nconns, flen, deflate)
    sel = selectors.DefaultSelector()
    lat = []
    now = time.perf_counter
    for c in conns:
        c.sock.setblocking(False)
        c.owed = inflight
        sel.register(c.sock, selectors.EVENT_READ, c)
    recv_size = max(65536, flen * inflight)
    issued = [0]

    def pump(c):
        # Send what is owed: first the unsent tail, then whole frames from the batch.
        if c.tail is not None:
            try:
                k = c.sock.send(c.tail)
            except BlockingIOError:
                return
            c.tail = c.tail[k:] if k < len(c.tail) else None
            if c.tail is not None:
                return
        while c.owed:
            k = min(c.owed, inflight)
            if max_messages:
                k = min(k, max_messages - issued[0])
                if k <= 0:
                    return
            issued[0] += k
            buf = batch[:k * flen]
            try:
                sent = c.sock.send(buf)
            except BlockingIOError:
                return
            t = now()
            c.owed -= k
            c.sent_at.extend([t] * k)
            if sent < len(buf):
                c.tail = buf[sent:]
                return

    t0 = now()
    for c in conns:
        pump(c)
    measuring = False
    start = end = None
    base_done = 0
    cpu0 = time.process_time()
    stop_at = t0 + warmup + duration
    total = 0
    errors = []
    while True:
        t = now()
        if not measuring and t - t0 >= warmup:
            measuring = True
            start = t
            cpu0 = time.process_time()
            base_done = total
        if t >= stop_at or (max_messages and total >= max_messages):
            break
        events = sel.select(0.5)
        if not events and now() - t > 0.45:
            errors.append("stalled %.1fs" % (now() - t))
            break
        for key, mask in events:
            c = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(recv_size)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError as e:
                    c.dead = str(e)
                    data = b""
                if data is not None:
                    if not data:
                        c.dead = c.dead or "closed by server"
                        errors.append(c.dead)
                        sel.unregister(c.sock)
                        continue
                    k = c.counter.feed(data)
                    if k:
                        tr = now()
                        c.done += k
                        total += k
                        sa = c.sent_at
                        if measuring and latency:
                            for _ in range(k):
                                lat.append(tr - sa.popleft())
                        else:
                            for _ in range(k):
                                sa.popleft()
                        c.owed += k
                    if c.counter.closed:
                        c.dead = "close frame from server"
                        errors.append(c.dead)
                        sel.unregister(c.sock)
                        continue
            pump(c)
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.tail is not None else 0)
            if key.events != want:
                sel.modify(c.sock, want, c)
        if errors and len(errors) >= nconns:
            break
    end = now()
    cpu = time.process_time() - cpu0
    sel.close()
    if not keep:
        close_conns(conns, path)
    if start is None:
        start, base_done = t0, 0
    secs = max(end - start, 1e-9)
    msgs = total - base_done
    return {"messages": msgs, "seconds": secs, "msg_s": msgs / secs,
            "mb_s": msgs * size / secs / 1e6, "client_cpu": cpu / secs,
            "latencies": lat, "errors": errors, "total": total}


def echo_check(port, path, size=16):
    """One message, byte-for-byte: proves the target really echoes (used by the smoke test)."""
    frame, payload = masked_frame(size)
    s, rest = connect(port, path)
    try:
        s.sendall(frame)
        data = rest
        want = len(frame) if path is None else 2 + (2 if size >= 126 else 0) + size
        while len(data) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if path is None:
            return data[:len(frame)] == frame
        # Header and payload of an unfragmented binary reply.
        return data[0] == 0x82 and data[-size:] == payload
    finally:
        s.close()
