"""utf8.py: incremental validation against CPython's strict decoder."""
import pytest

from ringws.utf8 import Utf8Validator, is_valid

pytestmark = pytest.mark.timeout(30)

VALID = ["", "ascii", "é", "€", "𝄞", "\u07ff\u0800\uffff\U00010000\U0010ffff", "κόσμε", "\ud7ff\ue000"]
INVALID = [
    b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
    b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xc2", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc2\x41",
]


@pytest.mark.parametrize("s", VALID)
def test_valid_strings(s):
    assert is_valid(s.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("b", INVALID)
def test_invalid_sequences(b):
    assert not is_valid(b)
    assert not is_valid(b"ok" + b + b"ok")


def test_every_split_point_of_a_valid_text():
    data = "a€é𝄞z".encode()
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            v = Utf8Validator()
            assert v.feed(data, 0, i) and v.feed(data, i, j) and v.feed(data, j, len(data))
            assert v.complete()


def test_incomplete_is_not_complete_but_not_rejected():
    v = Utf8Validator()
    assert v.feed("€".encode(), 0, 2)
    assert not v.complete()
    assert v.feed("€".encode(), 2, 3)
    assert v.complete()


def test_rejects_at_the_first_bad_byte_and_stays_rejected():
    v = Utf8Validator()
    assert not v.feed(b"ab\xffcd", 0, 5)
    assert not v.feed(b"fine", 0, 4)
    v.reset()
    assert v.feed(b"fine", 0, 4) and v.complete()


def test_feed_with_offsets_on_memoryview():
    buf = memoryview(bytearray(b"\xff\xff" + "é".encode() + b"\xff"))
    v = Utf8Validator()
    assert v.feed(buf, 2, 4) and v.complete()


def test_all_two_byte_prefixes_agree_with_cpython():
    # Every lead byte followed by every second byte (and a third/fourth continuation).
    bad = []
    for a in range(256):
        for b in range(256):
            for tail in (b"", b"\x80", b"\x80\x80"):
                data = bytes([a, b]) + tail
                try:
                    data.decode("utf-8")
                    ok = True
                except UnicodeDecodeError:
                    ok = False
                if is_valid(data) != ok:
                    bad.append(data)
    assert bad == []
