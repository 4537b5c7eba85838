"""The inflate path under the real MicroPython unix port (`deflate.DeflateIO` through
compat_inflate), fed compressed streams that CPython's zlib builds: every window the
server allows, sync flush or final block, messages cut at every byte, read in chunks of 1
to 278 bytes, a bomb, truncation, garbage, a window too large and a stream too sparse for
the decoder's lookahead. The driver prints what each stream became; CPython checks it."""
import hashlib
import os
import random
import struct
import subprocess
import zlib

import pytest

from fwrun import micropython

pytestmark = pytest.mark.timeout(120)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = r"""
import sys, hashlib, binascii
sys.path.insert(0, sys.argv[1] + "/firmware")
from ringws.protocol import Protocol
EV_NONE, EV_MESSAGE, EV_FRAGMENT, EV_CLOSE, EV_ERROR = 0, 1, 2, 3, 4  # its private const()s
from ringws import pmd
cfg = {"inflaters": 1, "inflate_bits": int(sys.argv[3]), "max_message": 64, "send_ring": 776}
pmd.ready(cfg)
p = Protocol(bytearray(278), bytearray(776), bytearray(64))
f = open(sys.argv[2], "rb")
while True:
    head = f.read(9)
    if len(head) < 9:
        break
    stream, chunk = head[0], int.from_bytes(head[1:5], "little")
    data = f.read(int.from_bytes(head[5:9], "little"))
    p.reset()
    p.upgrade(stream, zin=pmd)
    out = []
    h = hashlib.sha256()
    n = 0
    pos = 0
    end = None
    while end is None and (pos < len(data) or p.pending):
        off = p.recv_window()
        k = min(len(p.rbuf) - off, chunk, len(data) - pos)
        p.rbuf[off:off + k] = data[pos:pos + k]
        p.received(k)
        pos += k
        while True:
            ev = p.next_event()
            if ev == EV_NONE:
                break
            if ev == EV_ERROR or ev == EV_CLOSE:
                end = "error %d" % p.close_code
                break
            h.update(p.ev_data)
            n += len(p.ev_data)
            if ev == EV_MESSAGE or p.ev_last:
                out.append("%d:%s" % (n, binascii.hexlify(h.digest()).decode()[:16]))
                h = hashlib.sha256()
                n = 0
            p.consume()
        p.ring.clear()
    print(end or " ".join(out), "pool", len(pmd.POOL) + (p.inf is not None))
"""


def squeeze(data, wbits=9, final=False, flushes=0):
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    z = c.compress(data[: len(data) // 2])
    if flushes:
        # Empty stored blocks in a row, 5 bytes each (zlib makes one per flush only).
        z += c.flush(zlib.Z_SYNC_FLUSH) + b"\x00\x00\x00\xff\xff" * flushes
    z += c.compress(data[len(data) // 2 :]) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    return z if final else z[:-4]


def frames(z, text, cuts=()):
    out = b""
    edges = [0] + sorted(cuts) + [len(z)]
    for i in range(len(edges) - 1):
        part = z[edges[i] : edges[i + 1]]
        b0 = (0x80 if i == len(edges) - 2 else 0) | (0x40 if i == 0 else 0) | ((1 if text else 2) if i == 0 else 0)
        n = len(part)
        head = bytes((b0, 0x80 | n)) if n < 126 else (bytes((b0, 0xFE)) + struct.pack(">H", n) if n < 65536
                                                      else bytes((b0, 0xFF)) + struct.pack(">Q", n))
        out += head + b"\0\0\0\0" + part
    return out


def digest(data):
    return "%d:%s" % (len(data), hashlib.sha256(data).hexdigest()[:16])


def run_cases(tmp_path, cases, bits=9):
    path = tmp_path / "cases.bin"
    with open(path, "wb") as f:
        for stream, chunk, data, _ in cases:
            f.write(bytes((stream,)) + struct.pack("<II", chunk, len(data)) + data)
    drv = tmp_path / "driver.py"
    drv.write_text(DRIVER)
    out = subprocess.run([micropython(), "-X", "heapsize=4m", str(drv), ROOT, str(path), str(bits)],
                         capture_output=True, text=True, timeout=100)
    lines = [x for x in out.stdout.splitlines() if not x.startswith("ringws:")]
    assert out.returncode == 0 and len(lines) == len(cases), out.stdout[-2000:] + out.stderr[-2000:]
    for (stream, chunk, data, want), line in zip(cases, lines):
        got, pool = line.rsplit(" pool ", 1)
        assert got == want, (stream, chunk, len(data), line)
        assert pool == "1", "the inflater must go back to the pool"


TEXT = ('{"id": 7, "name": "r\u00e9sum\u00e9 \u2713", "v": [1, 2, 3]}, ' * 200).encode()


@pytest.mark.parametrize("wbits", range(9, 16))
def test_every_window_sync_flush_or_final_block_any_chunking(tmp_path, wbits):
    rng = random.Random(wbits)
    cases = []
    for data in (b"", b"a", TEXT[:100], TEXT[:1000], TEXT, rng.randbytes(3000), bytes(70000)):
        for final in (False, True):
            z = frames(squeeze(data, wbits, final), data[:20] == TEXT[:20], cuts=(len(data) % 7, 300))
            for chunk in (1, 7, 278):
                cases.append((1, chunk, z, digest(data)))
    run_cases(tmp_path, cases, bits=wbits)


def test_a_message_cut_at_every_byte(tmp_path):
    z = squeeze(TEXT[:600])
    cases = [(1, 278, frames(z, True, cuts=(k,)), digest(TEXT[:600])) for k in range(len(z) + 1)]
    run_cases(tmp_path, cases)


def test_limits_and_broken_streams(tmp_path):
    blob = random.Random(1).randbytes(2048)
    cases = [
        (1, 278, frames(squeeze(bytes(8 << 20)), False, cuts=range(500, 8000, 500)), digest(bytes(8 << 20))),
        (0, 278, frames(squeeze(bytes(65)), False), "error 1009"),  # a 64-byte message buffer
        (0, 278, frames(squeeze(bytes(64)), False), digest(bytes(64))),
        (1, 278, frames(squeeze(TEXT)[:-5], True), "error 1007"),  # truncated
        (1, 278, frames(b"\xff" * 40, False), "error 1007"),  # garbage
        (1, 278, frames(b"\x07\x00", False), "error 1007"),  # reserved block type
        (1, 278, frames(squeeze(blob + blob, wbits=15), False), "error 1007"),  # over the window
        (1, 278, frames(squeeze(b"ok \xc0\xaf"), True), "error 1007"),  # not UTF-8
        # 300 empty blocks in a row mid-message: more than the decoder's 320-byte lookahead.
        (1, 278, frames(squeeze(TEXT, flushes=300), True, cuts=(1000, 2000)), "error 1009"),
        (1, 278, frames(squeeze(TEXT, flushes=20), True, cuts=(1000,)), digest(TEXT)),
        (1, 278, frames(b"", False) + frames(b"", True, cuts=(0,)), digest(b"") + " " + digest(b"")),
    ]
    run_cases(tmp_path, cases)


def test_compression_is_detected_not_assumed():
    # The unix port used here has deflate.DeflateIO without write: pmd must find that out
    # by trying, and say so in /stats; a build with compression would say True.
    code = ("import sys; sys.path.insert(0, %r + '/firmware')\n"
            "import deflate, io\n"
            "try:\n    deflate.DeflateIO(io.BytesIO(), deflate.RAW, 9).write(b'x'); real = True\n"
            "except AttributeError:\n    real = False\n"
            "import ringws\n"
            "from ringws import compat_inflate\n"
            "compat_inflate.start({'inflaters': 2, 'inflate_bits': 9, 'max_message': 64, 'send_ring': 776})\n"
            "st = ringws.inflaters[2]\n"
            "print(real, st['can_compress'], st['inflaters'])\n" % ROOT)
    out = subprocess.run([micropython(), "-X", "heapsize=4m", "-c", code], capture_output=True, text=True,
                         timeout=30)
    real, seen, free = out.stdout.splitlines()[-1].split()
    assert seen == real and free == "2", out.stdout + out.stderr


def reach_back(n, dist):
    """A compressed message that starts with a copy of n bytes from dist bytes back, before
    the message's own start (fixed Huffman; n 3..10, dist 257..384)."""
    acc = bits = 0
    out = bytearray()
    for v, nb in ((2, 3), (int(format(n - 2, "07b")[::-1], 2), 7), (int("10000"[::-1], 2), 5),
                  (dist - 257, 7), (0, 7), (0, 3)):
        acc |= v << bits
        bits += nb
    while bits > 0:
        out.append(acc & 255)
        acc >>= 8
        bits -= 8
    return bytes(out)  # (the empty stored block's LEN/NLEN left out, as a sender does)


def test_a_message_never_sees_the_one_before_it(tmp_path):
    # One decoder serves every connection's messages in turn: a message that reaches back
    # before its start must find zeros there, not the previous message (another client's).
    secret = b"0123456789" * 60
    case = frames(squeeze(secret), False) + frames(reach_back(10, 300), False)
    run_cases(tmp_path, [(1, 278, case, digest(secret) + " " + digest(bytes(10)))])
