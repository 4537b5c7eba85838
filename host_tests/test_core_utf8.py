"""The UTF-8 kernels (kernels.utf8_step, kernels.utf8_valid) against CPython's strict decoder,
the viper DFA included, under the real MicroPython interpreter."""
import os
import subprocess

import pytest

from conftest import FIRMWARE, ROOT
from ringws.kernels import UTF8_ACCEPT, UTF8_REJECT, utf8_step, utf8_valid

pytestmark = pytest.mark.timeout(60)

VALID = ["", "ascii", "é", "€", "𝄞", "\u07ff\u0800\uffff\U00010000\U0010ffff", "κόσμε", "\ud7ff\ue000"]
INVALID = [
    b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
    b"\xed\xbf\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff", b"\xc2", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc2\x41",
]
TAILS = (b"", b"\x80", b"\x80\x80")


@pytest.mark.parametrize("s", VALID)
def test_valid_strings(s):
    assert utf8_valid(s.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("b", INVALID)
def test_invalid_sequences(b):
    assert not utf8_valid(b)
    assert not utf8_valid(b"ok" + b + b"ok")


def test_every_split_point_of_a_valid_text():
    data = "a€é𝄞z".encode()
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            st = utf8_step(data, 0, i, UTF8_ACCEPT)
            st = utf8_step(data, i, j, st)
            assert utf8_step(data, j, len(data), st) == UTF8_ACCEPT


def test_incomplete_is_neither_accepted_nor_rejected():
    euro = "€".encode()
    st = utf8_step(euro, 0, 2, UTF8_ACCEPT)
    assert st not in (UTF8_ACCEPT, UTF8_REJECT)
    assert utf8_step(euro, 2, 3, st) == UTF8_ACCEPT


def test_rejected_stays_rejected():
    assert utf8_step(b"ab\xffcd", 0, 5, UTF8_ACCEPT) == UTF8_REJECT
    assert utf8_step(b"fine", 0, 4, UTF8_REJECT) == UTF8_REJECT


def test_offsets_on_a_memoryview():
    buf = memoryview(bytearray(b"\xff\xff" + "é".encode() + b"\xff"))
    assert utf8_step(buf, 2, 4, UTF8_ACCEPT) == UTF8_ACCEPT
    assert utf8_step(buf, 1, 4, UTF8_ACCEPT) == UTF8_REJECT


def _decodes(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _every_two_byte_prefix():
    """Every lead byte, every second byte, then nothing, one or two continuations."""
    for a in range(256):
        for b in range(256):
            for tail in TAILS:
                yield bytes([a, b]) + tail


def test_all_two_byte_prefixes_agree_with_cpython():
    bad = [d for d in _every_two_byte_prefix() if utf8_valid(d) != _decodes(d)]
    assert bad == []


MP_SCRIPT = r"""
import sys
sys.path.insert(0, %(fw)r)
from ringws.kernels import utf8_valid
out = bytearray(256 * 256 * 3 // 8)
i = 0
for a in range(256):
    for b in range(256):
        for tail in (b"", b"\x80", b"\x80\x80"):
            if utf8_valid(bytes([a, b]) + tail):
                out[i >> 3] |= 1 << (i & 7)
            i += 1
print(out.hex())
"""


def test_all_two_byte_prefixes_agree_with_cpython_under_micropython():
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(mp):
        pytest.skip("no MicroPython interpreter in .venv")
    r = subprocess.run([mp, "-X", "heapsize=110k", "-c", MP_SCRIPT % {"fw": FIRMWARE}],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bits = bytes.fromhex(r.stdout.strip())
    bad = [d for i, d in enumerate(_every_two_byte_prefix())
           if bool(bits[i >> 3] & (1 << (i & 7))) != _decodes(d)]
    assert bad == []
