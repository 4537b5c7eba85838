# The only module that knows MicroPython from CPython.
#
# Everything else in ringws imports time, gc, viper, const and socket waiting from here,
# so the same protocol and runtime code runs on the ESP32, on the unix port and under
# CPython (where pytest drives it, often through a fake socket layer).
import sys

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    # Names imported one by one: each global takes a place in the module's dict, which
    # grows by a quarter at a time once full (asyncio, gc, select and time are not kept).
    import socket
    from asyncio import core as _core, sleep_ms
    from micropython import const  # noqa: F401  (re-exported)

    # @micropython.viper / .native are compiler directives, not attributes: the kernels
    # module uses them directly inside its MicroPython branch.
    from time import ticks_diff, ticks_ms

    # Bound to the builtins, not wrapped: each function costs heap once imported.
    from gc import collect, mem_alloc, mem_free

    # The task parks itself on the poller entry of the socket, as MicroPython's asyncio
    # streams do (`yield core._io_queue.queue_read(s)`), and awaits _PARKED, which
    # yields once: no coroutine object per wait, the way asyncio.sleep_ms reuses one
    # generator. Only one task may wait to read and one to write.
    class _Parked:
        # Also a parked task's data (see park()): Task.cancel() calls data.remove(task)
        # and then queues the task, so a parked task can be cancelled like any waiting one.
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

        def remove(self, task):
            pass

    _PARKED = _IDLE = _Parked()

    # asyncio's poller entry for a socket: [reader, writer, stream] up to 1.28, [reader,
    # pri, writer, stream] after. When the last waiter of a socket wakes, asyncio drops
    # the entry and unregisters the socket, and the next wait makes a new list and
    # registers it again (a 32 B poller record): two objects per wait, so per message.
    # A connection's socket (one waited on with an owner) instead stays registered, with
    # an empty mask while nobody waits, in the entry the owner keeps (owner.pollent)
    # from its first wait until drop_entry() at its teardown: two objects per connection.
    from select import POLLIN as _POLLIN, POLLOUT as _POLLOUT
    # id(socket) -> True while it sits on the poller with an empty mask, False while a
    # task waits on it. Only kept sockets are here, so it holds at most one key per slot
    # and the listener, and a dict reuses the places of keys that left: like asyncio's
    # own map, it grows to the most connections seen at once and then stays that size:
    # sizing both for max_connections at start-up takes heap that a page load needs.
    _kept = {}

    def _dequeue(s):
        # Takes the place of asyncio's IOQueue._dequeue (on the instance, see _park):
        # asyncio calls it when the last waiter on s woke, or was cancelled (remove()).
        q = _core._io_queue
        k = id(s)
        idle = _kept.get(k)
        if idle is False:
            ent = q.map[k]
            ent[0] = ent[1] = ent[-2] = None  # remove() leaves the cancelled task in it
            q.poller.modify(s, 0)
            _kept[k] = True
            return
        if idle:
            # An event while nobody waits: an error or a hangup, which an empty mask
            # still reports. Off the poller, or the loop would spin on it; the next
            # wait registers the socket again.
            _kept[k] = False
        del q.map[k]
        q.poller.unregister(s)

    def _park(sock, owner, i, mask):
        q = _core._io_queue
        if q._dequeue is not _dequeue:
            # An instance attribute: asyncio's self._dequeue(s) finds it before its own.
            q._dequeue = _dequeue
        k = id(sock)
        ent = q.map.get(k)
        if ent is not None and owner is not None and ent is owner.pollent:
            # Kept on the poller: idle, or the other half waits. (No more locals here:
            # at 12 words the frame would go on the heap at every wait.)
            ent[i] = _core.cur_task
            if _kept[k]:
                _kept[k] = False
            else:
                mask = _POLLIN | _POLLOUT
            q.poller.modify(sock, mask)
            ent[i].data = q  # as asyncio does: Task.cancel() takes the task off the poller
            return
        k = getattr(owner, "raw", None)
        if k is not None and k is not sock:
            # A TLS connection (tls.py) waits on its TCP socket: polled by its descriptor,
            # where the SSL object would be asked in a 1 ms loop on the unix port. (The
            # SSL object has nothing buffered when a read or write says "not now".)
            return _park(k, owner, i, mask)
        k = id(sock)
        # A connection's first wait (or its first after a hangup took the socket off):
        # asyncio makes the entry and registers the socket, and the owner keeps both.
        if i:
            q.queue_write(sock)
        else:
            q.queue_read(sock)
        if owner is not None:
            if owner.pollent is not None:
                drop_entry(owner)  # a socket before this one, not dropped at its end
            owner.pollent = q.map[k]
            _kept[k] = False

    def drop_entry(owner):
        # At teardown, with the waiters cancelled and before the socket closes: the
        # socket off the poller, and the entry let go, so that nothing keeps the
        # connection's task (and through it its frames) nor its socket alive.
        ent = owner.pollent
        if ent is not None:
            owner.pollent = None
            s = ent[-1]
            k = id(s)
            _kept.pop(k, None)
            q = _core._io_queue
            if q.map.get(k) is ent:
                del q.map[k]
                q.poller.unregister(s)

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

    def park():
        """Park the calling task until wake(task), or its cancellation."""
        _core.cur_task.data = _IDLE  # on no queue: the loop leaves it alone
        _PARKED.armed = True
        return _PARKED

    def wake(task):
        """Resume a task parked by park(). A task that is not parked (still busy with
        what came before) is left alone: queuing it twice would break the queue."""
        if task.data is _IDLE:
            _core._task_queue.push(task)  # (push sets task.data back to None)

    # The stream functions of the socket type, called as plain functions: no Python
    # frame of a wrapper per read and per write. Taken from the type's dict, they check
    # no type: the same functions read and write an SSL socket (ringws/tls.py).
    try:
        # recv_into(sock, buf, n): bytes read (0 = EOF) or None when the socket has none now.
        recv_into = socket.socket.__dict__["readinto"]
        # send_from(sock, buf, off, n): bytes written or None when the socket cannot take
        # any now. The stream write(buf, off, n) writes straight from the ring: no slice.
        send_from = socket.socket.__dict__["write"]
    except (AttributeError, KeyError):  # (a port without type.__dict__: no TLS then)
        recv_into = socket.socket.readinto
        send_from = socket.socket.write

    print_exception = sys.print_exception

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


def use_once(name):
    """ringws.<name> for one use: imported now and not kept in sys.modules (nor as an
    attribute of the package), so its code leaves the heap once the caller lets go of
    it. For what only some requests need; a MemoryError while it loads goes to the
    caller (a request the runtime then answers with its prebuilt 503)."""
    full = "ringws." + name
    try:
        return getattr(__import__(full), name)  # (__import__ returns the package)
    finally:
        unload(full)


def unload(name):
    """Let the module called name go: out of sys.modules and off its package's attributes,
    so its code leaves the heap once nothing else holds it (its names stay interned).
    Whether or not it was loaded, or is loaded only in part (a failed import)."""
    sys.modules.pop(name, None)
    i = name.rfind(".")
    if i > 0:
        try:
            delattr(sys.modules[name[:i]], name[i + 1:])
        except (AttributeError, KeyError):  # (MicroPython: KeyError when it is not there)
            pass


def why(name, i, arg=None):
    """ringws.<name>.TEXTS[i] (% arg): an error's text, kept out of the heap until an
    error needs it, then loaded for the one use (use_once). "" when not even that fits."""
    try:
        text = use_once(name).TEXTS[i]
    except MemoryError:
        return ""
    return text if arg is None else text % arg
