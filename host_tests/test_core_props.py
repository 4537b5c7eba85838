"""Properties (hypothesis): chunking never changes what is parsed; the kernels agree with
plain reference implementations; the ring never loses or reorders bytes. The viper kernels
are checked too, under the real MicroPython interpreter."""
import itertools
import os
import subprocess
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIRMWARE, ROOT, client_frame, make_proto, ring_out, parse_server_frames
from ringws import kernels as K  # the CPython kernels (kernels_cpython) on CPython
from ringws import protocol as P
from ringws.frames import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from ringws.kernels import UTF8_REJECT
from ringws.ring import RingBuffer

pytestmark = pytest.mark.timeout(60)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RECV, RING, MBUF = 512, 16384, 1024

# -- messages on the wire ---------------------------------------------------------------------


@st.composite
def message(draw):
    """(text, payload, wire bytes, ping payloads) for one message, maybe fragmented with
    pings between fragments."""
    text = draw(st.booleans())
    if text:
        payload = draw(st.text(max_size=120)).encode("utf-8", "surrogatepass")
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            payload = b"surrogate replaced"
    else:
        payload = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        # A single frame: at most recv_buf (see test_core_protocol for larger ones).
        return text, payload, client_frame(OP_TEXT if text else OP_BINARY, payload), []
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
    wire = b""
    pings = []
    for i, piece in enumerate(pieces):
        op = (OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONT
        wire += client_frame(op, piece, fin=i == len(pieces) - 1)
        if i < len(pieces) - 1 and draw(st.booleans()):
            ping = draw(st.binary(max_size=20))
            pings.append(ping)
            wire += client_frame(OP_PING, ping)
        if i < len(pieces) - 1 and draw(st.booleans()):
            wire += client_frame(OP_PONG, b"unsolicited")
    return text, payload, wire, pings


def feed_in_chunks(proto, wire, sizes):
    """Feed wire in chunks of the given sizes (cycled); consume every event at once.
    Returns (events, bytes the protocol queued)."""
    events = []
    pos = 0
    i = 0
    while True:
        ev = proto.next_event()
        if ev == P._EV_NONE or ev == -1:  # -1: see test_next_event_returns_only_documented_events
            if ev == -1:
                continue
            if pos >= len(wire) or proto.state == P._CLOSED:
                break
            size = sizes[i % len(sizes)]
            i += 1
            pos += proto.feed(wire[pos : pos + size])
            continue
        if ev in (P._EV_MESSAGE, P._EV_FRAGMENT):
            events.append((ev, proto.ev_text, bytes(proto.ev_data), proto.ev_first, proto.ev_last))
            proto.consume()
        else:
            events.append((ev, proto.close_code))
            if ev == P._EV_ERROR:
                break
    return events, ring_out(proto)


chunkings = st.one_of(
    st.just([1]),
    st.just([1 << 20]),
    st.lists(st.integers(1, 700), min_size=1, max_size=8),
)


@FAST
@given(st.lists(message(), min_size=1, max_size=6), chunkings)
def test_any_chunking_yields_the_same_messages(msgs, sizes):
    wire = b"".join(m[2] for m in msgs)
    events, out = feed_in_chunks(make_proto(RECV, RING, MBUF), wire, sizes)
    assert events == [(P._EV_MESSAGE, m[0], m[1], True, True) for m in msgs]
    pongs = parse_server_frames(out)[0]
    assert pongs == [(True, OP_PONG, p) for m in msgs for p in m[3]]


@FAST
@given(st.lists(message(), min_size=1, max_size=6), chunkings)
def test_streaming_pieces_join_to_the_same_messages(msgs, sizes):
    # A streaming handler (can_stream) on a small slot: pieces depend on the chunking,
    # their concatenation per message does not, and no piece exceeds max_piece.
    p = make_proto(recv=300, ring=2048, mbuf=64, can_stream=True)
    wire = b"".join(m[2] for m in msgs)
    events, _ = feed_in_chunks(p, wire, sizes)
    got = []
    cur = None
    for ev, text, data, first, last in events:
        assert len(data) <= p.ring.size - 264
        if ev == P._EV_MESSAGE:
            assert cur is None
            got.append((text, data))
            continue
        if first:
            assert cur is None
            cur = [text, data]
        else:
            assert cur is not None and cur[0] == text
            cur[1] += data
        if last:
            got.append(tuple(cur))
            cur = None
    assert cur is None
    assert got == [(m[0], m[1]) for m in msgs]


@FAST
@given(st.binary(min_size=1, max_size=200), chunkings)
def test_utf8_verdict_does_not_depend_on_chunking(payload, sizes):
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    cuts = [len(payload) // 3, 2 * len(payload) // 3]
    wire = (
        client_frame(OP_TEXT, payload[: cuts[0]], fin=False)
        + client_frame(OP_CONT, payload[cuts[0] : cuts[1]], fin=False)
        + client_frame(OP_CONT, payload[cuts[1] :])
    )
    events, _ = feed_in_chunks(make_proto(RECV, RING, MBUF), wire, sizes)
    if valid:
        assert events == [(P._EV_MESSAGE, True, payload, True, True)]
    else:
        assert events == [(P._EV_ERROR, 1007)]


# -- kernels against references -----------------------------------------------------------------


@FAST
@given(st.binary(max_size=300), st.data())
def test_unmask_matches_reference(data, d):
    start = d.draw(st.integers(0, len(data)))
    end = d.draw(st.integers(start, len(data)))
    mask = d.draw(st.binary(min_size=4, max_size=4))
    phase = d.draw(st.integers(0, 3))
    buf = bytearray(data)
    ret = K.unmask(buf, start, end, mask, phase)
    ref = bytearray(data)
    for i in range(start, end):
        ref[i] ^= mask[(phase + i - start) & 3]
    assert buf == ref
    assert ret == (phase + end - start) & 3


@FAST
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), min_size=2, max_size=6), st.binary(min_size=4, max_size=4))
def test_unmask_in_pieces_equals_unmask_at_once(data, cuts, mask):
    cuts = sorted(min(c, len(data)) for c in cuts)
    buf = bytearray(data)
    phase = 0
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        phase = K.unmask(buf, a, b, mask, phase)
    whole = bytearray(data)
    K.unmask(whole, 0, len(data), mask, 0)
    assert buf == whole


def _decodes(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_CONT = (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF)
_TAILS = [b""] + [bytes(t) for t in itertools.product(_CONT, repeat=1)] + \
    [bytes(t) for t in itertools.product(_CONT, repeat=2)] + [bytes(t) for t in itertools.product(_CONT, repeat=3)]


@FAST
@given(st.binary(max_size=200), st.data())
def test_utf8_step_agrees_with_cpython_decoder(data, d):
    cut = d.draw(st.integers(0, len(data)))
    state = K.utf8_step(data, 0, cut, 0)
    if state != UTF8_REJECT:
        state = K.utf8_step(data, cut, len(data), state)
    # Not rejected means: some ending makes it valid UTF-8. (CPython's incremental
    # decoder is no oracle here: it waits for more bytes after ED A0 before it rejects.)
    prefix_ok = any(_decodes(data + tail) for tail in _TAILS)
    try:
        data.decode("utf-8")
        whole_ok = True
    except UnicodeDecodeError:
        whole_ok = False
    assert (state != UTF8_REJECT) == prefix_ok
    assert (state == 0) == whole_ok


@FAST
@given(st.text(max_size=100))
def test_utf8_step_accepts_all_valid_text(s):
    data = s.encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return  # lone surrogates from st.text: CPython rejects them, covered above
    assert K.utf8_step(data, 0, len(data), 0) == 0


@FAST
@given(st.binary(min_size=1, max_size=200), st.data())
def test_move_matches_slices_including_overlap(data, d):
    n = d.draw(st.integers(0, len(data)))
    soff = d.draw(st.integers(0, len(data) - n))
    doff = d.draw(st.integers(0, soff))  # towards the start of the same buffer
    buf = bytearray(data)
    K.move(doff, soff, n, buf, buf)
    ref = bytearray(data)
    ref[doff : doff + n] = data[soff : soff + n]
    assert buf == ref
    other = bytearray(len(data))
    K.move(doff, soff, n, other, data)
    assert other[doff : doff + n] == data[soff : soff + n]


@FAST
@given(st.binary(max_size=100), st.binary(min_size=1, max_size=4), st.data())
def test_find_matches_bytes_find(hay, pat, d):
    start = d.draw(st.integers(0, len(hay)))
    end = d.draw(st.integers(start, len(hay)))
    assert K.find(bytearray(hay), pat, start, end) == hay.find(pat, start, end)


# -- the ring ---------------------------------------------------------------------------------------


@FAST
@given(st.integers(16, 200), st.lists(st.tuples(st.booleans(), st.integers(0, 250)), max_size=80))
def test_ring_never_loses_or_reorders(size, ops):
    r = RingBuffer(bytearray(size))
    model = deque()
    counter = 0
    for is_write, n in ops:
        if is_write:
            data = bytes((counter + i) & 0xFF for i in range(n))
            ok = r.write(data)
            assert ok == (n <= size - len(model))
            if ok:
                model.extend(data)
                counter += n
        else:
            k = min(n, r.readable())
            got = bytes(memoryview(r.buf)[r.head : r.head + k])
            assert got == bytes(model.popleft() for _ in range(k))
            r.consume(k)
        assert r.used == len(model) and r.free() == size - len(model)
        assert 0 < r.readable() <= r.used or r.used == 0


# -- viper kernels under the real interpreter --------------------------------------------------------

MP_SCRIPT = r"""
import sys
sys.path.insert(0, %(fw)r)
from ringws import kernels as K
seed = 12345
def rnd(n):
    global seed
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed %% n
def ref_unmask(b, s, e, m, p):
    for i in range(s, e):
        b[i] ^= m[(p + i - s) & 3]
    return (p + e - s) & 3
fails = 0
arena = bytearray(300)
for case in range(400):
    n = rnd(120)
    base = rnd(8)  # odd offsets inside an arena: unaligned starts for the word loops
    view = memoryview(arena)[base:base + n + 8]
    for i in range(len(view)):
        view[i] = rnd(256)
    s = rnd(n + 1)
    e = s + rnd(n - s + 1)
    m = bytes([rnd(256) for _ in range(4)])
    p = rnd(4)
    ref = bytearray(view)
    rp = ref_unmask(ref, s, e, m, p)
    gp = K.unmask(view, s, e, m, p)
    if bytes(view) != bytes(ref) or gp != rp:
        fails += 1
        print("unmask", base, s, e, p)
    # move towards the start of the same buffer and between buffers
    k = rnd(n + 1)
    so = rnd(n - k + 1)
    do = rnd(so + 1)
    ref = bytearray(view)
    ref[do:do + k] = bytes(ref[so:so + k])
    K.move(do, so, k, view, view)
    if bytes(view) != bytes(ref):
        fails += 1
        print("move", base, do, so, k)
cases = [b"", b"abc", "\u00e9\u20ac\U0001d11e".encode(), b"\xc0\x80", b"\xed\xa0\x80",
         b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\x80", b"ok\xffok"]
for c in cases:
    for cut in range(len(c) + 1):
        st = K.utf8_step(c, 0, cut, 0)
        if st != 1:
            st = K.utf8_step(c, cut, len(c), st)
        print("utf8", cut, c, st)
print("fails", fails)
"""


def test_viper_kernels_under_micropython():
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(mp):
        pytest.skip("no MicroPython interpreter in .venv")
    script = MP_SCRIPT % {"fw": FIRMWARE}
    out = subprocess.run([mp, "-X", "heapsize=110k", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "fails 0", out.stdout[-2000:]
    # The viper UTF-8 run agrees with the CPython kernel on every split of every case.
    for line in lines:
        if line.startswith("utf8 "):
            _, cut, rest = line.split(" ", 2)
            lit, st_ = rest.rsplit(" ", 1)
            data = eval(lit)  # a bytes literal printed by MicroPython
            cut = int(cut)
            s = K.utf8_step(data, 0, cut, 0)
            if s != UTF8_REJECT:
                s = K.utf8_step(data, cut, len(data), s)
            assert (s != UTF8_REJECT) == (int(st_) != UTF8_REJECT), line
            assert (s == 0) == (int(st_) == 0), line
