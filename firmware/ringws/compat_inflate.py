# permessage-deflate's buffers (the inflaters), made when pmd.py loads (pmd.start) and gone
# with it (pmdgate.offer), and its start-up part: the request header the handshake
# keeps and /stats' figures (launch.py; slot.allocate_slots for a server made without it).
# This module leaves the heap once it has made them; they stay with the package
# (ringws.inflaters: the settings they were made for, the list, and what /stats shows).
#
# Each inflater's buffers, per message:
#   input   768 bytes: compressed bytes waiting for the decoder. It reads a byte at a time
#           and cannot resume once its source runs dry, so it is asked for at most
#           (waiting - 320) / 2 bytes (a symbol is at most 2 input bytes per output byte; a
#           dynamic block header, the largest, is at most 288 bytes); 768 less the ~150
#           bytes that follow each message (pmd.py's end mark) lets it make up to 150 bytes
#           a call (pmd.py asks for 128 at most).
#   output  the larger of max_message (a message delivered whole is inflated into it) and
#           the largest piece the send ring takes beside its reserve (a streamed piece is
#           echoed as one frame), at most 1 KiB. (Not taken from the shared receive
#           buffer: its size is the board's reads of several frames at once.)
#   decoder the deflate module's DeflateIO: its window (1 << inflate_bits) and state
#           (about 1.4 KB on x64), made here and used message after message (pmd.py).

import ringws
from ringws import compat


def _zeros(bits):
    # A fixed-Huffman block: literal 0, then enough copies of length 258 at distance 1 to
    # fill the window; an empty stored block realigns. (bytes, zeros it makes, bytes read
    # until the last of them is made)
    k = ((1 << bits) + 257) // 258
    out = bytearray()
    acc = n = 0
    for v, nb in [(2, 3), (0x0C, 8)] + [(0xA3, 8), (0, 5)] * k + [(0, 7), (0, 3)]:
        acc |= v << n  # (Huffman codes written here with their bits already reversed)
        n += nb
        while n >= 8:
            out.append(acc & 255)
            acc >>= 8
            n -= 8
    if n:
        out.append(acc)
    return bytes(out) + b"\x00\x00\xff\xff", 1 + 258 * k, (18 + 13 * k) // 8



def _one(bits, out, fill):
    if not compat.MICROPYTHON:
        return None, out, bits
    import deflate
    import io

    src = getattr(io, "BytesIO")(768)
    src.write(b"\x00\x01\x00\xfe\xff\x00")  # a stored block of one byte
    src.seek(0)
    dio = deflate.DeflateIO(src, deflate.RAW, bits)
    dio.readinto(bytearray(1))  # its window and state are made now; the next read starts a block
    return src, out, dio, fill


def start(cfg, line=False):
    """The buffers for cfg's inflaters: [(input stream, output, decoder, what follows each
    message), ...] ((None, output, bits) under CPython's zlib), made when pmd.py loads.
    With line (start-up, launch.py): only the request header the handshake keeps and
    /stats' figures; returns the line launch.py prints."""
    made = k, bits, mbuf, ring = cfg["inflaters"], cfg["inflate_bits"], cfg["max_message"], cfg["send_ring"]
    if not 9 <= bits <= 15:
        raise ValueError("inflate_bits: 9..15")  # (zlib cannot make 8)
    out = max(mbuf, min(1024, ring - 264))
    # /stats deflate: declined counts offers refused for want of heap (pmdgate.offer);
    # code is the heap pmd.py and this pool took at their last load, loads how often.
    st = None if line else getattr(ringws, "inflaters", (0, 0, None))[2]
    if st is None:
        st = {"inflaters": k, "bits": bits, "can_compress": False, "declined": 0,
              "code": cfg.get("deflate_code", 0), "loads": 0}
    bufs = None
    if not line:
        # Whether the deflate module can compress, found by trying (stock ESP32 firmware and
        # the unix port cannot: DeflateIO has no write; CPython has no deflate module).
        try:
            import deflate
            import io

            write = getattr(deflate.DeflateIO(io.BytesIO(), deflate.RAW, 9), "write", None)
            st["can_compress"] = write is not None and write(b"x") == 1
        except Exception:  # ImportError, OSError
            pass
        fill, nfill, rfill = _zeros(bits)
        # What follows each message, the same for every inflater: the RFC's tail
        # (00 00 ff ff), the end mark (a stored block of 128 zeros), the window's zeros.
        # (and a scratch buffer for compaction and draining, within one call)
        fill = (bits, b"\x00\x00\xff\xff\x00\x80\x00\x7f\xff" + bytes(128) + fill, nfill, rfill,
                bytearray(128))
        # (BytesIO(size) is preallocated: writes within it never grow it. getattr: the stubs
        # leave out its size argument.)
        bufs = [_one(bits, memoryview(bytearray(out)), fill) for _ in range(k)]
    # (pmdgate.offer drops made and bufs with pmd.py; st stays)
    setattr(ringws, "inflaters", (made if bufs else None, bufs, st))
    from ringws import handshake, pmdgate  # noqa: F401  (pmdgate: kept, for each offer)

    if b"sec-websocket-extensions" not in handshake.KNOWN:  # it keeps only what it is told
        handshake.KNOWN += (b"sec-websocket-extensions",)
    compat.unload(__name__)  # (loaded for this call only)
    # A pointer the caller's interpreter frame keeps in a register (the collector scans
    # them) can still lead to this module's dict: emptied, it keeps none of the code.
    globals().clear()
    if line:
        return "ringws: permessage-deflate: %d inflaters x (input 768 + output %d + decoder) made with its code at an offer that fits; %%d B taken at start-up" % (k, out)
    return bufs
