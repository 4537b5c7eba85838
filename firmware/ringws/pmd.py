# permessage-deflate (RFC 7692), receive side: the handshake's answer, and the protocol's
# data path for a compressed message (RSV1 on its first frame). Loaded only when the
# server has inflaters ("inflaters" > 0).
#
# Negotiation: the first acceptable offer wins. Every message stands alone (we answer
# client_no_context_takeover, so nothing is kept between messages) and the client's window
# is capped at "inflate_bits" (client_max_window_bits), which needs the client to have
# offered that parameter; without it the client may use a 32 KiB window, accepted only
# where inflate_bits is 15. ringws never compresses what it sends (RFC 7692 lets a server
# answer uncompressed): stock MicroPython firmware cannot compress.
#
# Inflating: a message borrows an inflater from POOL (made at start-up) for its duration,
# or waits, not reading (EV_BLOCKED: the runtime pauses and asks again). The compressed
# frames are fed as they come; the output collects in the inflater's buffer and leaves as
# the protocol's events: a whole message up to max_message, copied into the slot's
# message buffer (the inflater is back in the pool before the handler runs), else pieces
# for a streaming handler (1009 without one), the last of them empty. Limits and UTF-8
# checks apply to the inflated bytes.
from ringws import handshake
from ringws.compat import const
from ringws.compat_inflate import Inflater
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

_HEADER = b"sec-websocket-extensions"
_INPUT = const(1024)  # compressed input per inflater: the decoder's lookahead and more

POOL = []  # free inflaters
BITS = 0  # our client_max_window_bits (the inflaters' window)
_MADE = None  # the settings POOL was made for


def _settings(cfg):
    return cfg["inflaters"], cfg["inflate_bits"], cfg["max_message"], cfg["send_ring"]


def start(cfg):
    """The inflater pool, once per server: at start-up (launch.py), else at the first offer."""
    global BITS, _MADE
    BITS = cfg["inflate_bits"]
    if not 9 <= BITS <= 15:
        raise ValueError("server setting inflate_bits must be 9..15 (zlib cannot make 8)")
    _MADE = _settings(cfg)
    if _HEADER not in handshake.KNOWN:  # the request parser keeps only the fields it is told
        handshake.KNOWN += (_HEADER,)
    k = cfg["inflaters"]
    # Output pieces fit the send ring (as Protocol._stream's); a whole message fits too.
    out = max(cfg["max_message"], min(1024, cfg["send_ring"] - 264))
    POOL[:] = [Inflater(_INPUT, out, BITS) for _ in range(k)]
    print("ringws: permessage-deflate: %d inflaters x %d B (input %d + output %d) = %d B budgeted"
          % (k, _INPUT + out, _INPUT, out, k * (_INPUT + out)))


# -- negotiation -------------------------------------------------------------------------


def _bits(v):
    # 8..15 in plain digits, else 0 (RFC 7692 7.1.2: no leading zeros).
    if (len(v) == 1 and v in "89") or (len(v) == 2 and v[0] == "1" and v[1] in "012345"):
        return int(v)
    return 0


def _accept(params):
    # One offer's parameters: our answer, or None to decline it (RFC 7692 7.1).
    seen = []
    client = -1  # client_max_window_bits: -1 absent, 0 without a value
    server = 0
    for p in params:
        name, eq, val = p.partition("=")
        name = name.strip().lower()
        val = val.strip()
        if len(val) > 1 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        if name in seen:
            return None
        seen.append(name)
        if name == "server_no_context_takeover" or name == "client_no_context_takeover":
            if eq:
                return None
        elif name == "server_max_window_bits":
            server = _bits(val)
            if not server:
                return None
        elif name == "client_max_window_bits":
            client = _bits(val) if eq else 0
            if eq and not client:
                return None
        else:
            return None
    if client < 0 and BITS < 15:
        return None  # the client may use a 32 KiB window
    ans = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    if client >= 0:
        ans += "; client_max_window_bits=%d" % (min(client, BITS) if client else BITS)
    if server:
        ans += "; server_max_window_bits=%d" % server  # (we never compress)
    return ans


def offer(req, handler, cfg):
    """The end of the 101 response (from the Sec-WebSocket-Extensions line) that accepts
    permessage-deflate for this upgrade request, or None (declined)."""
    value = req.header("sec-websocket-extensions")
    if value and getattr(handler, "compression", True):
        value = negotiate(value, cfg)
        if value:
            return b"Sec-WebSocket-Extensions: " + value.encode() + b"\r\n\r\n"
    return None


def negotiate(value, cfg):
    """Sec-WebSocket-Extensions' answer to the request's header value, or None."""
    if _settings(cfg) != _MADE:
        start(cfg)  # (a server made without slot.allocate_slots, or a test's settings)
    for offer in value.split(","):
        params = offer.split(";")
        if params[0].strip().lower() == "permessage-deflate":
            ans = _accept(params[1:])
            if ans is not None:
                return ans
    return None


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
    if p.inf is not None:
        POOL.append(p.inf)
        p.inf = None


def _run(p, inf):
    obuf = inf.obuf
    text = p.msg_op == _OP_TEXT
    while True:
        fed = _feed(p, inf) if p.flags & _IN_FRAME and not inf.ended else 0
        at = p.mlen
        room = len(obuf) - at
        if not room:
            if inf.done and inf.ended:
                return _finish(p, inf, text)
            if not p.flags & _PIECES:
                raise ValueError(1009, "message larger than %d bytes" % len(p.mbuf))
            p.flags |= _STREAMING
            return _deliver(p, obuf, at, _EV_FRAGMENT, False)
        k = inf.out(obuf, at, room)
        if k:
            if text:
                p.u8 = utf8_step(obuf, at, at + k, p.u8)
                if p.u8 == UTF8_REJECT:
                    raise ValueError(1007, "invalid UTF-8 in text message")
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


def _feed(p, inf):
    # This frame's compressed bytes that came, unmasked, into the inflater.
    p._prepare(False)
    n = p.f_seen
    room = inf.room()
    if n > room:
        n = room
    if n:
        inf.feed(p.rbuf, p.rpos, n)
        p._advance(n)
    if not p.f_left and p.fin:
        inf.end()
    return n


def _finish(p, inf, text):
    if text and p.u8 != UTF8_ACCEPT:
        raise ValueError(1007, "text message ends inside a character")
    n = p.mlen
    if n and (p.flags & _STREAMING or n > len(p.mbuf)):
        # Out as a piece first, while the inflater still holds it; an empty last one follows.
        if not p.flags & _PIECES:
            raise ValueError(1009, "message larger than %d bytes" % len(p.mbuf))
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
