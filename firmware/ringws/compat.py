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

    # The task parks itself on the poller entry of the socket, as MicroPython's asyncio
    # streams do (`yield core._io_queue.queue_read(s)`), and awaits _PARKED, which
    # yields once: no coroutine object per wait, the way asyncio.sleep_ms reuses one
    # generator. Only one task may wait to read and one to write.
    class _Parked:
        armed = False

        def __iter__(self):
            return self

        def __next__(self):
            if self.armed:  # first step, right after wait_*(): give the loop back
                self.armed = False
                return None
            raise StopIteration  # resumed: the socket is ready

    _PARKED = _Parked()

    def wait_readable(sock):
        _core._io_queue.queue_read(sock)
        _PARKED.armed = True
        return _PARKED

    def wait_writable(sock):
        _core._io_queue.queue_write(sock)
        _PARKED.armed = True
        return _PARKED

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
    # CPython: kept in its own module so that its code never takes MicroPython heap.
    from ringws.compat_cpython import *  # noqa: F401,F403


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
