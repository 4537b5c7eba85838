"""ring.py: all-or-nothing writes, wrap-around, contiguous reads."""
import pytest

from ringws.ring import RingBuffer

pytestmark = pytest.mark.timeout(30)


def drain(r, limit=None):
    out = bytearray()
    while r.used and (limit is None or len(out) < limit):
        k = r.readable()
        if limit is not None:
            k = min(k, limit - len(out))
        out += bytes(memoryview(r.buf)[r.head : r.head + k])
        r.consume(k)
    return bytes(out)


def test_too_small_ring_is_refused():
    with pytest.raises(ValueError):
        RingBuffer(bytearray(15))


def test_write_all_or_nothing():
    r = RingBuffer(bytearray(16))
    assert r.write(b"a" * 10)
    assert not r.write(b"b" * 7)
    assert r.used == 10 and r.free() == 6
    assert r.write(b"c" * 6)
    assert r.free() == 0 and not r.write(b"d")
    assert r.write(b"")  # nothing always fits
    assert drain(r) == b"a" * 10 + b"c" * 6


def test_write_with_offset_and_count():
    r = RingBuffer(bytearray(32))
    assert r.write(b"0123456789", 3, 4)
    assert r.write(memoryview(b"abcdef"), 4)  # n defaults to the rest
    assert drain(r) == b"3456ef"


def test_wrap_around_and_readable_is_contiguous():
    r = RingBuffer(bytearray(16))
    r.write(b"x" * 12)
    assert drain(r, 10) == b"x" * 10
    assert r.write(b"0123456789AB")  # 2 left + 12 new: wraps
    assert r.readable() == 6  # from head (10) to the end of the buffer
    assert drain(r) == b"xx0123456789AB"
    assert r.head == 0 and r.used == 0  # empty ring restarts at 0: next frame contiguous


def test_memoryview_backing_store_from_an_arena():
    arena = bytearray(100)
    r = RingBuffer(memoryview(arena)[40:60])
    r.write(b"hello")
    assert arena[40:45] == b"hello" and arena[:40] == bytes(40)
    assert drain(r) == b"hello"


def test_clear():
    r = RingBuffer(bytearray(16))
    r.write(b"abc")
    r.clear()
    assert r.used == 0 and r.free() == 16 and drain(r) == b""
