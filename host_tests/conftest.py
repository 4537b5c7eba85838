"""Shared helpers for the host tests.

- firmware/ goes on sys.path (appended, so it shadows nothing) and `ringws` imports as is;
  tools/ goes on it too: the firmware runner is tools/fwrun.py, raw peers tools/wspeer.py.
- client_frame(): a client (masked) frame, with knobs to break every rule RFC 6455 has.
- encode_frame(): a whole frame, masked (a client's) or not (a server's).
- parse_server_frames(): split what the server wrote into (fin, opcode, payload) tuples.
- make_proto(): a sans-I/O Protocol over fresh buffers; ring_out(): drain its send ring.
- free_port(): a TCP port on 127.0.0.1 that nothing uses now (tools/fwrun.py).
- FAST: server timeouts short enough that every timeout case ends in about a second.
- assert_baseline(fw, base): a running firmware's resources back at a baseline.

Tests import the helpers with `from conftest import ...` (host_tests is on sys.path).
"""
import os
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
if FIRMWARE not in sys.path:
    sys.path.append(FIRMWARE)
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from fwrun import free_port  # noqa: E402,F401  (tools/fwrun.py)

_rng = random.Random(6455)

# Quick timeouts so every timeout case finishes in about a second.
FAST = {
    "handshake_timeout_ms": 500,
    "ping_interval_ms": 300,
    "pong_timeout_ms": 300,
    "close_timeout_ms": 500,
    "tick_ms": 50,
}


def assert_baseline(fw, base, mem_slack=2048, what=""):
    """Slots, connections and fds exactly at baseline (fw.resources()); mem_alloc within a
    small slack (interned strings and the GC's granularity move it by a few hundred bytes)."""
    now = fw.resources()
    for key in ("slots_free", "connections", "http_active", "fds"):
        assert now[key] == base[key], (what, key, base, now, fw.log())
    assert now["mem_alloc"] - base["mem_alloc"] <= mem_slack, (what, base, now)
    return now


def client_frame(opcode, payload=b"", fin=True, rsv=0, mask=None, masked=True, length_bits=None,
                 length=None):
    """One client frame as bytes.

    rsv: the three RSV bits as a number 0-7. mask: 4 bytes (random if None).
    length_bits: force the 7/16/64-bit length form (7, 16, 64) even if not minimal.
    length: the length written in the header, if it must lie about the payload.
    """
    payload = bytes(payload)
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    if length_bits is None:
        length_bits = 7 if n < 126 else 16 if n < 65536 else 64
    out = bytearray([b0])
    mbit = 0x80 if masked else 0
    if length_bits == 7:
        out.append(mbit | n)
    elif length_bits == 16:
        out.append(mbit | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(mbit | 127)
        out += (n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
    if not masked:
        return bytes(out) + payload
    if mask is None:
        mask = bytes(_rng.getrandbits(8) for _ in range(4))
    out += mask
    out += bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes(out)


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return code.to_bytes(2, "big") + reason


def encode_frame(opcode, payload, fin=True, mask=None):
    """A whole frame as bytes: masked with `mask` as a client sends it, unmasked without."""
    return client_frame(opcode, payload, fin=fin, mask=mask, masked=mask is not None)


def parse_server_frames(data):
    """Split server output into frames. Returns (frames, rest): frames are
    (fin, opcode, payload) tuples; rest is an incomplete tail. A server frame with the
    mask bit or RSV bits set is a bug: AssertionError."""
    frames = []
    pos = 0
    data = bytes(data)
    while True:
        if len(data) - pos < 2:
            break
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x70, "server frame with RSV bits"
        n = b1 & 0x7F
        h = 2
        if n == 126:
            if len(data) - pos < 4:
                break
            n = int.from_bytes(data[pos + 2 : pos + 4], "big")
            h = 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            n = int.from_bytes(data[pos + 2 : pos + 10], "big")
            h = 10
        if len(data) - pos < h + n:
            break
        frames.append((bool(b0 & 0x80), b0 & 0x0F, data[pos + h : pos + h + n]))
        pos += h + n
    return frames, data[pos:]


def make_proto(recv=512, ring=2048, mbuf=1024, can_stream=False):
    from ringws.protocol import Protocol

    p = Protocol(bytearray(recv), bytearray(ring), bytearray(mbuf))
    p.upgrade(can_stream)
    return p


def ring_out(proto):
    """Everything queued in the protocol's send ring, consumed (what a socket would get)."""
    ring = proto.ring
    out = bytearray()
    while ring.used:
        k = ring.readable()
        out += bytes(memoryview(ring.buf)[ring.head : ring.head + k])
        ring.consume(k)
    return bytes(out)


def server_frames(proto):
    frames, rest = parse_server_frames(ring_out(proto))
    assert rest == b"", "ring holds a partial frame"
    return frames


@pytest.fixture
def proto():
    return make_proto()


def drive(proto, data, chunk=None, sink=None):
    """Feed data to the protocol in chunks of `chunk` bytes (all at once if None), handle
    every event as a runtime would (consume it at once), and return the events:
      ("msg", text, payload)  ("frag", text, payload, first, last)
      ("close", code, reason)  ("error", code, reason)
    Pongs and close replies stay in the ring unless `sink` (a bytearray) is given: then
    the ring is drained into it whenever the parser reports EV_BLOCKED.
    """
    from ringws import protocol as P

    events = []
    pos = 0
    step = len(data) if chunk is None else chunk
    while True:
        ev = proto.next_event()
        if ev == P._EV_NONE:
            if proto.state == P._CLOSED or pos >= len(data):
                break
            pos += proto.feed(memoryview(data)[pos : pos + max(step, 1)])
            continue
        if ev == P._EV_MESSAGE:
            events.append(("msg", proto.ev_text, bytes(proto.ev_data)))
            proto.consume()
        elif ev == P._EV_FRAGMENT:
            events.append(("frag", proto.ev_text, bytes(proto.ev_data), proto.ev_first, proto.ev_last))
            proto.consume()
        elif ev == P._EV_CLOSE:
            events.append(("close", proto.close_code, proto.close_reason))
        elif ev == P._EV_ERROR:
            events.append(("error", proto.close_code, proto.close_reason))
        elif ev == P._EV_BLOCKED:
            assert sink is not None, "parser blocked on a full ring"
            sink += ring_out(proto)
        else:
            raise AssertionError("unknown event %r" % ev)
    if sink is not None:
        sink += ring_out(proto)
    return events
