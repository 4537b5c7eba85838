# RFC 6455 frame headers: decode (client -> server, masked) and encode (server -> client).
# Pure functions over buffers and offsets; no I/O and no allocation per frame.
from ringws.compat import const, why
from ringws.kernels import unmask  # noqa: F401  (part of this module's API)

OP_CONT = const(0x0)
OP_TEXT = const(0x1)
OP_BINARY = const(0x2)
OP_CLOSE = const(0x8)
OP_PING = const(0x9)
OP_PONG = const(0xA)

MAX_CONTROL = const(125)

# Close codes (RFC 6455 section 7.4.1)
CLOSE_NORMAL = const(1000)
CLOSE_GOING_AWAY = const(1001)
CLOSE_PROTOCOL = const(1002)
CLOSE_NO_STATUS = const(1005)
CLOSE_ABNORMAL = const(1006)
CLOSE_INVALID_DATA = const(1007)
CLOSE_POLICY = const(1008)
CLOSE_TOO_BIG = const(1009)
CLOSE_INTERNAL = const(1011)


def close_code_valid(code):
    """May this code appear in a Close frame on the wire? (IANA registry: 1004-1006
    and 1015 are reserved for local use; 1012-1014 were registered after RFC 6455.)"""
    if 1000 <= code <= 1003 or 1007 <= code <= 1014:
        return True
    return 3000 <= code <= 4999


class FrameHeader:
    """One decoded header; preallocated per connection and refilled by parse(). The RSV
    and MASK bits are not kept (each field costs every slot): read them in the header bytes."""

    def __init__(self):
        self.fin = False
        self.opcode = 0
        self.length = 0
        self.mask = bytearray(4)

    def parse(self, buf, pos, end):
        """Decode the header at buf[pos:end]. Returns its size, or 0 if incomplete.

        Checks nothing: validation is the protocol's job, so the caller can tell which
        rule was broken. A 64-bit length with the top bit set is reported as -1.
        """
        if end - pos < 2:
            return 0
        b0 = buf[pos]
        b1 = buf[pos + 1]
        n = b1 & 0x7F
        size = 2
        if n == 126:
            size = 4
        elif n == 127:
            size = 10
        if b1 & 0x80:
            size += 4
        if end - pos < size:
            return 0
        if n == 126:
            n = (buf[pos + 2] << 8) | buf[pos + 3]
        elif n == 127:
            if buf[pos + 2] & 0x80:
                n = -1
            else:
                n = 0
                for i in range(pos + 2, pos + 10):
                    n = (n << 8) | buf[i]
        self.fin = bool(b0 & 0x80)
        self.opcode = b0 & 0x0F
        self.length = n
        if b1 & 0x80:
            m = pos + size - 4
            mk = self.mask
            mk[0] = buf[m]
            mk[1] = buf[m + 1]
            mk[2] = buf[m + 2]
            mk[3] = buf[m + 3]
        return size


def fits_or_raise(n, size, reserve):
    # Never fits beside the reserve: an error naming the largest payload that does (4-byte header).
    if header_size(n) + n + reserve <= size:
        return
    most = size - reserve - 4
    if most > 65535:
        most = max(65535, most - 6)
    # %d bytes: a %d-byte send ring takes frames of up to %d bytes (send_fragment)
    raise ValueError(why("faults", 26, (n, size, most)))


def header_size(length):
    """Bytes of an unmasked (server) header for a payload of this length."""
    if length < 126:
        return 2
    if length < 65536:
        return 4
    return 10


def write_header(buf, off, opcode, fin, length):
    """Encode an unmasked header into buf at off; returns its size."""
    buf[off] = (0x80 if fin else 0) | opcode
    if length < 126:
        buf[off + 1] = length
        return 2
    if length < 65536:
        buf[off + 1] = 126
        buf[off + 2] = length >> 8
        buf[off + 3] = length & 0xFF
        return 4
    buf[off + 1] = 127
    for i in range(8):
        buf[off + 9 - i] = (length >> (8 * i)) & 0xFF
    return 10

