# The sans-I/O WebSocket connection (server side): bytes in -> events out; sends -> ring. No
# sockets, clocks or tasks. An event stays pending until consume(): a handler that cannot take
# it now applies backpressure without the data moving. Event fields (ev_*) live on the object.
# The seam: the runtime reads these fields and writes none. It reads into rbuf at recv_window()
# and calls received(n), then next_event() and consume() until EV_NONE; it writes the relayed
# span (rbuf[tx_off:tx_end]) and calls sent_span(n), then the ring (ring.consume). Also:
# upgrade(), move_input() (the shared buffer), send_ping(), close(), reset() (slot freed).
from ringws.compat import MICROPYTHON, const, why
from ringws.frames import FrameHeader, fits_or_raise, close_code_valid, header_size, unmask, write_header
from ringws.kernels import frame_scan, move, unmask_move, utf8_step
from ringws.kernels import utf8_valid as is_valid
from ringws.relay import SCRATCH as _SCRATCH
from ringws.relay import relay as _relay_piece
from ringws.ring import RingBuffer

# frames.py's constants as private const()s (inlined only here; test_core_frames.py checks).
_CLOSE_INVALID_DATA = const(1007)
_CLOSE_NO_STATUS = const(1005)
_CLOSE_NORMAL = const(1000)
_CLOSE_PROTOCOL = const(1002)
_CLOSE_TOO_BIG = const(1009)
_MAX_CONTROL = const(125)
_OP_BINARY = const(0x2)
_OP_CLOSE = const(0x8)
_OP_CONT = const(0x0)
_OP_PING = const(0x9)
_OP_PONG = const(0xa)
_OP_TEXT = const(0x1)

# The core's own names, private const()s like their copies in the runtime (test_core_frames.py
# checks they agree): a public const() is a module global whose name stays interned.
_UTF8_ACCEPT = const(0)  # kernels.py's DFA states
_UTF8_REJECT = const(1)
_EV_NONE = const(0)  # nothing complete yet: read more
_EV_MESSAGE = const(1)  # ev_data (memoryview), ev_text
_EV_FRAGMENT = const(2)  # ev_data, ev_text, ev_first, ev_last (streamed large message)
_EV_CLOSE = const(3)  # close handshake done or answered: close_code, close_reason
_EV_ERROR = const(4)  # peer broke the protocol; a close frame is queued: close_code/_reason
_EV_BLOCKED = const(5)  # a pong or close reply does not fit the ring yet: wait for a drain
_EV_PONG = const(6)  # a pong (only after upgrade(pongs=True)): ev_data, its payload

_OPEN = const(0)  # connection states
_CLOSING = const(1)  # we sent a close frame and wait for the peer's
_CLOSED = const(2)  # close handshake finished (or connection failed): only flush remains

_CONTROL_RESERVE = const(254)  # kept free for a pong and a close (2 * (2 + 125)): never starved

# flags: booleans as bits of one int (a field costs each slot a table entry); named in slot.py
_IN_FRAME = const(1)  # a frame's header was taken, its payload not all consumed
_STREAMING = const(2)  # the message in progress goes to the handler in pieces
_FAILED = const(4)  # we failed the connection (RFC 6455 7.1.7): nothing more is delivered
_OUT_FRAG = const(8)  # a fragmented send (send_fragment) is on
_PONG_SEEN = const(16)  # a pong came after our last ping (unless pongs are events)
_PONG_EVENTS = const(32)  # each pong is an event (EV_PONG)
_PIECES = const(64)  # can_stream, in flags: the handler takes pieces,
_WHOLE = const(128)  # and whole frames it relays in place
_NO_STREAM = const(0)  # can_stream, what the handler takes: whole messages only,
_STREAM_PIECES = const(1)  # large ones in pieces,
_STREAM_WHOLE = const(2)  # or whole frames it relays in place

_P_RBUF = const(0)  # p_kind, where ev_data lies: in rbuf at rpos (the frame being parsed)
_P_MBUF = const(1)  # in mbuf: a message (or a message's start) assembled from frames
_P_WHOLE = const(2)  # a whole frame in rbuf, already stepped over (see next_event)

# Builtins as globals: a builtin is looked up after a miss in the module's whole table.
len = len


class Protocol(FrameHeader):
    # Inherits the current frame's header fields: one object per connection, not several.
    def __init__(self, rbuf, ring_buf, mbuf):
        recv_size = len(rbuf)
        if recv_size < 2 * (14 + _MAX_CONTROL):
            raise ValueError(why("faults", 0, 2 * (14 + _MAX_CONTROL)))  # recv_buf must be at least %d bytes
        FrameHeader.__init__(self)
        # rbuf: own_rbuf, or for a while the shared buffer; limits follow own_rbuf's size.
        self.own_rbuf = self.rbuf = memoryview(rbuf)
        self.ring = RingBuffer(ring_buf)
        self.mbuf = memoryview(mbuf)
        # permessage-deflate (pmd.py), where negotiated: zin the pmd module, zmsg this message
        # is compressed, inf its inflater. Set here even without it: the table never grows.
        self.zin = self.inf = self.zmsg = None
        self.reset()

    def reset(self):
        if self.zin is not None:
            self.zin.reset(self)  # (its inflater back to the pool)
            self.zin = self.zmsg = None
        self.rbuf = self.own_rbuf
        # Relayed span, written before the ring (tx_end 0: none); j_off: a piece to join it.
        self.tx_off = self.tx_end = 0
        self.j_off = -1
        self.rpos = self.rlen = 0
        self.state = _OPEN
        self.flags = 0  # (the runtime's bits too: a slot starts a connection with none)
        self.close_code = _CLOSE_NO_STATUS  # what the peer sent, for on_close
        self.close_reason = ""
        # f_left: payload bytes of the current frame not consumed yet; f_seen: of those,
        # already unmasked (and validated) from rpos; msg_op: the message's opcode, or 0.
        self.f_left = self.f_seen = self.msg_op = self.mlen = 0
        self.out_left = 0  # payload owed to a relayed frame
        self.pending, self.p_kind = _EV_NONE, _P_RBUF
        self.ev_data, self.ev_off = None, 0
        self.ev_text = self.ev_last = False
        self.ev_first = True  # the next piece handed over is its message's first
        self.ring.clear()
        self.u8 = _UTF8_ACCEPT  # incremental UTF-8 state of the text message in progress

    def recv_window(self):
        """Offset in rbuf for the next read; unparsed bytes move to the front first."""
        n = self.rlen - self.rpos
        if n == 0:
            self.rpos = self.rlen = 0
        elif self.rpos and not self.tx_end:  # (a relay span before rpos is still going out)
            move(0, self.rpos, n, self.rbuf, self.rbuf)
            self.rpos = 0
            self.rlen = n
        return self.rlen

    def received(self, n):
        # n bytes were read in after rlen: at recv_window(), or the request head's.
        self.rlen += n

    if not MICROPYTHON:  # tests and tools; on a board its code would only take heap
        def feed(self, data):
            """Copy data into rbuf; returns how many bytes fitted."""
            off = self.recv_window()
            n = min(len(self.rbuf) - off, len(data))
            move(off, 0, n, self.rbuf, data)
            self.rlen += n
            return n

    def upgrade(self, can_stream, pongs=False, zin=None):
        # Handshake accepted: frames follow. can_stream: what the handler takes; pongs: each
        # pong is an event (EV_PONG); zin: pmd, when permessage-deflate was negotiated.
        self.rpos = self.rlen = 0
        self.flags |= (0, _PIECES, _PIECES | _WHOLE)[can_stream] | (_PONG_EVENTS if pongs else 0)
        if zin is not None:
            self.zin = zin

    def move_input(self, buf):
        """Make buf the receive buffer, taking along what is not parsed yet."""
        n = self.rlen - self.rpos
        move(0, self.rpos, n, buf, self.rbuf)
        self.rbuf = buf
        self.rpos = 0
        self.rlen = n

    def next_event(self):
        if self.pending:
            return self.pending
        if not self.flags & _IN_FRAME and not self.msg_op and self.state == _OPEN:
            # Fast path: a whole FIN data frame, found by one native call (r), stepped over at
            # once (_P_WHOLE). Inline, within 11 words: a larger frame is heap-allocated.
            r = frame_scan(self.rbuf, self.rpos, self.rlen, self.mask)
            if r >= 0:
                n = r & 0xFFFF
                if n <= len(self.own_rbuf) or self.flags & _WHOLE:
                    start = self.rpos + ((r >> 16) & 15)
                    # Unmasked in place, or where it joins the span after its header.
                    at = start
                    if n > len(self.own_rbuf) and self.tx_end and not (start - self.tx_end) & 3:
                        at = self.tx_end + (2 if n < 126 else 4)  # header_size(n): n < 64 KiB
                    unmask_move(at, start, start + n, self.rbuf, self.mask)
                    self.ev_text = r >> 20 == _OP_TEXT
                    if self.ev_text:
                        r = utf8_step(self.rbuf, at, at + n, _UTF8_ACCEPT)
                        if r != _UTF8_ACCEPT:
                            self.rpos = start + n  # (stepped over: the next frame is found)
                            # invalid UTF-8 in text message; text message ends inside a character
                            return self._fail(_CLOSE_INVALID_DATA, why("faults", 1 if r == _UTF8_REJECT else 2))
                    self.rpos = start + n
                    self.ev_off = at
                    self.ev_data = self.rbuf[at : at + n]
                    self.ev_first = self.ev_last = True
                    self.p_kind = _P_WHOLE
                    self.pending = _EV_MESSAGE if n <= len(self.own_rbuf) else _EV_FRAGMENT
                    return self.pending
            elif (r < -1 and self.flags & _WHOLE and self.rlen == len(self.rbuf)
                  and -r <= len(self.rbuf)):
                # A full read cut a frame that fits rbuf: the next one completes it.
                return _EV_NONE
            elif self.rpos == self.rlen:
                return _EV_NONE  # all parsed (recv_window starts the buffer over)
        return _parse(self)

    def _parse(self):
        while self.state != _CLOSED:  # next_event's general case: any frame, any state.
            if not self.flags & _IN_FRAME:
                ev = self._start_frame()
                if ev >= 0:
                    return ev
                continue
            if self.opcode >= _OP_CLOSE:
                if self.rlen - self.rpos < self.f_left:
                    return _EV_NONE
                ev = self._control()
                if ev >= 0:
                    return ev
                continue
            ev = self.zin.data(self) if self.zmsg else self._data()
            if ev >= 0:
                return ev
        self.rpos = self.rlen  # closed: what the peer sends now is read and dropped
        return _EV_NONE

    def _start_frame(self):
        h = self  # Returns an event, or -1 when a header was taken and parsing goes on.
        size = h.parse(self.rbuf, self.rpos, self.rlen)
        if size == 0:
            return _EV_NONE
        op = h.opcode
        rsv = self.rbuf[self.rpos] & 0x70  # (RSV and MASK bits: read in the header, not kept)
        masked = self.rbuf[self.rpos + 1] & 0x80
        # Taken before it is checked: a refused frame is then dropped and the next found.
        self.rpos += size
        self.flags |= _IN_FRAME
        self.f_left = h.length
        self.f_seen = 0
        if self.flags & _FAILED:  # only the peer's close is looked for now: the rest is dropped
            if h.length < 0:
                self.state = _CLOSED
            elif op < _OP_CLOSE or not h.fin or h.length > _MAX_CONTROL:
                self.opcode = _OP_CONT
            return -1
        if rsv and (rsv != 0x40 or self.zin is None or op == _OP_CONT or op >= _OP_CLOSE):
            return self._fail(_CLOSE_PROTOCOL, why("faults", 3))  # reserved bits set where no extension allows them
        if op > _OP_BINARY and op < _OP_CLOSE or op > _OP_PONG:
            return self._fail(_CLOSE_PROTOCOL, why("faults", 4, op))  # reserved opcode %d
        if not masked:
            return self._fail(_CLOSE_PROTOCOL, why("faults", 5))  # client frames must be masked
        if h.length < 0:
            return self._fail(_CLOSE_PROTOCOL, why("faults", 6))  # 64-bit length with the top bit set
        if op >= _OP_CLOSE:
            if not h.fin:
                return self._fail(_CLOSE_PROTOCOL, why("faults", 7))  # fragmented control frame
            if h.length > _MAX_CONTROL:
                return self._fail(_CLOSE_PROTOCOL, why("faults", 8))  # control frame longer than 125 bytes
        elif op == _OP_CONT:
            if not self.msg_op:
                return self._fail(_CLOSE_PROTOCOL, why("faults", 9))  # continuation frame without a message
        else:
            if self.msg_op:
                return self._fail(_CLOSE_PROTOCOL, why("faults", 10))  # new message inside a fragmented one
            self.msg_op = op
            if self.zin is not None:
                self.zmsg = rsv != 0
            self.mlen = 0
            self.flags &= ~_STREAMING
            self.ev_first = True
            self.u8 = _UTF8_ACCEPT
        if op < _OP_CLOSE and not self.flags & _PIECES and self.state == _OPEN and not self.zmsg:
            total = self.mlen + h.length
            if total > len(self.mbuf) and not (op != _OP_CONT and h.fin and h.length <= len(self.own_rbuf)):
                return self._fail(_CLOSE_TOO_BIG, why("faults", 11, self.limit()))  # message larger than %d bytes
        return -1

    def limit(self):
        """Largest message delivered whole (a single frame may also fill rbuf)."""
        return max(len(self.mbuf), len(self.own_rbuf))

    def _prepare(self, text):
        # Unmask (and validate text) what is new: a bad byte fails before the frame ends.
        have = min(self.rlen - self.rpos, self.f_left)
        start = self.rpos + self.f_seen
        end = self.rpos + have
        if end > start:
            unmask(self.rbuf, start, end, self.mask, (self.length - self.f_left + self.f_seen) & 3)  # phase
            self.f_seen = have
            if text:
                self.u8 = utf8_step(self.rbuf, start, end, self.u8)
                if self.u8 == _UTF8_REJECT:
                    return False
        return True

    def _data(self):
        text = self.msg_op == _OP_TEXT
        if self.state == _CLOSING:
            # After our close frame the peer's data is read and dropped (RFC 6455 1.4).
            n = min(self.rlen - self.rpos, self.f_left)
            self.rpos += n
            self.f_left -= n
            if self.f_left:
                return _EV_NONE
            self.flags &= ~_IN_FRAME
            if self.fin:
                self.msg_op = 0
            return -1
        if not self._prepare(text):
            return self._fail(_CLOSE_INVALID_DATA, why("faults", 1))  # invalid UTF-8 in text message
        n = self.f_left
        # 1. A whole message in one frame that fits rbuf: hand it over in place.
        if (self.fin and self.opcode != _OP_CONT and not self.flags & _STREAMING and self.mlen == 0
                and self.length <= len(self.own_rbuf)):
            if self.rlen - self.rpos < n:
                return _EV_NONE
            if text and self.u8 != _UTF8_ACCEPT:
                return self._fail(_CLOSE_INVALID_DATA, why("faults", 2))  # text message ends inside a character
            return self._deliver(_EV_MESSAGE, self.rpos, n, False, text, True)
        have = self.f_seen
        # 2. Assemble a fragmented (or rbuf-sized) message in mbuf while it fits.
        if not self.flags & _STREAMING and self.mlen + n <= len(self.mbuf):
            move(self.mlen, self.rpos, have, self.mbuf, self.rbuf)
            self.mlen += have
            self._advance(have)
            if self.f_left:
                return _EV_NONE
            self.flags &= ~_IN_FRAME
            if not self.fin:
                return -1
            if text and self.u8 != _UTF8_ACCEPT:
                return self._fail(_CLOSE_INVALID_DATA, why("faults", 2))  # text message ends inside a character
            return self._deliver(_EV_MESSAGE, 0, self.mlen, True, text, True)
        if not self.flags & _PIECES:
            return self._fail(_CLOSE_TOO_BIG, why("faults", 11, self.limit()))  # message larger than %d bytes
        return self._stream(text, n, have)

    def _stream(self, text, n, have):
        # 3. Stream: first what was assembled, then the payload piece by piece as it comes.
        if not self.flags & _STREAMING:
            self.flags |= _STREAMING
            if self.mlen:
                return self._deliver(_EV_FRAGMENT, 0, self.mlen, True, text, False)
        cap = self.ring.size - (_CONTROL_RESERVE + 10)  # the largest piece beside the reserve
        if self.flags & _WHOLE and (
                self.f_left != self.length or self.rpos >= header_size(self.length)):
            # In place: all that came, unless no room for the header (then via the ring).
            cap = have
        take = have if have < cap else cap
        last = self.fin and take == n
        if take == 0 and not last:
            if n == 0:
                self.flags &= ~_IN_FRAME  # empty non-final fragment: nothing to hand over
                return -1
            return _EV_NONE
        if last and text and self.u8 != _UTF8_ACCEPT:
            return self._fail(_CLOSE_INVALID_DATA, why("faults", 2))  # text message ends inside a character
        return self._deliver(_EV_FRAGMENT, self.rpos, take, False, text, last)

    def _deliver(self, ev, start, n, from_mbuf, text, last):
        self.ev_off = start  # (ev_first is kept by _start_frame and consume)
        self.ev_data = (self.mbuf if from_mbuf else self.rbuf)[start : start + n]
        self.ev_text = text
        self.ev_last = last
        self.p_kind = _P_MBUF if from_mbuf else _P_RBUF
        self.pending = ev
        return ev

    def _advance(self, n):
        self.rpos += n
        self.f_left -= n
        self.f_seen -= n

    def consume(self):
        """The pending event was handled: move past it."""
        ev = self.pending
        if not ev:
            return
        self.pending = _EV_NONE
        kind = self.p_kind
        # (A _P_WHOLE frame was stepped over when it was parsed: only a join is left.)
        if kind != _P_WHOLE and (ev == _EV_MESSAGE or ev == _EV_FRAGMENT):
            if kind == _P_MBUF:
                self.mlen = 0
            else:
                self._advance(len(self.ev_data))
                if self.f_left == 0:
                    self.flags &= ~_IN_FRAME
            if ev == _EV_FRAGMENT:
                self.ev_first = False
            if self.ev_last:
                self.msg_op = 0
                self.flags &= ~_STREAMING
                self.ev_first = True
        j = self.j_off
        if j >= 0:
            # Relayed in place: append to the span (over the mask's gap): one write a batch.
            n = self.ev_off + len(self.ev_data) - j
            self.j_off = -1
            if not self.tx_end:
                self.tx_off = self.tx_end = j
            elif j != self.tx_end:
                move(self.tx_end, j, n, self.rbuf, self.rbuf)
            self.tx_end += n
        self.ev_data = None

    def _control(self):
        self._prepare(False)
        op = self.opcode
        n = self.f_left
        start = self.rpos
        if op == _OP_PING:
            if self.state == _OPEN:
                # A pong leaves room for a close frame: a failure right after can say why.
                if not self._queue(_OP_PONG, True, self.rbuf[start : start + n], 2 + _MAX_CONTROL):
                    return _EV_BLOCKED
        elif op != _OP_PONG:
            return self._peer_close(start, n)
        self._advance(n)
        self.flags &= ~_IN_FRAME
        if op == _OP_PONG:
            if self.flags & _PONG_EVENTS:  # (consume has nothing to step over)
                return self._deliver(_EV_PONG, start, n, False, False, False)
            self.flags |= _PONG_SEEN
        return -1

    def _peer_close(self, start, n):
        buf = self.rbuf
        if n == 1:
            return self._fail(_CLOSE_PROTOCOL, "close frame with a 1-byte payload")
        code = _CLOSE_NO_STATUS
        reason = ""
        if n >= 2:
            code = (buf[start] << 8) | buf[start + 1]
            if not close_code_valid(code):
                return self._fail(_CLOSE_PROTOCOL, "invalid close code %d" % code)
            raw = self.rbuf[start + 2 : start + n]
            if not is_valid(raw):
                return self._fail(_CLOSE_INVALID_DATA, "close reason is not valid UTF-8")
            reason = str(bytes(raw), "utf-8")
        if self.state == _OPEN:
            # Answer with the same code (RFC 6455 5.5.1); an empty close gets an empty one.
            if not self._queue(_OP_CLOSE, True, buf[start : start + (2 if n >= 2 else 0)], 0):
                return _EV_BLOCKED
        self._advance(n)
        self.flags &= ~_IN_FRAME
        if not self.flags & _FAILED:  # (after our failure, its code is the one that stays)
            self.close_code, self.close_reason = code, reason
        self.state = _CLOSED  # done: TCP closes once our close frame is out (RFC 6455 7.1.1)
        self.flags &= ~_FAILED
        return _EV_CLOSE

    def _fail(self, code, reason):
        # Fail the connection (RFC 6455 7.1.7): queue a close frame, deliver nothing more,
        # drop the peer's frames until its close; a length that cannot be followed leaves
        # only dropping until EOF or the close timeout (CLOSED with FAILED).
        first = not self.flags & _FAILED
        if first:
            if self.state == _OPEN:
                self._queue_close(code, reason)
            self.close_code, self.close_reason = code, reason
        self.flags |= _FAILED
        self.pending = _EV_NONE
        if self.opcode == _OP_CLOSE and self.flags & _IN_FRAME:
            self.state = _CLOSED  # the peer's close, refused: it waits only for ours
            self.flags &= ~_FAILED
        elif self.f_left < 0 or not first:
            self.state = _CLOSED
        else:
            self.state = _CLOSING
            self.opcode = _OP_CONT  # (the refused frame is dropped as data)
        return _EV_ERROR if first else _EV_NONE

    def _queue(self, opcode, fin, data, reserve):
        if self.out_left:
            return False  # no frame may start inside a relayed frame's payload
        ring = self.ring
        n = len(data)
        if header_size(n) + n + reserve > ring.size - ring.used:
            return False
        ring.write_frame((0x80 | opcode) if fin else opcode, data)
        return True

    def sent_span(self, n):
        # The socket took n bytes of the relayed span (tx_off..tx_end).
        n += self.tx_off
        if n == self.tx_end:
            n = self.tx_end = 0
        self.tx_off = n

    def writable(self):
        """Largest payload a data frame may have right now."""
        room = self.ring.free() - _CONTROL_RESERVE
        if room - 2 <= 125:
            return room - 2 if room > 2 else 0
        if room - 4 < 126:
            return 125  # a 126..129-byte gap: the 4-byte header form does not pay off
        if room - 4 <= 65535:
            return room - 4
        return 65535 if room - 10 < 65536 else room - 10

    def send(self, data, text=False):
        """Queue one whole message as one frame, or nothing. True if queued."""
        if self.state != _OPEN or self.flags & _OUT_FRAG or self.out_left:
            return False
        n = len(data)
        ring = self.ring
        # _queue, inline: this is the per-message path.
        if header_size(n) + n + _CONTROL_RESERVE <= ring.size - ring.used:
            ring.write_frame(0x81 if text else 0x82, data)
            return True
        fits_or_raise(n, ring.size, _CONTROL_RESERVE)
        return False

    def send_fragment(self, data, text, first, last):
        if self.state != _OPEN or (not first) == (not self.flags & _OUT_FRAG):
            return False
        n = len(data)
        fits_or_raise(n, self.ring.size, _CONTROL_RESERVE)
        op = (_OP_TEXT if text else _OP_BINARY) if first else _OP_CONT
        if not self._queue(op, last, data, _CONTROL_RESERVE):
            return False
        self.flags = (self.flags & ~_OUT_FRAG) if last else (self.flags | _OUT_FRAG)
        return True

    relay = _relay_piece  # (ringws/relay.py)

    def send_ping(self, payload=b""):
        # _PONG_SEEN then says whether a pong came after this ping.
        if self.state != _OPEN or not self._queue(_OP_PING, True, payload, 0):
            return False
        self.flags &= ~_PONG_SEEN
        return True

    def _queue_close(self, code, reason):
        if self.out_left:
            return False  # mid-frame: the close timeout ends the connection instead
        r = reason.encode() if reason else b""
        if len(r) > _MAX_CONTROL - 2:
            r = r[: _MAX_CONTROL - 2]
            while r and not is_valid(r):  # never cut inside a character
                r = r[:-1]
        n = 2 + len(r)
        if header_size(n) + n > self.ring.free():
            return False
        write_header(_SCRATCH, 0, _OP_CLOSE, True, n)
        _SCRATCH[2] = code >> 8
        _SCRATCH[3] = code & 0xFF
        self.ring.write(_SCRATCH, 0, 4)
        self.ring.write(r, 0, len(r))
        return True

    def close(self, code=_CLOSE_NORMAL, reason=""):
        """Start the close handshake. False if it was already started or finished."""
        if self.state != _OPEN:
            return False
        self._queue_close(code, reason)
        self.state = _CLOSING
        self.close_code, self.close_reason = code, reason
        return True


_parse = Protocol._parse  # (next_event's general case, without a miss in a slot's table)
