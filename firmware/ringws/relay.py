# Relaying: a piece the protocol handed over (EV_FRAGMENT) sent back in the framing it came
# in, in place in the receive buffer where it can be (the header written just before the
# payload, over the parsed incoming header), else through the send ring. Protocol.relay is
# relay() here; p is the Protocol (a Slot).
from ringws.compat import const, why
from ringws.frames import header_size, write_header

# protocol.py's constants as private const()s (host_tests/test_core_frames.py checks).
_EV_FRAGMENT = const(2)
_OPEN = const(0)
_CONTROL_RESERVE = const(254)
_OP_BINARY = const(0x2)
_OP_CONT = const(0x0)
_OP_TEXT = const(0x1)
_P_RBUF = const(0)
_P_MBUF = const(1)
_P_WHOLE = const(2)

len = len
SCRATCH = bytearray(14)  # header bytes on their way into a ring, within one call (protocol's too)
_SCRATCH = SCRATCH


def relay(p, data):
    """Send an EV_FRAGMENT piece in the framing it came in: a frame's first piece opens
    one of the same length, opcode and FIN, later ones add payload. All or nothing."""
    if p.pending != _EV_FRAGMENT or p.state != _OPEN:
        return False
    if (p.p_kind == _P_WHOLE and data is p.ev_data and not p.ring.used
            and p.j_off < 0 and not p.out_left):
        # Per message: a whole frame in place, its header just before it (inline).
        n = len(data)
        if n >= 65536:
            p.j_off = p.ev_off - 10
            write_header(p.rbuf, p.j_off, _OP_TEXT if p.ev_text else _OP_BINARY, True, n)
            return True
        buf = p.rbuf
        if n < 126:
            j = p.ev_off - 2
            buf[j + 1] = n
        else:
            j = p.ev_off - 4
            buf[j + 1] = 126
            buf[j + 2] = n >> 8
            buf[j + 3] = n & 0xFF
        buf[j] = 0x81 if p.ev_text else 0x82
        p.j_off = j
        return True
    return _relay(p, data)

def _relay(p, data):
    n = len(data)  # relay() for everything but a whole frame going out in place.
    ring = p.ring
    kind = p.p_kind
    # Zero copy (the piece written from rbuf) when the ring is empty and it is unchanged.
    direct = data is p.ev_data and kind != _P_MBUF and not ring.used and p.j_off < 0
    at = p.ev_off
    if p.out_left:
        if n > p.out_left:
            return False
        if direct and n and p.tx_end <= at:
            p.j_off = at
        elif n + _CONTROL_RESERVE > ring.free():
            if n + _CONTROL_RESERVE > ring.size and data is not p.ev_data:
                raise ValueError(why("faults", 12, n))  # a %d-byte piece can only be relayed unchanged (whole_frames)
            return False
        else:
            ring.write(data, 0, n)
        p.out_left -= n
        return True
    if kind != _P_RBUF:  # a whole frame, or the assembled start of a message: its own frame
        total = len(p.ev_data)
        fin = kind == _P_WHOLE or p.ev_last  # (nothing of a whole frame comes later)
        if fin and n != total:
            raise ValueError(why("faults", 13, (n, total)))  # a whole frame is relayed whole (%d of %d bytes given)
    else:
        if p.f_left != p.length:
            return False  # the start of this frame was not relayed
        total = p.length
        fin = p.fin
    op = (_OP_TEXT if p.ev_text else _OP_BINARY) if p.ev_first else _OP_CONT
    hsize = header_size(total)
    if n > total:
        return False
    if direct and at >= hsize and p.tx_end <= at - hsize:
        # The header goes just before the payload, over the parsed incoming header.
        p.j_off = at - hsize
        write_header(p.rbuf, p.j_off, op, fin, total)
        p.out_left = total - n
        return True
    if hsize + n + _CONTROL_RESERVE > ring.free():
        if hsize + n + _CONTROL_RESERVE > ring.size and data is not p.ev_data:
            # Only a whole_frames piece is this large: it goes in place, never copied.
            raise ValueError(why("faults", 12, n))  # a %d-byte piece can only be relayed unchanged (whole_frames)
        return False
    write_header(_SCRATCH, 0, op, fin, total)
    ring.write(_SCRATCH, 0, hsize)
    ring.write(data, 0, n)
    p.out_left = total - n
    return True
