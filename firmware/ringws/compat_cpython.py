# CPython side of compat.py (host tests, tools). Never imported on MicroPython.
import asyncio
import gc  # noqa: F401
import time


def const(x):
    return x


_PERIOD = 1 << 30


def ticks_ms():
    return int(time.monotonic() * 1000) & (_PERIOD - 1)


def ticks_diff(a, b):
    d = (a - b) & (_PERIOD - 1)
    return d - _PERIOD if d >= _PERIOD // 2 else d


def mem_free():
    return -1  # CPython has no fixed heap


def mem_alloc():
    # What tracemalloc sees while it traces, else -1.
    import tracemalloc

    if tracemalloc.is_tracing():
        return tracemalloc.get_traced_memory()[0]
    return -1


def drop_entry(owner):
    pass  # MicroPython's poller entry (compat.py); asyncio here keeps its own


async def wait_readable(sock, owner=None):
    # Fake sockets (host_tests) provide their own awaitable; real ones use the loop.
    w = getattr(sock, "wait_readable", None)
    if w is not None:
        return await w()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, _settle, fut)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def wait_writable(sock, owner=None):
    w = getattr(sock, "wait_writable", None)
    if w is not None:
        return await w()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _settle, fut)
    try:
        await fut
    finally:
        loop.remove_writer(fd)


_parked = {}  # task -> the future it is parked on (park/wake, see compat.py)


async def park():
    task = asyncio.current_task()
    fut = asyncio.get_running_loop().create_future()
    _parked[task] = fut
    try:
        await fut
    finally:
        _parked.pop(task, None)


def wake(task):
    fut = _parked.pop(task, None)
    if fut is not None and not fut.done():
        fut.set_result(None)


def _settle(fut):
    if not fut.done():
        fut.set_result(None)


def recv_into(sock, buf, n):
    try:
        return sock.recv_into(buf, n)
    except BlockingIOError:
        return None
    except InterruptedError:
        return None


def send_from(sock, buf, off, n):
    try:
        return sock.send(memoryview(buf)[off : off + n])
    except BlockingIOError:
        return None
    except InterruptedError:
        return None


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


def wait_for_ms(aw, ms):
    return asyncio.wait_for(aw, ms / 1000)


def print_exception(e):
    import traceback

    traceback.print_exception(type(e), e, e.__traceback__)


class Inflater:
    """pmd.Inflater under CPython: zlib, fed incrementally (src: None, no input buffer)."""

    def __init__(self, src, out, bits):
        import zlib

        self.zlib = zlib
        self.size = 767 - 147  # (the input's 768, less what follows a message on MicroPython)
        self.obuf = memoryview(out)
        self.bits = bits
        self.start()

    def start(self):
        self.d = None
        self.pend = b""
        self.ended = self.done = False
        self.fed = 0

    def feed(self, buf, off, n, last):
        k = n if self.done else min(n, self.size - len(self.pend))
        if not self.done:
            self.pend += bytes(buf[off : off + k])
            self.fed += k
        if last and k == n:
            self.ended = True
            if not self.done:
                # (the RFC's tail and an empty final block, or for an empty payload: 0x00, RFC 7692 7.2.3.6)
                self.pend += (b"" if self.fed else b"\x00") + b"\x00\x00\xff\xff\x01\x00\x00\xff\xff"
        return k

    def out(self, buf, off, n):
        if self.done or n <= 0:
            return 0
        if self.d is None:
            self.d = self.zlib.decompressobj(-self.bits)
        try:
            data = self.d.decompress(self.pend, n)
        except self.zlib.error:
            raise ValueError(1007, "invalid compressed data")
        self.pend = self.d.unconsumed_tail
        k = len(data)
        buf[off : off + k] = data
        if self.d.eof:
            self.done = True
            self.d = None
        elif not k and self.ended and not self.pend:
            raise ValueError(1007, "compressed message ends inside a block")
        return k
