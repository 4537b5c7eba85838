# Hot loops: unmasking, buffer copies, UTF-8 validation.
#
# On MicroPython these are viper functions (native code, word-wide where the data allows);
# under CPython they are plain Python built on big-int and bytes operations. Both sides
# have the same signatures and results; host_tests check them against each other.
# Callers pass offsets instead of slices so that nothing is allocated per call.
from ringws.compat import MICROPYTHON

# UTF-8 DFA (after Bjoern Hoehrmann): byte -> class, (state << 4 | class) -> state.
# Classes: 0 ASCII; continuation bytes 1 (80-8F), 9 (90-9F), 7 (A0-BF); 8 never valid (C0,
# C1, F5-FF); leads 2 (C2-DF), 10 (E0), 3 (E1-EC, EE, EF), 4 (ED), 11 (F0), 6 (F1-F3), 5 (F4).
# States: 0 accept, 1 reject, 2 one continuation left, 3 two left, 4 after E0 (A0-BF),
# 5 after ED (80-9F), 6 after F0 (90-BF), 7 after F1-F3, 8 after F4 (80-8F).
# Written out, not computed at import: code that builds them would take heap to load.
UTF8_ACCEPT = 0
UTF8_REJECT = 1
UTF8_CLASS = (  # a row of 16 bytes each
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 00-0F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 10-1F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 20-2F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 30-3F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 40-4F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 50-5F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 60-6F
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # 70-7F
    b"\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"  # 80-8F
    b"\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09"  # 90-9F
    b"\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"  # A0-AF
    b"\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07"  # B0-BF
    b"\x08\x08\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02"  # C0-CF
    b"\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02"  # D0-DF
    b"\x0a\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x04\x03\x03"  # E0-EF
    b"\x0b\x06\x06\x06\x05\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08"  # F0-FF
)
UTF8_TRANS = (  # a row of 16 per state, by class 0..11 (12..15 unused)
    b"\x00\x01\x02\x03\x05\x08\x07\x01\x01\x01\x04\x06\x01\x01\x01\x01"  # 0: by the lead
    b"\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"  # 1: stays
    b"\x01\x00\x01\x01\x01\x01\x01\x00\x01\x00\x01\x01\x01\x01\x01\x01"  # 2: 80-BF
    b"\x01\x02\x01\x01\x01\x01\x01\x02\x01\x02\x01\x01\x01\x01\x01\x01"  # 3: 80-BF
    b"\x01\x01\x01\x01\x01\x01\x01\x02\x01\x01\x01\x01\x01\x01\x01\x01"  # 4: A0-BF
    b"\x01\x02\x01\x01\x01\x01\x01\x01\x01\x02\x01\x01\x01\x01\x01\x01"  # 5: 80-9F
    b"\x01\x01\x01\x01\x01\x01\x01\x03\x01\x03\x01\x01\x01\x01\x01\x01"  # 6: 90-BF
    b"\x01\x03\x01\x01\x01\x01\x01\x03\x01\x03\x01\x01\x01\x01\x01\x01"  # 7: 80-BF
    b"\x01\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01"  # 8: 80-8F
)

if MICROPYTHON:
    import micropython

    # The native emitter keeps a viper function's first three locals (its first three
    # parameters) in machine registers and the rest on the stack, so the bulk kernels
    # take their three offsets first and turn them into addresses. Addresses never cross
    # a call boundary: on 32-bit ports some are not small ints, and boxing one allocates.

    @micropython.viper
    def unmask_move(dst: int, start: int, end: int, buf, mask):
        # Unmask buf[start:end] (from mask[0]) into buf[dst:], dst <= start (dst == start:
        # in place). Relaying joins frames into one span this way, in the same pass as
        # unmasking. Word-wide when dst and start lie alike modulo 4 (the usual case: a
        # mask is 4 bytes); words only at 4-aligned addresses, as the ESP32's Xtensa core
        # faults on unaligned 32-bit access.
        b = int(ptr8(buf))
        m = ptr8(mask)
        dst += b
        start += b
        end += b
        p = 0
        if ((dst - start) & 3) == 0:
            while start < end and (start & 3) != 0:
                ptr8(dst)[0] = ptr8(start)[0] ^ m[p]
                p = (p + 1) & 3
                start += 1
                dst += 1
            w = m[p] | (m[(p + 1) & 3] << 8) | (m[(p + 2) & 3] << 16) | (m[(p + 3) & 3] << 24)
            end -= 31
            while start < end:  # 8 words a turn: the loop's own cost is most of a word's
                ptr32(dst)[0] = ptr32(start)[0] ^ w
                ptr32(dst)[1] = ptr32(start)[1] ^ w
                ptr32(dst)[2] = ptr32(start)[2] ^ w
                ptr32(dst)[3] = ptr32(start)[3] ^ w
                ptr32(dst)[4] = ptr32(start)[4] ^ w
                ptr32(dst)[5] = ptr32(start)[5] ^ w
                ptr32(dst)[6] = ptr32(start)[6] ^ w
                ptr32(dst)[7] = ptr32(start)[7] ^ w
                start += 32
                dst += 32
            end += 28
            while start < end:
                ptr32(dst)[0] = ptr32(start)[0] ^ w
                start += 4
                dst += 4
            end += 3
        while start < end:
            ptr8(dst)[0] = ptr8(start)[0] ^ m[p]
            p = (p + 1) & 3
            start += 1
            dst += 1

    _ROT = bytearray(4)  # a mask turned to start at its phase (filled and used in one call)

    def unmask(buf, start, end, mask, phase):
        # XOR buf[start:end] in place with the 4-byte mask, starting at mask[phase];
        # returns the phase after the last byte (a frame's payload may arrive in parts).
        p = phase & 3
        if p:
            r = _ROT
            r[0] = mask[p]
            r[1] = mask[(p + 1) & 3]
            r[2] = mask[(p + 2) & 3]
            r[3] = mask[(p + 3) & 3]
            mask = r
        unmask_move(start, start, end, buf, mask)
        return (p + end - start) & 3

    @micropython.viper
    def move(doff: int, soff: int, n: int, dst, src):
        # dst[doff:doff+n] = src[soff:soff+n] without a slice object. Safe for moving
        # data towards the start of the same buffer (doff <= soff).
        doff += int(ptr8(dst))
        soff += int(ptr8(src))
        n += soff  # the end
        if ((doff - soff) & 3) == 0:
            while soff < n and (soff & 3) != 0:
                ptr8(doff)[0] = ptr8(soff)[0]
                soff += 1
                doff += 1
            n -= 31
            while soff < n:
                ptr32(doff)[0] = ptr32(soff)[0]
                ptr32(doff)[1] = ptr32(soff)[1]
                ptr32(doff)[2] = ptr32(soff)[2]
                ptr32(doff)[3] = ptr32(soff)[3]
                ptr32(doff)[4] = ptr32(soff)[4]
                ptr32(doff)[5] = ptr32(soff)[5]
                ptr32(doff)[6] = ptr32(soff)[6]
                ptr32(doff)[7] = ptr32(soff)[7]
                soff += 32
                doff += 32
            n += 28
            while soff < n:
                ptr32(doff)[0] = ptr32(soff)[0]
                soff += 4
                doff += 4
            n += 3
        while soff < n:
            ptr8(doff)[0] = ptr8(soff)[0]
            soff += 1
            doff += 1

    @micropython.viper
    def frame_scan(buf, pos: int, end: int, mask) -> int:
        # The common case, decided in one call: is there a whole FIN text or binary frame,
        # masked, with a 7- or 16-bit length, at buf[pos:end]? Then copy its mask into
        # `mask` and return opcode << 20 | header size << 16 | payload length. If such a
        # frame's header is there but not all of its payload, minus the frame's size (at
        # most -6). Otherwise -1, and the general parser (FrameHeader.parse and the
        # protocol's rules) decides.
        if end - pos < 6:
            return -1
        b = ptr8(buf)
        b0 = int(b[pos])
        b1 = int(b[pos + 1])
        if (b0 != 0x81 and b0 != 0x82) or (b1 & 0x80) == 0:
            return -1
        n = b1 & 0x7F
        hs = 6
        if n == 127:
            return -1
        if n == 126:
            hs = 8
            if end - pos < 8:
                return -1
            n = (int(b[pos + 2]) << 8) | int(b[pos + 3])
        if end - pos < hs + n:
            return -(hs + n)
        m = ptr8(mask)
        k = pos + hs - 4
        m[0] = b[k]
        m[1] = b[k + 1]
        m[2] = b[k + 2]
        m[3] = b[k + 3]
        return ((b0 & 0x0F) << 20) | (hs << 16) | n

    @micropython.viper
    def put_frame(ring, tail: int, b0: int, data, n: int) -> int:
        # One unmasked frame into a ring buffer at `tail`, wrapping at its end: the header
        # (first byte b0 = FIN | opcode, length n) then data[:n]. The caller has checked
        # the room. Returns the bytes written (header + n). (Five arguments: the caller's
        # frame then stays small enough for the C stack, see RingBuffer.write_frame.)
        size = int(len(ring))
        r = ptr8(ring)
        hs = 2
        b1 = n
        if n >= 65536:
            hs = 10
            b1 = 127
        elif n >= 126:
            hs = 4
            b1 = 126
        i = 0
        while i < hs:
            if i == 0:
                v = b0
            elif i == 1:
                v = b1
            elif hs == 4:
                v = (n >> ((3 - i) << 3)) & 0xFF
            elif i < 6:
                v = 0  # the top half of a 64-bit length: rings are far smaller
            else:
                v = (n >> ((9 - i) << 3)) & 0xFF
            r[tail] = v
            tail += 1
            if tail >= size:
                tail = 0
            i += 1
        first = size - tail
        if first >= n:
            move(tail, 0, n, ring, data)
        else:
            move(tail, 0, first, ring, data)
            move(0, first, n - first, ring, data)
        return hs + n

    @micropython.viper
    def _utf8_run(buf, start: int, end: int, state: int, cls, trans) -> int:
        b = ptr8(buf)
        c = ptr8(cls)
        t = ptr8(trans)
        i = start
        while i < end:
            x = b[i]
            if state == 0 and x < 0x80:
                i += 1
                continue
            state = t[(state << 4) | c[x]]
            if state == 1:
                return 1
            i += 1
        return state

    @micropython.viper
    def _find(buf, start: int, end: int, pat, plen: int) -> int:
        b = ptr8(buf)
        p = ptr8(pat)
        i = start
        last = end - plen
        while i <= last:
            k = 0
            while k < plen and b[i + k] == p[k]:
                k += 1
            if k == plen:
                return i
            i += 1
        return -1

    def find(buf, pat, start, end):
        # bytes.find for bytearrays and memoryviews alike, without copying.
        return _find(buf, start, end, pat, len(pat))

else:
    # Pure-Python versions with the same results, in their own module (no MicroPython
    # heap is spent on them).
    from ringws.kernels_cpython import (  # noqa: F401
        find,
        frame_scan,
        move,
        put_frame,
        unmask,
        unmask_move,
    )
    from ringws.kernels_cpython import utf8_run as _utf8_run


def utf8_step(buf, start, end, state):
    # Advance the validator over buf[start:end]; 1 (reject) on the first bad byte.
    return _utf8_run(buf, start, end, state, UTF8_CLASS, UTF8_TRANS)


def utf8_valid(data):
    """Is data, all of it, valid UTF-8? (Close reasons, which arrive whole.)"""
    return utf8_step(data, 0, len(data), UTF8_ACCEPT) == UTF8_ACCEPT
