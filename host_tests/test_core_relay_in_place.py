"""Relaying in place and the shared receive buffer.

A frame too large to be delivered whole is relayed straight from the receive buffer: its
header is written over the incoming one and consecutive relayed frames are joined into
one span, so a batch of them leaves in one write without passing through the ring. Reads
land in a receive buffer shared by all connections (shared_recv) while it is free; a
connection under backpressure keeps it, the others read into their own.
"""
import asyncio
import random

import pytest

from conftest import client_frame, encode_frame, make_proto, parse_server_frames, ring_out
from ringws import protocol as P
from ringws import slot as S
from ringws.frames import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from test_core_server_fake import CFG, Recorder, close_handshake, run
from fakesock import storm

pytestmark = pytest.mark.timeout(20)


def payload(n, seed):
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def lent(proto, size=4096):
    # What Server._borrow does: reads land in a larger buffer than the slot's own.
    proto.rbuf = memoryview(bytearray(size))
    return proto


def relay_all(proto, data, relay_copy=False):
    """Feed data, relay every piece (or a copy of it), answer pings; consume as a runtime."""
    assert proto.feed(data) == len(data)
    while True:
        ev = proto.next_event()
        if ev == P._EV_NONE:
            return
        assert ev == P._EV_FRAGMENT, ev
        d = proto.ev_data
        assert proto.relay(bytes(d) if relay_copy else d)
        proto.consume()


def span(proto):
    return bytes(proto.rbuf[proto.tx_off : proto.tx_end]) if proto.tx_end else b""


# -- the protocol core ------------------------------------------------------------------


def test_relayed_frames_are_joined_into_one_span_without_the_ring():
    p = lent(make_proto(recv=512, ring=1024, mbuf=64, can_stream=True))
    frames = [(OP_BINARY, payload(600, 1)), (OP_TEXT, b"x" * 700), (OP_BINARY, payload(513, 9))]
    relay_all(p, b"".join(client_frame(op, d) for op, d in frames))
    assert p.ring.used == 0
    assert span(p) == b"".join(encode_frame(op, d) for op, d in frames)


def test_a_fragmented_message_is_relayed_frame_for_frame_in_place():
    p = lent(make_proto(recv=512, ring=1024, mbuf=64, can_stream=True))
    parts = [payload(800, 2), payload(900, 3), payload(530, 4)]
    data = (client_frame(OP_BINARY, parts[0], fin=False) + client_frame(OP_CONT, parts[1], fin=False)
            + client_frame(OP_CONT, parts[2]))
    relay_all(p, data)
    assert p.ring.used == 0
    assert span(p) == (encode_frame(OP_BINARY, parts[0], fin=False)
                       + encode_frame(OP_CONT, parts[1], fin=False) + encode_frame(OP_CONT, parts[2]))


def test_ring_data_queued_after_a_span_goes_after_it():
    # frame, ping, frame: the pong enters the ring, so the second frame must follow it
    # through the ring; the wire order is span, then ring.
    p = lent(make_proto(recv=512, ring=2048, mbuf=64, can_stream=True))
    a, b = payload(600, 5), payload(650, 6)
    relay_all(p, client_frame(OP_BINARY, a) + client_frame(OP_PING, b"hi") + client_frame(OP_BINARY, b))
    wire = span(p) + ring_out(p)
    assert wire == encode_frame(OP_BINARY, a) + encode_frame(OP_PONG, b"hi") + encode_frame(OP_BINARY, b)


def test_relaying_a_copy_goes_through_the_ring():
    p = lent(make_proto(recv=512, ring=2048, mbuf=64, can_stream=True))
    a = payload(600, 7)
    relay_all(p, client_frame(OP_BINARY, a), relay_copy=True)
    assert p.tx_end == 0
    assert ring_out(p) == encode_frame(OP_BINARY, a)


def test_limits_follow_the_own_buffer_not_the_lent_one():
    # A 600-byte frame is more than recv_buf (512): streamed even though it lies whole in
    # the lent buffer, so what a handler gets never depends on which buffer was in use.
    p = lent(make_proto(recv=512, ring=1024, mbuf=64, can_stream=True))
    p.feed(client_frame(OP_BINARY, payload(600, 8)))
    assert p.next_event() == P._EV_FRAGMENT
    q = lent(make_proto(recv=512, ring=1024, mbuf=64, can_stream=False))
    q.feed(client_frame(OP_BINARY, payload(600, 8)))
    assert q.next_event() == P._EV_ERROR and q.close_code == 1009


def whole(proto):
    proto.flags |= S._PIECES | S._WHOLE  # upgrade(STREAM_WHOLE): what Server.route sets for a handler with whole_frames
    return proto


def test_a_whole_frame_comes_as_one_piece_for_a_whole_frames_handler():
    a = payload(3000, 11)
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    p.feed(client_frame(OP_BINARY, a))
    assert p.next_event() == P._EV_FRAGMENT
    assert (bytes(p.ev_data), p.ev_first, p.ev_last, p.ev_text) == (a, True, True, False)
    # Without the opt-in the same frame comes in pieces that fit the ring.
    q = lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True))
    q.feed(client_frame(OP_BINARY, a))
    assert q.next_event() == P._EV_FRAGMENT and len(q.ev_data) == 776 - 254 - 10


def test_whole_frames_join_one_span_each_unmasked_straight_into_place():
    frames = [(OP_BINARY, payload(900, 1)), (OP_TEXT, b"y" * 1500), (OP_BINARY, payload(600, 2)),
              (OP_BINARY, payload(60000, 3))]
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True), size=70000))
    p.feed(b"".join(client_frame(op, d) for op, d in frames))
    for i, (op, d) in enumerate(frames):
        assert p.next_event() == P._EV_FRAGMENT
        assert bytes(p.ev_data) == d
        if i:  # after the previous frame's outgoing bytes, not where it arrived
            assert p.ev_off == p.tx_end + 4 < p.rpos - len(d)
        assert p.relay(p.ev_data)
        p.consume()
    assert p.next_event() == P._EV_NONE and p.ring.used == 0
    assert span(p) == b"".join(encode_frame(op, d) for op, d in frames)


def relay_pieces(proto):
    """Relay and consume what is there; the pieces' (first, last, length)."""
    got = []
    while True:
        ev = proto.next_event()
        if ev == P._EV_NONE:
            return got
        assert ev == P._EV_FRAGMENT and proto.relay(proto.ev_data)
        got.append((proto.ev_first, proto.ev_last, len(proto.ev_data)))
        proto.consume()
        if proto.tx_end:  # the runtime writes the span out
            proto.sent_span(proto.tx_end - proto.tx_off)


def test_a_frame_cut_by_a_full_buffer_waits_for_the_rest_and_comes_whole():
    # Two 1,000-byte frames in a 1,500-byte buffer: the read fills it and cuts the second
    # frame. The rest is most likely in the socket, so the second frame waits (moved to
    # the front by recv_window) and comes whole instead of in two pieces.
    a, b = payload(1000, 21), payload(1000, 22)
    wire = client_frame(OP_BINARY, a) + client_frame(OP_BINARY, b)
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True), size=1500))
    assert p.feed(wire) == 1500
    assert relay_pieces(p) == [(True, True, 1000)]
    off = p.recv_window()
    assert off == 1500 - 1008 and p.rpos == 0  # the cut frame moved to the front
    assert p.feed(wire[1500:]) == len(wire) - 1500
    assert relay_pieces(p) == [(True, True, 1000)]
    # A buffer that is not full says the socket had no more: the cut frame streams as
    # it lies (the first piece now, the rest when it comes).
    q = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True), size=1600))
    q.feed(wire[:1500])
    assert relay_pieces(q) == [(True, True, 1000), (True, False, 1500 - 1008 - 8)]
    q.feed(wire[1500:])
    rest = relay_pieces(q)
    assert sum(n for _, _, n in rest) == 1000 - (1500 - 1008 - 8) and rest[-1][:2] == (False, True)
    # And a handler that takes pieces (no whole_frames) gets them as before.
    r = lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True), size=1500)
    r.feed(wire)
    assert [last for _, last, _ in relay_pieces(r)][-1] is False


def test_a_whole_frame_the_handler_does_not_relay_is_stepped_over():
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    p.feed(client_frame(OP_BINARY, payload(1000, 4)) + client_frame(OP_TEXT, b"after"))
    assert p.next_event() == P._EV_FRAGMENT
    p.consume()  # taken without a reply
    assert p.next_event() == P._EV_MESSAGE and bytes(p.ev_data) == b"after"
    assert p.tx_end == 0 and p.ring.used == 0


def test_a_refused_whole_frame_is_offered_again_unchanged():
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    p.feed(client_frame(OP_BINARY, payload(1000, 5)) + client_frame(OP_BINARY, payload(1100, 6)))
    assert p.next_event() == P._EV_FRAGMENT and p.relay(p.ev_data)
    p.consume()
    assert p.next_event() == P._EV_FRAGMENT
    first = p.ev_data
    assert p.send(b"queued first")  # the ring is no longer empty: the copy does not fit
    assert not p.relay(first)
    assert p.next_event() == P._EV_FRAGMENT and p.ev_data is first
    ring_out(p)  # the runtime drains the ring
    assert p.relay(first)
    p.consume()
    assert span(p) == encode_frame(OP_BINARY, payload(1000, 5)) + encode_frame(OP_BINARY, payload(1100, 6))


def test_a_whole_frame_is_relayed_whole_or_not_at_all():
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    p.feed(client_frame(OP_BINARY, payload(1000, 7)))
    assert p.next_event() == P._EV_FRAGMENT
    with pytest.raises(ValueError, match="can only be relayed unchanged"):
        p.relay(bytes(p.ev_data))  # a copy: it would have to fit the ring
    with pytest.raises(ValueError, match="relayed whole"):
        p.relay(p.ev_data[:10])
    assert p.tx_end == 0 and p.ring.used == 0 and p.j_off < 0


def test_a_later_piece_of_a_frame_is_relayed_unchanged_or_refused_loudly():
    # A whole_frames piece after the first one of a frame may be larger than the ring too:
    # a copy of it can never fit, and says so instead of being refused for ever.
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    frame = client_frame(OP_BINARY, payload(10000, 7))
    p.feed(frame[:4096])
    assert p.next_event() == P._EV_FRAGMENT and len(p.ev_data) == 4096 - 8
    assert p.relay(p.ev_data)
    p.consume()
    p.sent_span(p.tx_end - p.tx_off)  # the runtime wrote the span out
    p.feed(frame[4096:8192])
    assert p.next_event() == P._EV_FRAGMENT and len(p.ev_data) == 4096
    with pytest.raises(ValueError, match="can only be relayed unchanged"):
        p.relay(bytes(p.ev_data))
    assert p.relay(p.ev_data)  # the piece itself goes in place
    assert p.j_off >= 0 and p.ring.used == 0


def test_a_whole_text_frame_with_bad_utf8_fails_with_1007():
    p = whole(lent(make_proto(recv=512, ring=776, mbuf=64, can_stream=True)))
    p.feed(client_frame(OP_TEXT, b"a" * 700 + b"\xff" + b"b" * 300))
    assert p.next_event() == P._EV_ERROR and p.close_code == 1007


# -- the runtime (fake sockets) ---------------------------------------------------------


class RelayEcho(Recorder):
    """/echo as the firmware's app does it: whole messages sent, large ones relayed."""

    def on_message(self, conn, data, text):
        return conn.send(data, text)

    def on_fragment(self, conn, data, text, first, last):
        return conn.relay(data)


class WholeEcho(RelayEcho):
    """RelayEcho that takes a frame lying whole in the receive buffer as one piece."""

    whole_frames = True


ECHOES = pytest.mark.parametrize("echo", [RelayEcho, WholeEcho], ids=["pieces", "whole"])


SHARED = dict(CFG, shared_recv=4096)


def big_messages(seed, count):
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        n = rnd.choice([513, 700, 1000, 1500, 3000, 5000, 20])
        text = i % 3 == 0
        out.append((text, b"t" * n if text else payload(n, i)))
    return out


@ECHOES
@pytest.mark.parametrize("knobs", [{}, {"send_chunk": 7}, {"send_eagain": storm(0.3)},
                                   {"recv_chunk": 333, "send_chunk": 1000}])
def test_large_frames_echo_whole_and_in_order_under_partial_writes(knobs, echo):
    msgs = big_messages(3, 14)

    async def scenario(ctx):
        c = await ctx.client(**knobs).handshake()
        c.sock.client_send(b"".join(client_frame(OP_TEXT if t else OP_BINARY, d) for t, d in msgs))
        for t, d in msgs:
            assert await c.message(5) == (t, d)
        await close_handshake(c)
        assert ctx.srv.shared_owner is None

    run(scenario, cfg=SHARED, handlers={"/echo": echo()}, expect={"normal": 1})


@ECHOES
def test_a_batch_of_relayed_frames_leaves_in_one_write(echo):
    msgs = [payload(900, i) for i in range(4)]  # 4 x 904 bytes: one read of the shared buffer

    async def scenario(ctx):
        c = await ctx.client().handshake()
        await asyncio.sleep(0.02)
        before = c.sock.send_calls
        c.sock.client_send(b"".join(client_frame(OP_BINARY, d) for d in msgs))
        for d in msgs:
            assert await c.message() == (False, d)
        assert c.sock.send_calls - before == 1
        await close_handshake(c)

    run(scenario, cfg=SHARED, handlers={"/echo": echo()}, expect={"normal": 1})


@ECHOES
def test_without_a_shared_buffer_large_frames_still_echo(echo):
    msgs = big_messages(4, 8)

    async def scenario(ctx):
        c = await ctx.client(send_chunk=100).handshake()
        c.sock.client_send(b"".join(client_frame(OP_TEXT if t else OP_BINARY, d) for t, d in msgs))
        for t, d in msgs:
            assert await c.message(5) == (t, d)
        await close_handshake(c)
        assert ctx.srv.shared is None

    run(scenario, cfg=dict(CFG, shared_recv=0), handlers={"/echo": echo()},
        expect={"normal": 1})


@ECHOES
def test_backpressure_keeps_the_shared_buffer_and_others_read_into_their_own(echo):
    slow_msgs = [payload(1500, i) for i in range(6)]

    async def scenario(ctx):
        slow = ctx.client(send_budget=0)
        slow.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)
        await slow.handshake()
        fast = await ctx.client().handshake()
        slow.sock.client_send(b"".join(client_frame(OP_BINARY, d) for d in slow_msgs))
        await asyncio.sleep(0.05)
        slot = [s for s in ctx.srv.slots if s.sock is slow.sock][0]
        assert ctx.srv.shared_owner is slot  # paused mid-batch: it keeps what it read
        calls = slow.sock.recv_calls
        for i in range(4):
            d = payload(700 + i * 300, 40 + i)
            fast.send(OP_BINARY, d)
            assert await fast.message() == (False, d)
        assert ctx.srv.shared_owner is slot
        assert slow.sock.recv_calls == calls  # no reading while the echo cannot leave
        slow.sock.allow(10 ** 6)
        for d in slow_msgs:
            assert await slow.message(5) == (False, d)
        await close_handshake(slow)
        await close_handshake(fast)
        assert ctx.srv.shared_owner is None

    run(scenario, cfg=SHARED, handlers={"/echo": echo()}, expect={"normal": 2})


@ECHOES
def test_a_reset_while_holding_the_shared_buffer_frees_it(echo):
    async def scenario(ctx):
        slow = ctx.client(send_budget=0)
        slow.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)
        await slow.handshake()
        slow.sock.client_send(b"".join(client_frame(OP_BINARY, payload(1500, i)) for i in range(5)))
        await asyncio.sleep(0.05)
        assert ctx.srv.shared_owner is not None
        slow.sock.reset()
        await slow.closed()
        assert ctx.srv.shared_owner is None
        c = await ctx.client().handshake()
        c.send(OP_BINARY, payload(2000, 1))
        assert await c.message() == (False, payload(2000, 1))
        await close_handshake(c)

    run(scenario, cfg=SHARED, handlers={"/echo": echo()},
        expect={"normal": 1, "peer_reset": 1})


@ECHOES
@pytest.mark.parametrize("cut", [1, 3, 200, 904 + 1, 904 + 300])
def test_a_partial_frame_moves_back_to_the_own_buffer_intact(cut, echo):
    # What is left unparsed when the reads run dry (a partial header, a partial whole
    # message, a partial large frame) goes back to the slot's own buffer with the shared
    # one; the rest of it arrives later.
    data = client_frame(OP_BINARY, payload(900, 1)) + client_frame(OP_TEXT, b"small" * 60) + \
        client_frame(OP_BINARY, payload(1200, 2))

    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.sock.client_send(data[:cut])
        await asyncio.sleep(0.05)
        assert ctx.srv.shared_owner is None  # given back while waiting
        c.sock.client_send(data[cut:])
        assert await c.message() == (False, payload(900, 1))
        assert await c.message() == (True, b"small" * 60)
        assert await c.message() == (False, payload(1200, 2))
        await close_handshake(c)

    run(scenario, cfg=SHARED, handlers={"/echo": echo()}, expect={"normal": 1})


@ECHOES
def test_a_frame_cut_by_a_full_read_does_not_keep_the_shared_buffer_when_reads_run_dry(echo):
    # 5 frames of 708 bytes and 556 of a sixth (more than the own 512-byte buffer holds)
    # fill the 4 KiB shared buffer exactly. A whole_frames handler's cut frame waits for
    # its rest; when the socket has none, it goes out piece by piece instead, so that the
    # buffer goes back to the other connections.
    msgs = [payload(700, 50 + i) for i in range(6)]
    data = b"".join(client_frame(OP_BINARY, d) for d in msgs)
    assert 4096 - 5 * 708 == 556

    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.sock.client_send(data[:4096])
        for d in msgs[:5]:
            assert await c.message() == (False, d)
        await asyncio.sleep(0.05)
        assert ctx.srv.shared_owner is None
        c.sock.client_send(data[4096:])
        assert await c.message() == (False, msgs[5])
        await close_handshake(c)

    run(scenario, cfg=SHARED, handlers={"/echo": echo()}, expect={"normal": 1})


class PieceLog(WholeEcho):
    """WholeEcho that records the size of every piece it relays."""

    def __init__(self):
        super().__init__()
        self.pieces = []

    def on_fragment(self, conn, data, text, first, last):
        ok = conn.relay(data)
        if ok:  # (a refused piece is offered again)
            self.pieces.append(len(data))
        return ok


@pytest.mark.parametrize("header_alone", [False, True])
def test_a_frame_larger_than_the_buffer_comes_in_pieces_as_large_as_the_reads(header_alone):
    # A whole_frames handler relays in place, so the pieces of a frame larger than the
    # shared buffer are what each read brought, not ring-sized (an 8 KiB frame through
    # a 776-byte ring was 16 pieces, 3.3x the instructions of 4). The exception: a
    # frame whose payload starts at the front of the buffer (its header came in an
    # earlier read) has no room for the outgoing header before it, so its first piece
    # goes through the ring, ring-sized; the rest follow in place.
    h = PieceLog()
    data = payload(10000, 5)
    frame = client_frame(OP_BINARY, data)
    max_piece = CFG["send_ring"] - P._CONTROL_RESERVE - 10

    async def scenario(ctx):
        c = await ctx.client().handshake()
        if header_alone:
            c.sock.client_send(frame[:8])  # 2 + 2 (length 126 form) + 4 (mask)
            await asyncio.sleep(0.02)
            c.sock.client_send(frame[8:])
        else:
            c.sock.client_send(frame)
        assert await c.message(5) == (False, data)
        await close_handshake(c)

    run(scenario, cfg=SHARED, handlers={"/echo": h}, expect={"normal": 1})
    assert sum(h.pieces) == len(data), h.pieces
    assert len(h.pieces) <= 5 and max(h.pieces) > 2 * max_piece, h.pieces
    if header_alone:
        assert h.pieces[0] <= max_piece, h.pieces
