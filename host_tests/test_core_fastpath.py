"""The fast-path kernels: frame_scan (recognise a whole small data frame in one call) and
put_frame (header + payload into a ring in one call).

Both are checked against the general code they shortcut (FrameHeader.parse and the
protocol's rules; write_header + RingBuffer.write), on CPython with hypothesis and under
the real MicroPython interpreter, where they are viper.
"""
import json
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIRMWARE, ROOT, client_frame, make_proto, parse_server_frames, ring_out
from ringws import kernels as K
from ringws.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, FrameHeader, write_header
from ringws.ring import RingBuffer

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_scan(buf, pos, end):
    """What frame_scan must answer, from the general parser: the packed result for a
    whole FIN text/binary masked frame with a 7/16-bit length; minus the frame's size
    when such a frame's header is there but not all of its payload; else -1."""
    h = FrameHeader()
    size = h.parse(buf, pos, end)
    if not size or not h.fin or buf[pos] & 0x70 or h.opcode not in (OP_TEXT, OP_BINARY):
        return -1, None
    if not buf[pos + 1] & 0x80 or h.length < 0 or h.length > 65535 or size > 8:
        return -1, None
    if end - pos < size + h.length:
        return -(size + h.length), None
    return (h.opcode << 20) | (size << 16) | h.length, bytes(h.mask)


frames = st.builds(
    lambda op, payload, fin, rsv, masked, bits: client_frame(
        op, payload, fin=fin, rsv=rsv, masked=masked, length_bits=bits),
    st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT, OP_PING, OP_CLOSE, 3, 0xB]),
    st.binary(max_size=300),
    st.booleans(),
    st.sampled_from([0, 0, 0, 4]),
    st.sampled_from([True, True, True, False]),
    st.sampled_from([None, None, 16, 64]),
)


@FAST
@given(frames, st.binary(max_size=8), st.integers(0, 400))
def test_frame_scan_agrees_with_the_general_parser(frame, before, cut):
    buf = bytearray(before + frame)
    end = min(len(buf), len(before) + cut)
    mask = bytearray(4)
    got = K.frame_scan(buf, len(before), end, mask)
    want, want_mask = reference_scan(buf, len(before), end)
    assert got == want
    if want >= 0:
        assert bytes(mask) == want_mask


@FAST
@given(st.integers(16, 300), st.integers(0, 299), st.integers(0, 299),
       st.sampled_from([0x81, 0x82, 0x02, 0x80, 0x89]), st.binary(max_size=290))
def test_put_frame_writes_what_header_plus_ring_write_would(size, head, used, b0, data):
    head %= size
    n = len(data)
    hsize = 2 if n < 126 else 4
    used = used % (size - hsize - n + 1) if size >= hsize + n else None
    if used is None:
        return  # the caller never asks for a frame that does not fit
    fast = RingBuffer(bytearray(size))
    slow = RingBuffer(bytearray(size))
    for r in (fast, slow):
        r.head, r.used = head, used
    fast.write_frame(b0, data)
    hdr = bytearray(14)
    k = write_header(hdr, 0, b0 & 0x0F, bool(b0 & 0x80), n)
    slow.write(hdr, 0, k)
    slow.write(data, 0, n)
    assert (fast.head, fast.used) == (slow.head, slow.used)
    assert fast.buf == slow.buf


def test_fast_and_general_paths_give_the_same_events():
    # The same messages, once as whole frames (fast path) and once with a ping in front
    # of each that sends the parser through the general path first.
    msgs = [(OP_TEXT, "h\u00e9llo".encode()), (OP_BINARY, bytes(range(200))), (OP_BINARY, b""),
            (OP_TEXT, b"x" * 125), (OP_BINARY, b"y" * 126)]
    wire = b"".join(client_frame(op, p) for op, p in msgs)
    p = make_proto(recv=512, ring=4096, mbuf=64)
    p.feed(wire)
    got = []
    while True:
        ev = p.next_event()
        if ev == 0:
            break
        got.append((p.ev_text, bytes(p.ev_data), p.ev_first, p.ev_last))
        assert p.send(p.ev_data, p.ev_text)
        p.consume()
    assert got == [(op == OP_TEXT, pl, True, True) for op, pl in msgs]
    frames, rest = parse_server_frames(ring_out(p))
    assert rest == b"" and frames == [(True, op, pl) for op, pl in msgs]


@pytest.mark.parametrize("payload, reason", [
    (b"ok\xffok", "invalid UTF-8 in text message"),
    ("ab\u20ac".encode()[:-1], "text message ends inside a character"),
])
def test_fast_path_fails_bad_text_with_1007(payload, reason):
    p = make_proto(recv=512, ring=4096, mbuf=64)
    p.feed(client_frame(OP_TEXT, payload))
    assert p.next_event() == 4  # EV_ERROR
    assert (p.close_code, p.close_reason) == (1007, reason)


MP_SCRIPT = r"""
import sys, json
sys.path.insert(0, %(fw)r)
from ringws import kernels as K
cases = json.loads(%(cases)r)
out = []
for hexbuf, pos, end in cases["scan"]:
    buf = bytearray(bytes.fromhex(hexbuf))
    mask = bytearray(4)
    r = K.frame_scan(buf, pos, end, mask)
    out.append([r, mask.hex() if r >= 0 else None])
rings = []
for size, tail, b0, hexdata in cases["put"]:
    ring = bytearray(size)
    data = bytes.fromhex(hexdata)
    n = K.put_frame(ring, tail, b0, memoryview(data), len(data))
    rings.append([n, ring.hex()])
moved = []
for hexbuf, dst, start, end, hexmask in cases["move"]:
    buf = bytearray(bytes.fromhex(hexbuf))
    K.unmask_move(dst, start, end, buf, bytearray(bytes.fromhex(hexmask)))
    moved.append(buf.hex())
print(json.dumps({"scan": out, "put": rings, "move": moved}))
"""


def test_viper_fast_path_kernels_match_cpython(tmp_path):
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(mp):
        pytest.skip("no MicroPython interpreter in .venv")
    import random

    rnd = random.Random(2026)
    scan = []
    for _ in range(300):
        op = rnd.choice([OP_TEXT, OP_BINARY, OP_CONT, OP_PING])
        f = client_frame(op, bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 5, 125, 126, 300]))),
                         fin=rnd.random() < 0.8, masked=rnd.random() < 0.9,
                         length_bits=rnd.choice([None, None, 16, 64]))
        pre = bytes(rnd.randrange(256) for _ in range(rnd.randrange(4)))
        buf = pre + f
        end = len(buf) if rnd.random() < 0.7 else rnd.randrange(len(pre), len(buf) + 1)
        scan.append([buf.hex(), len(pre), end])
    put = []
    for _ in range(200):
        size = rnd.randrange(300, 700)
        n = rnd.choice([0, 1, 17, 125, 126, 200, 290])
        put.append([size, rnd.randrange(size), rnd.choice([0x81, 0x82, 0x00]),
                    bytes(rnd.randrange(256) for _ in range(n)).hex()])
    move = []
    for _ in range(200):
        # unmask_move: word-wide when dst and start agree modulo 4, bytewise otherwise.
        n = rnd.choice([0, 1, 3, 4, 7, 64, 125, 1000])
        start = rnd.randrange(0, 40)
        dst = start - rnd.choice([0, 1, 2, 3, 4, 8, 13]) if start >= 13 else start
        move.append([bytes(rnd.randrange(256) for _ in range(start + n + 5)).hex(), dst, start,
                     start + n, bytes(rnd.randrange(256) for _ in range(4)).hex()])
    script = MP_SCRIPT % {"fw": FIRMWARE,
                          "cases": json.dumps({"scan": scan, "put": put, "move": move})}
    path = tmp_path / "kernels_case.py"  # too long for a command line
    path.write_text(script)
    out = subprocess.run([mp, "-X", "heapsize=2M", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for (hexbuf, pos, end), (r, mask) in zip(scan, got["scan"]):
        buf = bytearray(bytes.fromhex(hexbuf))
        m = bytearray(4)
        want = K.frame_scan(buf, pos, end, m)
        assert r == want, (hexbuf, pos, end)
        if want >= 0:
            assert mask == m.hex()
    hits = sum(1 for r, _ in got["scan"] if r >= 0)
    assert 50 < hits < 280  # both outcomes exercised
    for (size, tail, b0, hexdata), (n, ring_hex) in zip(put, got["put"]):
        ring = bytearray(size)
        data = bytes.fromhex(hexdata)
        assert n == K.put_frame(ring, tail, b0, data, len(data))
        assert ring_hex == ring.hex(), (size, tail, b0, len(data))
    for (hexbuf, dst, start, end, hexmask), got_hex in zip(move, got["move"]):
        orig = bytes.fromhex(hexbuf)
        plain = bytes(b ^ bytes.fromhex(hexmask)[i & 3] for i, b in enumerate(orig[start:end]))
        buf = bytearray(orig)
        K.unmask_move(dst, start, end, buf, bytearray(bytes.fromhex(hexmask)))
        for out in (buf, bytes.fromhex(got_hex)):  # CPython's, then the viper kernel's
            # What unmask_move promises: the unmasked payload at dst, nothing touched
            # outside dst..end (the source bytes past the payload's new end may change).
            assert out[dst : dst + len(plain)] == plain, (dst, start, end)
            assert out[:dst] == orig[:dst] and out[end:] == orig[end:], (dst, start, end)
