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
    import select
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
        # Raised again and again, as asyncio.sleep_ms's generator does: a new
        # StopIteration per wait would be an exception and a traceback on the heap.
        stop = StopIteration()

        def __iter__(self):
            return self

        def __next__(self):
            if self.armed:  # first step, right after wait_*(): give the loop back
                self.armed = False
                return None
            stop = self.stop  # resumed: the socket is ready
            stop.__traceback__ = None
            raise stop

    _PARKED = _Parked()

    # asyncio's poller entry for a socket: [reader, writer, stream] up to 1.28, [reader,
    # pri, writer, stream] after. asyncio makes one each time a socket with no waiter
    # gets one, and drops it when the last waiter wakes: a list per wait, so per
    # message. A connection keeps the first one it is given (owner.pollent) and puts it
    # back itself on every later wait.
    _POLLIN = select.POLLIN
    _POLLOUT = select.POLLOUT

    def _park(sock, owner, i, mask):
        q = _core._io_queue
        m = q.map
        ent = owner.pollent if owner is not None else None
        # Not for a socket that has an entry (the other half waits), nor while ent is
        # still registered for another socket (closed with its waiter not cancelled).
        if ent is None or id(sock) in m or m.get(id(ent[-1])) is ent:
            if i:
                q.queue_write(sock)
            else:
                q.queue_read(sock)
            if owner is not None and ent is None:
                owner.pollent = m[id(sock)]
            return
        t = _core.cur_task
        ent[0] = ent[1] = ent[-2] = None  # a cancelled waiter stays in it (IOQueue.remove)
        ent[i] = t
        ent[-1] = sock
        m[id(sock)] = ent
        q.poller.register(sock, mask)
        t.data = q  # as asyncio does: Task.cancel() takes the task off the poller

    def drop_entry(owner):
        # At teardown, with the waiters cancelled and before the socket closes: off the
        # poller if still on it, and empty, so that it keeps no task (and through it the
        # connection's frames) nor socket alive while the slot is free.
        ent = owner.pollent
        if ent is not None:
            q = _core._io_queue
            if q.map.get(id(ent[-1])) is ent:
                q._dequeue(ent[-1])
            ent[0] = ent[1] = ent[-2] = ent[-1] = None

    def wait_readable(sock, owner=None):
        """Park the calling task until sock is readable. owner: an object with a
        pollent attribute (None at first) that keeps the poller entry between waits."""
        _park(sock, owner, 0, _POLLIN)
        _PARKED.armed = True
        return _PARKED

    def wait_writable(sock, owner=None):
        _park(sock, owner, -2, _POLLOUT)
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
