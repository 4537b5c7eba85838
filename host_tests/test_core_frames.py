"""frames.py: header decode/encode, close-code registry."""
import pytest

from conftest import client_frame
from ringws.frames import (
    OP_BINARY,
    OP_TEXT,
    FrameHeader,
    close_code_valid,
    header_size,
    write_header,
)

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("n,bits", [(0, 7), (125, 7), (126, 16), (65535, 16), (65536, 64), (1 << 40, 64)])
def test_parse_lengths_and_mask(n, bits):
    mask = b"\x01\x02\x03\x04"
    frame = client_frame(OP_BINARY, b"", fin=False, mask=mask, length=n)
    h = FrameHeader()
    buf = bytearray(b"junk" + frame)
    size = h.parse(buf, 4, len(buf))
    assert size == {7: 2, 16: 4, 64: 10}[bits] + 4
    assert (h.fin, h.opcode, h.length) == (False, OP_BINARY, n)
    assert bytes(h.mask) == mask


def test_parse_incomplete_header_returns_zero_at_every_cut():
    frame = client_frame(OP_TEXT, b"x" * 70000)
    h = FrameHeader()
    for cut in range(0, 14):
        assert h.parse(frame, 0, cut) == 0
    assert h.parse(frame, 0, 14) == 14


def test_parse_takes_rsv_and_unmasked_without_judging():
    h = FrameHeader()
    f = client_frame(0xB, b"", rsv=5, masked=False)
    assert h.parse(f, 0, len(f)) == 2
    assert h.opcode == 0xB and not hasattr(h, "rsv") and not hasattr(h, "masked")


def test_top_bit_64_bit_length_is_minus_one():
    h = FrameHeader()
    f = bytes([0x82, 0xFF]) + b"\x80" + b"\0" * 7 + b"mask"
    assert h.parse(f, 0, len(f)) == 14 and h.length == -1


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 1 << 33])
def test_write_header_round_trip(n):
    buf = bytearray(10)
    size = write_header(buf, 0, OP_TEXT, True, n)
    assert size == header_size(n)
    h = FrameHeader()
    assert h.parse(buf, 0, size) == size
    assert (h.fin, h.opcode, buf[1] & 0x80, h.length) == (True, OP_TEXT, 0, n)


def test_header_size_is_minimal():
    assert [header_size(n) for n in (0, 125, 126, 65535, 65536)] == [2, 2, 4, 4, 10]


def test_close_code_registry():
    valid = {c for c in range(0, 70000) if close_code_valid(c)}
    expected = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert valid == expected


def test_the_protocols_private_constants_agree_with_frames():
    # protocol.py repeats these as private const()s so MicroPython inlines them there.
    from ringws import frames, protocol

    names = [n for n in dir(protocol) if n.startswith(("_OP_", "_CLOSE_", "_MAX_"))]
    assert len(names) >= 12
    for n in names:
        assert getattr(protocol, n) == getattr(frames, n[1:]), n


def test_the_protocols_utf8_states_agree_with_kernels():
    from ringws import kernels, protocol

    assert (protocol._UTF8_ACCEPT, protocol._UTF8_REJECT) == (kernels.UTF8_ACCEPT,
                                                              kernels.UTF8_REJECT)
    assert protocol._UTF8_ACCEPT != protocol._UTF8_REJECT


def test_relays_private_constants_agree_with_protocol_and_frames():
    from ringws import frames, protocol, relay

    names = [n for n in dir(relay) if n.startswith(("_EV_", "_OPEN", "_CONTROL_", "_OP_", "_P_"))]
    assert len(names) == 9, names
    for n in names:
        if n.startswith("_OP_"):
            assert getattr(relay, n) == getattr(frames, n[1:]), n
        else:
            assert getattr(relay, n) == getattr(protocol, n), n


def test_the_runtimes_private_constants_agree_with_protocol_and_slot():
    # The runtime's modules repeat them as private const()s so MicroPython inlines them.
    from ringws import connection, http, pmdgate, protocol, server, slot, startstop

    slot_names = ("_FREE", "_HTTP", "_WS", "_ANSWER")
    count = 0
    for mod in (server, connection, startstop, pmdgate, http):
        names = [n for n in dir(mod) if n.startswith(("_EV_", "_OPEN", "_CLOSED", "_NO_STREAM",
                                                      "_STREAM_") + slot_names)]
        for n in names:
            if n in slot_names:
                assert getattr(mod, n) == getattr(slot, n), (mod.__name__, n)
            else:
                assert getattr(mod, n) == getattr(protocol, n), (mod.__name__, n)
        count += len(names)
    assert count >= 19


def test_the_flags_bits_agree_everywhere_and_do_not_overlap():
    # flags: the protocol's bits and the runtime's in one int, all named in slot.py; the
    # modules that use them repeat them as private const()s.
    from ringws import aio, connection, pmd, protocol, server, slot, startstop

    names = ("IN_FRAME", "STREAMING", "FAILED", "OUT_FRAG", "PONG_SEEN", "PONG_EVENTS", "PIECES", "WHOLE",
             "WANT_DRAIN", "PAUSED", "BATCHING", "BROKEN")
    bits = {n: getattr(slot, "_" + n) for n in names}
    seen = 0
    for v in bits.values():
        assert v and not v & (v - 1) and not v & seen, bits  # one bit each, all different
        seen |= v
    count = 0
    for mod in (protocol, server, connection, aio, pmd, startstop):
        for n in bits:
            if hasattr(mod, "_" + n):
                assert getattr(mod, "_" + n) == bits[n], (mod.__name__, n)
                count += 1
    assert count >= 18
