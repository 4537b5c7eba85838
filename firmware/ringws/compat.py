# The only module that knows MicroPython from CPython.
#
# Everything else in ringws imports time, gc, viper, const and socket waiting from here,
# so the same protocol and runtime code runs on the ESP32, on the unix port and under
# CPython (where pytest drives it, often through a fake socket layer).
import sys

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    import asyncio
    import gc
    import time
    from asyncio import core as _core
    from micropython import const  # noqa: F401  (re-exported)

    # @micropython.viper / .native are compiler directives, not attributes: the kernels
    # module uses them directly inside its MicroPython branch.
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add

    def mem_free():
        return gc.mem_free()

    def mem_alloc():
        return gc.mem_alloc()

    # MicroPython's asyncio streams wait exactly like this: the task parks itself on the
    # poller entry of the socket. Only one task may wait to read and one to write.
    async def wait_readable(sock):
        yield _core._io_queue.queue_read(sock)

    async def wait_writable(sock):
        yield _core._io_queue.queue_write(sock)

    def recv_into(sock, buf, n):
        # Returns bytes read (0 = EOF) or None when the socket has nothing now.
        return sock.readinto(buf, n)

    def send_from(sock, buf, off, n):
        # Returns bytes written or None when the socket cannot take any now.
        # write(buf, off, n) writes straight from the ring: no slice, no allocation.
        return sock.write(buf, off, n)

    def new_event():
        return asyncio.Event()

    sleep_ms = asyncio.sleep_ms

    def wait_for_ms(aw, ms):
        return asyncio.wait_for_ms(aw, ms)

    def print_exception(e):
        sys.print_exception(e)

else:
    import asyncio
    import gc
    import time

    def const(x):
        return x

    _PERIOD = 1 << 30

    def ticks_ms():
        return int(time.monotonic() * 1000) & (_PERIOD - 1)

    def ticks_diff(a, b):
        d = (a - b) & (_PERIOD - 1)
        return d - _PERIOD if d >= _PERIOD // 2 else d

    def ticks_add(a, d):
        return (a + d) & (_PERIOD - 1)

    def mem_free():
        # CPython has no fixed heap; report what tracemalloc sees if it runs, else -1.
        return -1

    def mem_alloc():
        import tracemalloc

        if tracemalloc.is_tracing():
            return tracemalloc.get_traced_memory()[0]
        return -1

    async def wait_readable(sock):
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

    async def wait_writable(sock):
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

    def new_event():
        return asyncio.Event()

    async def sleep_ms(ms):
        await asyncio.sleep(ms / 1000)

    def wait_for_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)

    def print_exception(e):
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def collect():
    gc.collect()


def set_nodelay(sock):
    # IPPROTO_TCP = 6 and TCP_NODELAY = 1 on Linux and on lwIP; the unix port's socket
    # module does not export the names. Without it, a frame written as header then
    # payload can wait 40 ms for a delayed ACK.
    try:
        sock.setsockopt(6, 1, 1)
    except (OSError, AttributeError):
        pass


def errno_of(exc):
    e = getattr(exc, "errno", None)
    if e is None and exc.args:
        e = exc.args[0]
    return e
