"""The sans-I/O Protocol (firmware/ringws/protocol.py) against RFC 6455, server side.

Every test feeds client bytes, reads events and checks what the protocol queued in its send
ring. drive() (conftest) consumes events as the runtime would.
"""
import re

import pytest

from conftest import (
    client_frame,
    close_payload,
    drive,
    make_proto,
    parse_server_frames,
    ring_out,
    server_frames,
)
from ringws import protocol as P
from ringws import slot as S
from ringws.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

pytestmark = pytest.mark.timeout(30)

CHUNKINGS = [None, 1, 3, 7, 64]


def error_code(events):
    assert events and events[-1][0] == "error", events
    return events[-1][1]


def sent_close_code(proto):
    frames = server_frames(proto)
    closes = [f for f in frames if f[1] == OP_CLOSE]
    assert len(closes) == 1, frames
    return int.from_bytes(closes[0][2][:2], "big")


def assert_failed(proto, data, code, chunk=None):
    events = drive(proto, data, chunk)
    assert error_code(events) == code
    # Failed: nothing more is delivered; the peer's frames are followed to its close
    # (CLOSING), or the peer had closed already (CLOSED) or they cannot be followed.
    assert proto.state != P._OPEN and (proto.flags & S._FAILED or proto.state == P._CLOSED)
    assert sent_close_code(proto) == code
    return events


# -- lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 300, 65535, 65536, 70000])
def test_payload_lengths_all_three_forms(n):
    p = make_proto(recv=1 << 17, ring=1 << 18, mbuf=80000)
    payload = bytes(i * 7 & 0xFF for i in range(n))
    assert drive(p, client_frame(OP_BINARY, payload)) == [("msg", False, payload)]


@pytest.mark.parametrize("bits", [16, 64])
def test_non_minimal_length_forms_are_read_correctly(bits):
    p = make_proto()
    data = client_frame(OP_TEXT, b"hello", length_bits=bits) + client_frame(OP_TEXT, b"next")
    assert drive(p, data, 1) == [("msg", True, b"hello"), ("msg", True, b"next")]


def test_64bit_length_with_top_bit_is_protocol_error():
    p = make_proto()
    bad = bytes([0x82, 0xFF]) + (1 << 63).to_bytes(8, "big") + b"\0\0\0\0"
    assert_failed(p, bad, 1002)


@pytest.mark.parametrize("n,recv", [(513, 512), (1000, 512), (5000, 4096), (65535, 512)])
def test_single_frame_larger_than_recv_buf_is_assembled_whole(n, recv):
    # max_message > recv_buf (boards/esp32-spiram.json: 16384): such a frame goes to mbuf.
    p = make_proto(recv=recv, ring=1 << 17, mbuf=80000)
    payload = bytes(i * 7 & 0xFF for i in range(n))
    assert drive(p, client_frame(OP_BINARY, payload)) == [("msg", False, payload)]


def test_next_event_returns_only_documented_events():
    p = make_proto()
    p.feed(client_frame(OP_PING, b"a") + client_frame(OP_PONG, b"b") + client_frame(OP_TEXT, b"c"))
    seen = []
    for _ in range(10):
        ev = p.next_event()
        seen.append(ev)
        if ev == P._EV_MESSAGE:
            p.consume()
        if ev == P._EV_NONE:
            break
    assert seen == [P._EV_MESSAGE, P._EV_NONE]


# -- framing rules ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_unmasked_client_frame_is_1002(chunk):
    assert_failed(make_proto(), client_frame(OP_TEXT, b"hi", masked=False), 1002, chunk)


@pytest.mark.parametrize("rsv", range(1, 8))
def test_rsv_bits_are_1002(rsv):
    assert_failed(make_proto(), client_frame(OP_TEXT, b"x", rsv=rsv), 1002)


@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_1002(op):
    assert_failed(make_proto(), client_frame(op, b"x"), 1002)


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_longer_than_125_is_1002(op):
    payload = close_payload(1000, b"r" * 124) if op == OP_CLOSE else b"p" * 126
    assert_failed(make_proto(), client_frame(op, payload), 1002)


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame_is_1002(op):
    assert_failed(make_proto(), client_frame(op, b"", fin=False), 1002)


def test_control_frame_of_exactly_125_is_fine():
    p = make_proto()
    events = drive(p, client_frame(OP_PING, b"z" * 125))
    assert events == []
    assert server_frames(p) == [(True, OP_PONG, b"z" * 125)]


def test_continuation_without_message_is_1002():
    assert_failed(make_proto(), client_frame(OP_CONT, b"x"), 1002)


def test_continuation_after_finished_message_is_1002():
    data = client_frame(OP_TEXT, b"a") + client_frame(OP_CONT, b"b")
    events = assert_failed(make_proto(), data, 1002)
    assert events[0] == ("msg", True, b"a")


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_new_message_inside_fragmented_one_is_1002(op):
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(op, b"b")
    assert_failed(make_proto(), data, 1002)


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_fragmented_message_with_pings_between(chunk):
    p = make_proto()
    data = (
        client_frame(OP_TEXT, b"Hel", fin=False)
        + client_frame(OP_PING, b"p1")
        + client_frame(OP_CONT, b"", fin=False)
        + client_frame(OP_PONG, b"unsolicited")
        + client_frame(OP_CONT, b"lo ", fin=False)
        + client_frame(OP_PING, b"p2")
        + client_frame(OP_CONT, "wörld".encode(), fin=True)
        + client_frame(OP_BINARY, b"\x00\xff")
    )
    assert drive(p, data, chunk) == [("msg", True, "Hello wörld".encode()), ("msg", False, b"\x00\xff")]
    # Pongs in order with the same payloads; nothing answers the unsolicited pong.
    assert server_frames(p) == [(True, OP_PONG, b"p1"), (True, OP_PONG, b"p2")]


def test_many_frames_in_one_read():
    p = make_proto()
    msgs = [bytes([i]) * i for i in range(40)]
    data = b"".join(client_frame(OP_BINARY, m) for m in msgs)
    assert len(data) > len(p.rbuf)  # several refills, frames straddle them
    assert drive(p, data) == [("msg", False, m) for m in msgs]


def test_empty_messages():
    p = make_proto()
    data = (
        client_frame(OP_TEXT, b"")
        + client_frame(OP_BINARY, b"")
        + client_frame(OP_TEXT, b"", fin=False)
        + client_frame(OP_CONT, b"")
    )
    assert drive(p, data, 1) == [("msg", True, b""), ("msg", False, b""), ("msg", True, b"")]


# -- UTF-8 --------------------------------------------------------------------------------


def test_invalid_utf8_fails_before_the_frame_is_complete():
    p = make_proto(recv=4096, ring=8192, mbuf=4096)
    frame = client_frame(OP_TEXT, b"ok \xc0\xaf" + b"a" * 3000)
    # Only the header and the first 5 payload bytes have arrived.
    p.feed(frame[:8 + 5])
    assert p.next_event() == P._EV_ERROR
    assert p.close_code == 1007
    assert sent_close_code(p) == 1007


def test_invalid_utf8_fails_at_once_in_a_later_fragment():
    p = make_proto()
    data = client_frame(OP_TEXT, "añ".encode(), fin=False) + client_frame(OP_CONT, b"b\xff" + b"c" * 100, fin=False)
    events = drive(p, data[: len(data) - 90])  # the bad byte is in, the frame is not
    assert error_code(events) == 1007


def test_utf8_sequence_split_across_fragments_is_valid():
    p = make_proto()
    euro = "€".encode()  # 3 bytes
    data = (
        client_frame(OP_TEXT, euro[:1], fin=False)
        + client_frame(OP_CONT, euro[1:2], fin=False)
        + client_frame(OP_CONT, euro[2:])
    )
    assert drive(p, data, 1) == [("msg", True, euro)]


@pytest.mark.parametrize("fragmented", [False, True])
def test_text_ending_inside_a_character_is_1007(fragmented):
    p = make_proto()
    if fragmented:
        data = client_frame(OP_TEXT, b"ab", fin=False) + client_frame(OP_CONT, "€".encode()[:2])
    else:
        data = client_frame(OP_TEXT, b"ab" + "€".encode()[:2])
    assert_failed(p, data, 1007)


@pytest.mark.parametrize(
    "bad",
    [b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\x80", b"\xfe"],
    ids=["overlong2", "overlong3", "surrogate", "above-10ffff", "f5", "lone-cont", "fe"],
)
def test_invalid_utf8_forms_are_1007(bad):
    assert_failed(make_proto(), client_frame(OP_TEXT, b"x" + bad + b"y"), 1007)


def test_binary_is_not_validated():
    p = make_proto()
    assert drive(p, client_frame(OP_BINARY, b"\xff\xc0")) == [("msg", False, b"\xff\xc0")]


def test_utf8_state_does_not_leak_into_next_message():
    p = make_proto()
    # A complete message followed by one that starts with a continuation byte.
    data = client_frame(OP_TEXT, "é".encode()) + client_frame(OP_TEXT, b"\xa9")
    events = drive(p, data)
    assert events[0] == ("msg", True, "é".encode())
    assert error_code(events) == 1007


# -- close codes and the close handshake --------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_echoed(code):
    p = make_proto()
    events = drive(p, client_frame(OP_CLOSE, close_payload(code, "bye ✓")))
    assert events == [("close", code, "bye ✓")]
    assert p.state == P._CLOSED and not p.flags & S._FAILED
    assert server_frames(p) == [(True, OP_CLOSE, code.to_bytes(2, "big"))]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_is_1002(code):
    assert_failed(make_proto(), client_frame(OP_CLOSE, close_payload(code)), 1002)


def test_empty_close_gets_empty_close():
    p = make_proto()
    assert drive(p, client_frame(OP_CLOSE, b"")) == [("close", 1005, "")]
    assert server_frames(p) == [(True, OP_CLOSE, b"")]


def test_one_byte_close_payload_is_1002():
    assert_failed(make_proto(), client_frame(OP_CLOSE, b"\x03"), 1002)


def test_close_reason_invalid_utf8_is_1007():
    assert_failed(make_proto(), client_frame(OP_CLOSE, close_payload(1000, b"\xce\xba\xe1\xbd")), 1007)


def test_nothing_is_parsed_after_the_peer_closed():
    p = make_proto()
    data = client_frame(OP_CLOSE, close_payload(1000)) + client_frame(OP_TEXT, b"late") + client_frame(OP_PING, b"x")
    assert drive(p, data) == [("close", 1000, "")]
    assert server_frames(p) == [(True, OP_CLOSE, b"\x03\xe8")]
    # What follows is dropped, so the runtime can go on reading until the close is out.
    assert p.next_event() == P._EV_NONE and p.rpos == p.rlen
    assert p.feed(client_frame(OP_TEXT, b"later")) and p.next_event() == P._EV_NONE
    assert p.rpos == p.rlen and p.recv_window() == 0


def test_we_close_first_then_data_is_dropped_and_peer_close_finishes():
    p = make_proto()
    assert p.close(4001, "going")
    assert p.state == P._CLOSING
    assert not p.close(1000)  # only once
    assert not p.send(b"no more")
    assert not p.send_ping(b"x")
    assert server_frames(p) == [(True, OP_CLOSE, close_payload(4001, "going"))]
    data = (
        client_frame(OP_TEXT, b"in flight", fin=False)
        + client_frame(OP_PING, b"ignored")
        + client_frame(OP_CONT, b"\xff not validated either")
        + client_frame(OP_BINARY, b"x" * 3000)  # larger than anything: dropped, not 1009
        + client_frame(OP_CLOSE, close_payload(1000, "ok"))
    )
    events = drive(p, data, 5)
    assert events == [("close", 1000, "ok")]
    assert p.state == P._CLOSED and not p.flags & S._FAILED
    assert server_frames(p) == []  # no pong while closing, no second close frame


# -- after failing: the peer's frames are followed to its close ---------------------------


FOLLOWING = [
    (client_frame(OP_TEXT, b"ok \xff"), 1007),  # invalid UTF-8 (the whole-frame fast path)
    (client_frame(OP_TEXT, b"\xff", fin=False) + client_frame(OP_CONT, b"end"), 1007),  # a fragment
    (client_frame(OP_BINARY, b"x", rsv=4), 1002),  # a refused header (RSV1, not negotiated)
    (client_frame(OP_PING, b"p" * 126), 1002),  # a control frame too long: dropped as data
    (client_frame(OP_CONT, b"lost"), 1002),
    (client_frame(OP_BINARY, b"x" * 5000), 1009),  # too big: its payload is dropped
]


@pytest.mark.parametrize("bad,code", FOLLOWING)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_after_failing_the_peer_close_ends_it_and_our_code_stays(bad, code, chunk):
    p = make_proto()
    rest = (client_frame(OP_TEXT, b"\xfe dropped, not validated")
            + client_frame(OP_PING, b"not answered")
            + client_frame(OP_CLOSE, close_payload(1000, "bye")))
    events = drive(p, bad + rest, chunk)
    assert [e[0] for e in events] == ["error", "close"], events
    assert events[0][1] == code
    # Done: the runtime closes TCP as soon as our close frame is out (not after a timeout).
    assert p.state == P._CLOSED and not p.flags & S._FAILED
    assert p.close_code == code  # the failure's code, not the peer's answer
    assert [f[1] for f in server_frames(p)] == [OP_CLOSE]  # one close, no pong


def test_after_failing_later_violations_are_dropped_too():
    p = make_proto()
    data = (client_frame(OP_TEXT, b"\xff") + client_frame(OP_BINARY, b"x", rsv=2)
            + client_frame(OP_PING, b"x", fin=False) + client_frame(OP_CONT, b"orphan")
            + client_frame(OP_CLOSE, b"c" * 126)  # a close too long: dropped, not the close
            + client_frame(OP_CLOSE, close_payload(999)))  # the close, its code not valid
    events = drive(p, data, 3)
    assert events == [("error", 1007, "invalid UTF-8 in text message")]  # reported once
    assert p.state == P._CLOSED and not p.flags & S._FAILED and p.close_code == 1007
    assert [f[1] for f in server_frames(p)] == [OP_CLOSE]


@pytest.mark.parametrize("bad", [client_frame(OP_CLOSE, b"c" * 126),
                                 client_frame(OP_CLOSE, close_payload(1000), fin=False)])
def test_a_refused_close_is_still_the_peer_close(bad):
    # The peer sent its close, malformed: it waits for ours and nothing else.
    p = make_proto()
    assert error_code(drive(p, bad)) == 1002
    assert p.state == P._CLOSED and not p.flags & S._FAILED


def test_a_length_that_cannot_be_followed_leaves_only_dropping():
    p = make_proto()
    bad = bytes([0x82, 0xFF]) + (1 << 63).to_bytes(8, "big") + b"\0\0\0\0"
    assert_failed(p, bad + client_frame(OP_CLOSE, b""), 1002)
    assert p.state == P._CLOSED and p.flags & S._FAILED


@pytest.mark.parametrize("payload", [b"\x03", close_payload(999), b"\x03\xe8\xff"])
def test_a_bad_close_from_the_peer_is_answered_and_ends_it(payload):
    p = make_proto()
    events = drive(p, client_frame(OP_CLOSE, payload))
    assert [e[0] for e in events] == ["error"]
    assert p.state == P._CLOSED and not p.flags & S._FAILED  # it closed: nothing to await


def test_close_reason_is_truncated_to_valid_utf8():
    p = make_proto()
    p.close(1000, "é" * 100)  # 200 bytes encoded; a close payload holds 123
    frames = server_frames(p)
    assert len(frames) == 1 and len(frames[0][2]) <= 125
    reason = frames[0][2][2:]
    reason.decode("utf-8")  # a cut in the middle of a character makes the peer fail 1007


# -- ping / pong --------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"a", bytes(range(125))])
def test_ping_gets_pong_with_same_payload(payload):
    p = make_proto()
    assert drive(p, client_frame(OP_PING, payload), 1) == []
    assert server_frames(p) == [(True, OP_PONG, payload)]


def test_unsolicited_pong_is_ignored_but_noted():
    p = make_proto()
    assert drive(p, client_frame(OP_PONG, b"whatever")) == []
    assert server_frames(p) == []
    assert p.flags & S._PONG_SEEN
    # A keepalive ping queued starts the wait for its own pong.
    assert p.send_ping(b"k") and not p.flags & S._PONG_SEEN
    assert drive(p, client_frame(OP_PONG, b"k")) == [] and p.flags & S._PONG_SEEN


def test_pong_that_does_not_fit_blocks_until_drained():
    p = make_proto(recv=512, ring=600, mbuf=256)
    assert p.send(b"d" * (600 - 254 - 4 - 100))  # leaves 100 + reserve
    while p.send(b"x" * 60):
        pass
    data = b"".join(client_frame(OP_PING, bytes([i]) * 125) for i in range(4)) + client_frame(OP_TEXT, b"after")
    out = bytearray()
    events = drive(p, data, None, sink=out)
    assert events == [("msg", True, b"after")]
    pongs = [f for f in parse_server_frames(out)[0] if f[1] == OP_PONG]
    assert pongs == [(True, OP_PONG, bytes([i]) * 125) for i in range(4)]


# -- limits ---------------------------------------------------------------------------------


def test_too_big_single_frame_is_1009_at_the_header():
    p = make_proto(recv=512, ring=2048, mbuf=1024)
    frame = client_frame(OP_BINARY, b"x" * 1025)
    p.feed(frame[:8])  # only the header has arrived
    assert p.next_event() == P._EV_ERROR
    assert p.close_code == 1009
    assert sent_close_code(p) == 1009


def test_too_big_fragmented_is_1009():
    p = make_proto(recv=512, ring=2048, mbuf=1024)
    data = client_frame(OP_TEXT, b"a" * 1000, fin=False) + client_frame(OP_CONT, b"b" * 25)
    assert_failed(p, data, 1009)


def test_exactly_max_message_fragmented_is_delivered():
    p = make_proto(recv=512, ring=2048, mbuf=1024)
    data = client_frame(OP_TEXT, b"a" * 1000, fin=False) + client_frame(OP_CONT, b"b" * 24)
    assert drive(p, data, 100) == [("msg", True, b"a" * 1000 + b"b" * 24)]


def test_single_frame_up_to_recv_buf_is_whole_even_if_mbuf_is_smaller():
    p = make_proto(recv=512, ring=2048, mbuf=300)
    payload = bytes(range(256)) * 2  # 512 bytes: header + payload exceed rbuf together
    assert p.limit() == 512
    assert drive(p, client_frame(OP_BINARY, payload), 13) == [("msg", False, payload)]


@pytest.mark.parametrize("chunk", [None, 1, 97, 1000])
def test_streaming_pieces_never_exceed_max_piece(chunk):
    p = make_proto(recv=2048, ring=700, mbuf=256, can_stream=True)
    max_piece = 700 - 254 - 10  # the ring beside the control reserve and a 10-byte header
    msg = "ü".encode() * 3000  # multi-byte text: pieces may split characters
    data = (
        client_frame(OP_TEXT, msg[:100], fin=False)
        + client_frame(OP_PING, b"mid")
        + client_frame(OP_CONT, msg[100:5000], fin=False)
        + client_frame(OP_CONT, msg[5000:])
    )
    out = bytearray()
    events = drive(p, data, chunk, sink=out)
    assert all(e[0] == "frag" for e in events)
    assert all(len(e[2]) <= max_piece for e in events)
    assert b"".join(e[2] for e in events) == msg
    assert [e[3] for e in events] == [True] + [False] * (len(events) - 1)
    assert [e[4] for e in events] == [False] * (len(events) - 1) + [True]
    assert all(e[1] for e in events)


def test_streaming_still_validates_utf8_of_the_whole_message():
    p = make_proto(recv=2048, ring=700, mbuf=256, can_stream=True)
    data = client_frame(OP_TEXT, b"a" * 2000, fin=False) + client_frame(OP_CONT, b"b" * 500 + b"\xe2\x82")
    events = drive(p, data, 300)
    assert error_code(events) == 1007


def test_streaming_a_single_huge_frame():
    p = make_proto(recv=512, ring=1024, mbuf=256, can_stream=True)
    payload = bytes(i & 0xFF for i in range(200000))
    events = drive(p, client_frame(OP_BINARY, payload), 4096)
    assert b"".join(e[2] for e in events) == payload
    assert events[0][3] and events[-1][4]
    assert max(len(e[2]) for e in events) <= 1024 - 254 - 10  # the largest piece the ring takes


# -- backpressure: events stay pending ------------------------------------------------------


def test_unconsumed_event_is_returned_again_without_unmasking_twice():
    p = make_proto()
    p.feed(client_frame(OP_TEXT, b"hello") + client_frame(OP_BINARY, b"second"))
    for _ in range(3):
        assert p.next_event() == P._EV_MESSAGE
        assert bytes(p.ev_data) == b"hello"  # XOR twice would give the masked bytes back
    p.consume()
    assert p.next_event() == P._EV_MESSAGE
    assert bytes(p.ev_data) == b"second"
    p.consume()
    assert p.next_event() == P._EV_NONE


def test_unconsumed_assembled_message_stays_pending():
    p = make_proto()
    p.feed(client_frame(OP_TEXT, b"ab", fin=False) + client_frame(OP_CONT, b"cd"))
    assert p.next_event() == P._EV_MESSAGE
    assert p.next_event() == P._EV_MESSAGE
    assert bytes(p.ev_data) == b"abcd"
    p.consume()
    assert p.next_event() == P._EV_NONE


def test_unconsumed_stream_piece_stays_pending():
    p = make_proto(recv=512, ring=700, mbuf=256, can_stream=True)
    payload = bytes(range(256)) * 4
    frame = client_frame(OP_BINARY, payload)
    p.feed(frame[:400])
    assert p.next_event() == P._EV_FRAGMENT
    first = bytes(p.ev_data)
    assert p.next_event() == P._EV_FRAGMENT
    assert bytes(p.ev_data) == first == payload[: len(first)]
    p.consume()
    rest = drive(p, frame[400:], 50)
    assert first + b"".join(e[2] for e in rest) == payload


# -- the send side ----------------------------------------------------------------------------


def test_send_is_all_or_nothing_and_refuses_when_full():
    p = make_proto(recv=512, ring=1024, mbuf=256)
    sent = 0
    while p.send(b"m" * 100, text=True):
        sent += 1
    used = p.ring.used
    assert not p.send(b"m" * 100)
    assert p.ring.used == used  # a refused send writes nothing
    assert p.ring.free() >= 254  # the control reserve is kept
    frames = server_frames(p)
    assert frames == [(True, OP_TEXT, b"m" * 100)] * sent
    assert sent == (1024 - 254) // 102


def test_send_of_a_frame_that_can_never_fit_raises():
    p = make_proto(recv=512, ring=1024, mbuf=256)
    with pytest.raises(ValueError):
        p.send(b"x" * (1024 - 254 - 4 + 1))
    assert p.send(b"x" * (1024 - 254 - 4))
    with pytest.raises(ValueError):
        p.send_fragment(b"x" * 2000, False, True, False)


@pytest.mark.parametrize("ring", [776, 1024, 65793, 65794, 70000])
def test_the_send_error_names_the_limit(ring):
    # 518 bytes with the ESP32 sizing's 776-byte ring: the message says so.
    p = make_proto(recv=512, ring=ring, mbuf=64)
    from ringws.frames import header_size

    limit = max(n for n in range(ring) if header_size(n) + n + 254 <= ring)
    assert ring != 776 or limit == 518
    with pytest.raises(ValueError) as e:
        p.send(b"x" * (limit + 1))
    assert re.search(r"\b%d\b" % limit, str(e.value)) and str(limit + 1) in str(e.value)
    with pytest.raises(ValueError) as e:
        p.send_fragment(b"x" * (limit + 1), False, True, True)
    assert re.search(r"\b%d\b" % limit, str(e.value))
    assert p.send(b"x" * limit)  # the limit itself fits an empty ring


def test_writable_is_exactly_what_send_accepts():
    # For every fill level: send(writable()) fits, send(writable()+1) does not.
    p = make_proto(recv=512, ring=70000, mbuf=256)
    bad = []
    for room in list(range(0, 400)) + list(range(65530, 65560)) + [69000]:
        p.ring.clear()
        filler = 70000 - 254 - room
        p.ring.used = filler  # the ring's content does not matter here
        w = p.writable()
        if w > 0 and not p.send(b"\0" * w):
            bad.append((room, w, "refused"))
            continue
        p.ring.used = filler
        fits = P.header_size(w + 1) + w + 1 + P._CONTROL_RESERVE <= p.ring.size  # else send raises
        if fits and p.send(b"\0" * (w + 1)):
            bad.append((room, w, "writable() too small"))
    assert bad == []


def test_writable_for_a_full_ring_is_zero():
    p = make_proto(recv=512, ring=1024, mbuf=256)
    while p.send(b"x" * 50):
        pass
    while p.writable() and p.send(b"y" * p.writable()):
        pass
    assert p.writable() == 0


def test_send_fragment_order_is_enforced():
    p = make_proto()
    assert not p.send_fragment(b"x", False, False, True)  # continuation first
    assert p.send_fragment(b"a", True, True, False)
    assert not p.send(b"whole")  # a whole message inside a fragmented one
    assert not p.send_fragment(b"b", True, True, False)  # a second "first"
    assert p.send_fragment(b"c", True, False, False)
    assert p.send_fragment(b"d", True, False, True)
    assert p.send(b"after")
    assert server_frames(p) == [
        (False, OP_TEXT, b"a"),
        (False, OP_CONT, b"c"),
        (True, OP_CONT, b"d"),
        (True, OP_BINARY, b"after"),
    ]


def test_control_reserve_lets_pong_and_close_through_a_full_ring():
    p = make_proto(recv=512, ring=1024, mbuf=256)
    while p.send(b"x" * 40):
        pass
    while p.writable() and p.send(b"y" * p.writable()):
        pass
    ring_used = p.ring.used
    data = client_frame(OP_PING, b"p" * 125) + client_frame(OP_TEXT, b"\xff")
    events = drive(p, data)
    assert error_code(events) == 1007
    frames = server_frames(p)
    assert frames[-2] == (True, OP_PONG, b"p" * 125)
    assert frames[-1][1] == OP_CLOSE and frames[-1][2][:2] == (1007).to_bytes(2, "big")
    assert ring_used > 1024 - 254 - 10


def test_repeated_pings_never_starve_the_close_frame():
    # Data fills the ring up to the control reserve; then two full-size pings and a
    # protocol error. Either the parser blocks (and the runtime drains, see sink) or the
    # pongs leave room: in both cases the close frame must go out.
    p = make_proto(recv=512, ring=1024, mbuf=256)
    while p.send(b"x" * 40):
        pass
    while p.writable() and p.send(b"y" * p.writable()):
        pass
    data = client_frame(OP_PING, b"1" * 125) + client_frame(OP_PING, b"2" * 125) + client_frame(OP_CONT, b"bad")
    out = bytearray()
    events = drive(p, data, sink=out)
    assert error_code(events) == 1002
    frames = parse_server_frames(out)[0]
    assert frames[-1][1] == OP_CLOSE, "connection failed but no close frame was queued"
    assert frames[-1][2][:2] == (1002).to_bytes(2, "big")


def test_after_failure_nothing_more_is_parsed_or_sent():
    p = make_proto()
    data = client_frame(OP_TEXT, b"x", rsv=4) + client_frame(OP_PING, b"x") + client_frame(OP_TEXT, b"y")
    assert_failed(p, data, 1002)
    assert p.next_event() == P._EV_NONE
    assert not p.send(b"z")
    assert not p.close()
    assert ring_out(p) == b""


def test_reset_makes_the_protocol_reusable():
    p = make_proto()
    assert_failed(p, client_frame(OP_TEXT, b"\xff"), 1007)
    p.reset()
    assert p.state == P._OPEN and not p.flags & S._FAILED and p.ring.used == 0
    assert drive(p, client_frame(OP_TEXT, b"fresh")) == [("msg", True, b"fresh")]
