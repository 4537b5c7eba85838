# CPython versions of the kernels in kernels.py (same signatures and results, built on
# big-int and bytes operations). Never imported on MicroPython. Imports nothing from
# kernels.py: the UTF-8 tables come in as arguments.


def unmask(buf, start, end, mask, phase):
    n = end - start
    if n <= 0:
        return phase & 3
    p = phase & 3
    rot = bytes(mask[p:]) + bytes(mask[:p])
    full = rot * (n // 4 + 1)
    view = memoryview(buf)[start:end]
    x = int.from_bytes(view, "little") ^ int.from_bytes(full[:n], "little")
    view[:] = x.to_bytes(n, "little")
    return (p + n) & 3


def unmask_move(dst, start, end, buf, mask):
    unmask(buf, start, end, mask, 0)
    move(dst, start, end - start, buf, buf)


def move(doff, soff, n, dst, src):
    memoryview(dst)[doff : doff + n] = memoryview(src)[soff : soff + n]


def find(buf, pat, start, end):
    i = bytes(memoryview(buf)[start:end]).find(pat)
    return -1 if i < 0 else start + i


def utf8_run(buf, start, end, state, cls, trans):
    view = memoryview(buf)[start:end]
    if state == 0 and bytes(view).isascii():
        return 0
    for x in view:
        if state == 0 and x < 0x80:
            continue
        state = trans[(state << 4) | cls[x]]
        if state == 1:
            return 1
    return state


def frame_scan(buf, pos, end, mask):
    if end - pos < 6:
        return -1
    b0 = buf[pos]
    b1 = buf[pos + 1]
    if b0 not in (0x81, 0x82) or not b1 & 0x80:
        return -1
    n = b1 & 0x7F
    hs = 6
    if n == 127:
        return -1
    if n == 126:
        hs = 8
        if end - pos < 8:
            return -1
        n = (buf[pos + 2] << 8) | buf[pos + 3]
    if end - pos < hs + n:
        return -(hs + n)
    mask[0:4] = buf[pos + hs - 4 : pos + hs]
    return ((b0 & 0x0F) << 20) | (hs << 16) | n


def put_frame(ring, tail, b0, data, n):
    size = len(ring)
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 127)) + n.to_bytes(8, "big")
    frame = head + bytes(memoryview(data)[:n])
    first = min(size - tail, len(frame))
    move(tail, 0, first, ring, frame)
    move(0, first, len(frame) - first, ring, frame)
    return len(frame)
