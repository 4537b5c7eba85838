# CPython versions of the kernels in kernels.py (same signatures and results, built on
# big-int and bytes operations). Never imported on MicroPython.
from ringws.kernels import UTF8_CLASS, UTF8_TRANS



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


def copy(dst, doff, src, soff, n):
    memoryview(dst)[doff : doff + n] = memoryview(src)[soff : soff + n]


def find(buf, pat, start, end):
    i = bytes(memoryview(buf)[start:end]).find(pat)
    return -1 if i < 0 else start + i


def utf8_step(buf, start, end, state):
    view = memoryview(buf)[start:end]
    if state == 0 and bytes(view).isascii():
        return 0
    cls = UTF8_CLASS
    trans = UTF8_TRANS
    for x in view:
        if state == 0 and x < 0x80:
            continue
        state = trans[(state << 4) | cls[x]]
        if state == 1:
            return 1
    return state
