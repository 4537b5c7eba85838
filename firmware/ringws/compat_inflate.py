# Raw-deflate inflaters for permessage-deflate (ringws/pmd.py): MicroPython's `deflate`
# here, CPython's zlib in compat_cpython.py. One Inflater per pool entry, made at start-up.
#
# Interface: start() for each message; feed(buf, off, n) up to room() compressed bytes;
# end() once the message's last frame is fed; out(buf, off, n) inflates up to n bytes into
# buf[off:] and returns how many (0: needs more input, or done). done: the output is
# complete. Errors raise ValueError(close code, reason).
#
# MicroPython's DeflateIO pulls its input a byte at a time and cannot be resumed once its
# source runs dry (the read raises inside the decoder). So the compressed bytes wait in a
# BytesIO of fixed size, and before the message's end the decoder is asked for at most
# (available - _MARGIN) / 2 bytes: a deflate symbol takes at most 2 input bytes per byte
# it produces, and _MARGIN covers block headers between them. A stream that needs more
# lookahead (hundreds of empty blocks in a row) is refused with 1009.
from ringws.compat import MICROPYTHON, const

TAIL = b"\x00\x00\xff\xff\x01\x00\x00\xff\xff"  # RFC 7692 7.2.2, then an empty final block
EMPTY = b"\x00" + TAIL
_MARGIN = const(600)

if MICROPYTHON:
    import io

    import deflate

    _SCRATCH = bytearray(128)  # compaction, within one call

    class Inflater:
        def __init__(self, size, out, bits):
            # Preallocated: writes within size never grow it. (getattr: the stubs leave out
            # BytesIO's file methods, seek, tell, readinto, write, which the port has.)
            self.src = getattr(io, "BytesIO")(size)
            self.size = size - len(TAIL)
            self.obuf = memoryview(bytearray(out))
            self.bits = bits
            self.start()

        def start(self):
            self.r = self.w = self.fed = 0
            self.ended = self.done = False
            self.dio = None

        def room(self):
            return 1 << 30 if self.done else self.size - self.w + self.r

        def feed(self, buf, off, n):
            if self.done:
                return  # after the final block: dropped
            s = self.src
            if self.w + n > self.size:
                # What is not inflated yet moves to the front (destination below source).
                k = self.w - self.r
                i = 0
                while i < k:
                    m = min(128, k - i)
                    s.seek(self.r + i)
                    s.readinto(_SCRATCH, m)
                    s.seek(i)
                    s.write(_SCRATCH, 0, m)
                    i += m
                self.r = 0
                self.w = k
            s.seek(self.w)
            s.write(buf, off, n)
            self.w += n
            self.fed += n

        def end(self):
            self.ended = True
            if not self.done:
                s = self.src
                s.seek(self.w)
                # An empty payload reads as 0x00 (RFC 7692 7.2.3.6), as zlib-based peers do.
                tail = TAIL if self.fed else EMPTY
                s.write(tail)
                self.w += len(tail)

        def out(self, buf, off, n):
            if self.done or n <= 0:
                return 0
            if not self.ended:
                m = (self.w - self.r - _MARGIN) >> 1
                if m <= 0:
                    return 0
                n = min(n, m)
            d = self.dio
            if d is None:
                d = self.dio = deflate.DeflateIO(self.src, deflate.RAW, self.bits)
            s = self.src
            s.seek(self.r)
            try:
                k = d.readinto(buf[off:] if off else buf, n)
            except EOFError:
                k = -2  # read past the end of what is there
            except OSError:
                k = -1  # invalid data (or, read past the end, stale bytes)
            self.r = s.tell()
            if k < 0 or self.r > self.w:
                self.dio = None
                if k == -1 and self.r <= self.w:
                    raise ValueError(1007, "invalid compressed data")
                if self.ended:
                    raise ValueError(1007, "compressed message ends inside a block")
                raise ValueError(1009, "compressed data needs more than %d bytes of lookahead" % _MARGIN)
            if k == 0:
                self.done = True  # the final block: the decoder (and its window) can go
                self.dio = None
            return k

else:
    from ringws.compat_cpython import Inflater  # noqa: F401
