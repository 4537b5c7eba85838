# permessage-deflate (RFC 7692), receive side: the protocol's data path for a compressed
# message (RSV1 on its first frame). Loaded by pmdgate.offer at an offer that
# pmdoffer.py accepted, where the heap has room for it; the inflaters' buffers are made at
# start-up (compat_inflate.py).
#
# Inflating: a message borrows an inflater from POOL for its duration, or waits, not
# reading (EV_BLOCKED: the runtime pauses and asks again). The compressed frames are fed
# as they come; the output collects in the inflater's buffer and leaves as the protocol's
# events: a whole message up to max_message, copied into the slot's message buffer (the
# inflater is back in the pool before the handler runs), else pieces for a streaming
# handler (1009 without one), the last of them empty. Limits and UTF-8 checks apply to the
# inflated bytes.
import ringws
from ringws.compat import MICROPYTHON, const, why
from ringws.kernels import UTF8_ACCEPT, UTF8_REJECT, move, utf8_step

_EV_NONE = const(0)
_EV_MESSAGE = const(1)
_EV_FRAGMENT = const(2)
_EV_BLOCKED = const(5)
_OPEN = const(0)
_OP_TEXT = const(1)
_P_MBUF = const(1)
_IN_FRAME = const(1)  # bits of the protocol's flags (protocol.py)
_STREAMING = const(2)
_PIECES = const(64)
_MARGIN = const(320)  # (compat_inflate.py: the input's size)

POOL = []  # free inflaters
_MADE = None  # the settings POOL was made for


def ready(cfg):
    """The pool, made for cfg's settings (pmdgate.offer, before accepting an offer),
    over the buffers made at start-up (or new ones for other settings)."""
    global _MADE
    want = (cfg["inflaters"], cfg["inflate_bits"], cfg["max_message"], cfg["send_ring"])
    if want != _MADE:
        made, bufs = getattr(ringws, "inflaters", (None, None))[:2]
        if made != want:
            # (a server made without slot.allocate_slots, or a test's settings)
            bufs = __import__("ringws.compat_inflate").compat_inflate.start(cfg)
        _MADE = want
        POOL[:] = [Inflater(*b) for b in bufs]


# -- inflating ---------------------------------------------------------------------------


def data(p):
    """Protocol._data for a compressed message: an event, or -1 to parse on."""
    if p.state != _OPEN:
        reset(p)
        return p._data()  # (closing: dropped the same way)
    inf = p.inf
    if inf is None:
        if not POOL:
            return _EV_BLOCKED  # every inflater is busy: wait, not reading
        inf = p.inf = POOL.pop()
        inf.start()
    try:
        return _run(p, inf)
    except ValueError as e:
        reset(p)
        return p._fail(e.args[0], e.args[1])


def reset(p):
    """p's inflater back to the pool (its message ended, or its connection did)."""
    inf = p.inf
    if inf is not None:
        if not inf.done:
            inf.dio = None  # left inside a message: the next one gets a new decoder
        POOL.append(inf)
        p.inf = None


def _run(p, inf):
    obuf = inf.obuf
    text = p.msg_op == _OP_TEXT
    while True:
        fed = 0
        if p.flags & _IN_FRAME and not inf.ended:
            # This frame's compressed bytes that came, unmasked, into the inflater.
            p._prepare(False)
            fed = inf.feed(p.rbuf, p.rpos, p.f_seen, p.fin and p.f_seen == p.f_left)
            p._advance(fed)
        at = p.mlen
        room = len(obuf) - at
        if not room:
            if inf.done and inf.ended:
                return _finish(p, inf, text)
            if not p.flags & _PIECES:
                raise ValueError(1009, why("faults", 11, len(p.mbuf)))  # message larger than %d bytes
            p.flags |= _STREAMING
            return _deliver(p, obuf, at, _EV_FRAGMENT, False)
        k = inf.out(obuf, at, room)
        if k:
            if text:
                p.u8 = utf8_step(obuf, at, at + k, p.u8)
                if p.u8 == UTF8_REJECT:
                    raise ValueError(1007, why("faults", 1))  # invalid UTF-8 in text message
            p.mlen = at + k
            continue
        if inf.done and inf.ended:
            return _finish(p, inf, text)
        if fed:
            continue
        if p.f_left:
            return _EV_NONE  # the rest of this frame is not here yet
        p.flags &= ~_IN_FRAME
        return -1  # the next frame (a continuation) brings more


def _finish(p, inf, text):
    if text and p.u8 != UTF8_ACCEPT:
        raise ValueError(1007, why("faults", 2))  # text message ends inside a character
    n = p.mlen
    if n and (p.flags & _STREAMING or n > len(p.mbuf)):
        # Out as a piece first, while the inflater still holds it; an empty last one follows.
        if not p.flags & _PIECES:
            raise ValueError(1009, why("faults", 11, len(p.mbuf)))  # message larger than %d bytes
        p.flags |= _STREAMING
        return _deliver(p, inf.obuf, n, _EV_FRAGMENT, False)
    move(0, 0, n, p.mbuf, inf.obuf)
    reset(p)
    p.flags &= ~_IN_FRAME
    return _deliver(p, p.mbuf, n, _EV_FRAGMENT if p.flags & _STREAMING else _EV_MESSAGE, True)


def _deliver(p, buf, n, ev, last):
    # Like Protocol._deliver, from buf (consume() then empties the message buffer's count;
    # ev_first is the protocol's).
    p.ev_off = 0
    p.ev_data = buf[0:n]
    p.ev_text = p.msg_op == _OP_TEXT
    p.ev_last = last
    p.p_kind = _P_MBUF
    p.pending = ev
    return ev


# -- the inflater ------------------------------------------------------------------------
# start() for each message; feed(buf, off, n, last) takes up to n compressed bytes (what the
# input holds) and returns how many, last: the message's last ones (it ends once all of
# them are in); out(buf, off, n) inflates up to n bytes into buf[off:] and
# returns how many (0: needs more input, or done). done: the output is complete. Errors
# raise ValueError(close code, reason). Under CPython: zlib, a decoder per message
# (compat_cpython.py).
#
# MicroPython's DeflateIO pulls its input a byte at a time from a stream, cannot be resumed
# once the stream runs dry (the read raises inside the decoder) and cannot be reset: the
# compressed bytes wait in the input BytesIO, and before the message's end the decoder is
# asked for no more than they surely cover (compat_inflate.py); a stream that needs more
# lookahead (hundreds of empty blocks in a row) is refused with 1009. One decoder (window and
# state, made at start-up) serves message after message: each message is followed by the
# RFC's 00 00 ff ff, then an end mark, a stored block of _MARK zero bytes (once the decoder
# reads into it, its position says how much of its output was the message's), then a block
# of zeros as long as the window, so a message never sees the one before it (the pool is
# shared by every connection). Once the message is out, the decoder is read to the end of
# those zeros, where it must stand exactly, else the message was cut inside a block (1007).
# A decoder that failed, met a final block, or was left inside a message is replaced.

_MARK = const(128)  # (compat_inflate.py: more than one read after the message's end asks for)

if MICROPYTHON:
    import deflate

    # (bits, what follows each message, its zeros, bytes read to their end, a 128-byte
    # scratch buffer for compaction and draining within one call)
    _FILL = None

    class Inflater:
        # (eight attributes: the smallest instance table that holds them)
        def __init__(self, src, out, dio, fill):
            global _FILL
            _FILL = fill  # (the same for every inflater of the pool)
            self.src = src
            self.obuf = out  # (a memoryview)
            self.dio = dio  # primed at start-up: its next read starts a block
            self.r = self.w = src.tell()
            self.start()

        def start(self):
            if self.dio is None:
                self.r = self.w = 0
            self.mark = 0  # (until the message's end: whether anything was fed)
            self.ended = self.done = False

        def feed(self, buf, off, n, last):
            if self.done:
                self.ended = last  # after the final block: dropped
                return n
            s = self.src
            size = 767 - len(_FILL[1])  # (the input's, less what follows and an empty 0x00)
            k = min(n, size - self.w + self.r)
            if k and self.w + k > size:
                # What is not inflated yet moves to the front (destination below source).
                j = self.w - self.r
                i = 0
                b = _FILL[4]
                while i < j:
                    m = min(128, j - i)
                    s.seek(self.r + i)
                    s.readinto(b, m)
                    s.seek(i)
                    s.write(b, 0, m)
                    i += m
                self.r = 0
                self.w = j
            s.seek(self.w)
            if k:
                s.write(buf, off, k)
                self.w += k
                self.mark = 1
            if last and k == n:
                self.ended = True
                if not self.mark:
                    s.write(b"\x00")  # an empty payload reads as 0x00 (RFC 7692 7.2.3.6)
                    self.w += 1
                s.write(_FILL[1])
                self.mark = self.w + 9  # (the end mark's zeros)
                self.w += len(_FILL[1])
            return k

        def out(self, buf, off, n):
            if self.done or n <= 0:
                return 0
            if not self.ended:
                n = min(n, (self.w - self.r - _MARGIN) >> 1)
                if n <= 0:
                    return 0
            d = self.dio
            if d is None:
                d = self.dio = deflate.DeflateIO(self.src, deflate.RAW, _FILL[0])
            s = self.src
            s.seek(self.r)
            try:
                k = d.readinto(buf[off:] if off else buf, min(n, _MARK))
            except EOFError:
                k = -2  # read past the end of what is there
            except OSError:
                k = -1  # invalid data (or, read past the end, stale bytes)
            self.r = s.tell()
            if k < 0 or self.r > self.w:
                self.dio = None
                if k == -1 and self.r <= self.w:
                    raise ValueError(1007, why("faults", 27))  # invalid compressed data
                if self.ended:
                    raise ValueError(1007, why("faults", 28))  # compressed message ends inside a block
                # compressed data needs more than %d bytes of lookahead
                raise ValueError(1009, why("faults", 29, _MARGIN))
            if self.ended and self.r >= self.mark:
                # Into the end mark: the message is out. The decoder reads on to the end of
                # the window's zeros, where it must stand exactly.
                x = self.r - self.mark
                left = _MARK - x + _FILL[2]
                try:
                    while left > 0:
                        m = d.readinto(_FILL[4], min(128, left))
                        if not m:
                            break
                        left -= m
                except Exception:  # (OSError, EOFError: the message was cut inside a block)
                    left = -1
                self.r = s.tell()
                if left or self.r != self.mark + _MARK + _FILL[3]:
                    self.dio = None
                    raise ValueError(1007, why("faults", 28))  # compressed message ends inside a block
                self.done = True
                return k - x
            if k == 0:
                self.done = True  # a final block: this decoder has finished
                self.dio = None
            return k

else:
    from ringws.compat_cpython import Inflater
