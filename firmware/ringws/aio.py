# Async handlers: `async def handler(conn)` with `await conn.receive()`, `await conn.send()`,
# on the callback contract and its backpressure. Loaded only by apps that use it:
#
#     from ringws.aio import serve_async
#     srv.route("/x", serve_async(handler))
#
# Each connection gets one task and one AsyncConn. A piece (a whole message, or a piece of
# one too large for the slot) is lent to the task, not copied: the adapter's on_message /
# on_fragment hands the runtime's memoryview over and returns False, so the runtime keeps
# the piece in its buffer and stops reading (the reader parks in pause(), through this
# handler's pause()). The task's next receive() gives the piece back (the reader, woken,
# offers it again and this time it is consumed) and takes the next one. A task that does
# not ask for the next message therefore stops reading from its peer: TCP slows the peer,
# nothing queues. Sends wait on on_writable for room in the ring, never beyond it.
#
# The one teardown path calls on_close once: a task waiting in receive(), send() or
# close() is woken (None, False), any other is cancelled. When the task ends first, the
# connection is closed (1000; an exception: 1011, counted as app_error).
import asyncio

from ringws.compat import park, wake
from ringws.connection import flush, log_exc
from ringws.frames import CLOSE_INTERNAL

_RECV = 1  # what the task waits for: the next piece
_ROOM = 2  # room in the ring
_END = 3  # the end of the connection


class _Done:
    # `await conn.send(...)` when the ring took the frame at once: nothing to wait for,
    # and nothing allocated (the StopIteration carrying True is made once).
    stop = StopIteration(True)

    def __iter__(self):
        return self

    __await__ = __iter__

    def __next__(self):
        stop = self.stop
        stop.__traceback__ = None
        raise stop


_DONE = _Done()


class AsyncConn:
    """The task's handle on one connection. `msg = await conn.receive()` (or `async for msg
    in conn`): a memoryview, valid until the next receive() or the end of the handler;
    conn.text, conn.first, conn.last describe it (first and last both True for a whole
    message; a message larger than the slot comes in pieces). None once closed."""

    text = first = last = False
    data = None  # the application's
    close_code = None  # set at the end: the code on_close got

    def __init__(self, conn):
        self.conn = conn
        self.msg = None
        self._task = None
        self._wants = 0  # _RECV, _ROOM, _END while the task is parked on us
        self._lent = False  # the runtime keeps a piece for the task
        self._ended = False  # on_close was called

    # The connection's identity, from the callback handle (no copy per connection).
    id = property(lambda self: self.conn.id)
    path = property(lambda self: self.conn.path)
    query = property(lambda self: self.conn.query)
    remote = property(lambda self: self.conn.remote)
    subprotocol = property(lambda self: self.conn.subprotocol)
    open = property(lambda self: not self._ended and self.conn.open)

    def writable(self):
        return self.conn.writable()

    def receive(self):
        return self._next(False)

    def __aiter__(self):
        return self

    def __anext__(self):
        return self._next(True)

    async def _next(self, iterating):
        self.msg = None  # (the last piece's view is not kept by us)
        while True:
            if not self.open:
                self._release()  # a lent piece is dropped when offered again
                if iterating:
                    raise StopAsyncIteration
                return None
            self._wants = _RECV
            self._release()
            await park()
            if self.msg is not None:  # _offer handed a piece over (else: on_close)
                return self.msg

    def send(self, data, text=False):
        """Queue one frame; await it. True once it is in the ring, False if the connection
        is closing. Waits for room; never buffers beyond the ring. A payload the ring can
        never hold raises ValueError (as conn.send)."""
        if self.conn.send(data, text):
            return _DONE
        return self._room(data, text, True, True, False)

    def send_fragment(self, data, text, first, last):
        """One fragment of a message (see conn.send_fragment); awaited as send()."""
        if self.conn.send_fragment(data, text, first, last):
            return _DONE
        return self._room(data, text, first, last, True)

    async def _room(self, data, text, first, last, frag):
        c = self.conn
        while self.open:
            s = c._slot
            if s.batching:  # the reader is parked for us in mid-batch: no one else writes
                flush(c._server, s)
            self._wants = _ROOM
            await park()  # on_writable (or on_close) wakes us
            if frag:
                if c.send_fragment(data, text, first, last):
                    return True
            elif c.send(data, text):
                return True
        return False

    async def close(self, code=1000, reason=""):
        """Start the close handshake and wait for the end of the connection."""
        self.conn.close(code, reason)
        while not self._ended:
            self._release()  # the reader goes on: it reads the peer's close
            self._wants = _END
            await park()

    def _release(self):
        # Wake the reader if it is parked for us (a no-op otherwise): it offers the lent
        # piece again, and _offer says whether it is consumed.
        s = self.conn._slot
        if s is not None and s.reader is not None:
            wake(s.reader)

    def _wake(self, wants):
        if self._wants == wants:
            self._wants = 0
            wake(self._task)


class AsyncRoute:
    """The route's callback handler (one per path): runs `fn(conn)` as one task per
    connection and lends it the pieces the runtime offers."""

    def __init__(self, fn, subprotocols=()):
        self.fn = fn
        if subprotocols:
            self.subprotocols = subprotocols

    def on_open(self, conn):
        a = conn.data = AsyncConn(conn)
        a._task = asyncio.create_task(_run(self.fn, a))

    def on_message(self, conn, data, text):
        return _offer(conn, data, text, True, True)

    def on_fragment(self, conn, data, text, first, last):
        return _offer(conn, data, text, first, last)

    def on_writable(self, conn):
        conn.data._wake(_ROOM)

    def on_close(self, conn, code, reason):
        a = conn.data
        a._ended = True
        a.close_code = code
        t = a._task
        if t is None:
            return
        if a._wants:
            a._wants = 0
            wake(t)  # receive() returns None, send() False, close() returns
        elif t is not asyncio.current_task():
            t.cancel()  # waiting on something else: it ends with its connection

    def pause(self, ms):
        # The reader's wait after we refused a piece (see connection.pause): parked until
        # the task asks for the next piece (AsyncConn._release) or teardown cancels it.
        return park()


def serve_async(fn, subprotocols=()):
    """A route handler for `async def fn(conn)`: srv.route(path, serve_async(fn))."""
    return AsyncRoute(fn, subprotocols)


def _offer(conn, data, text, first, last):
    # The runtime offers a piece (again, while it is lent). True: consumed (or dropped);
    # False: kept in the receive buffer, reading paused.
    a = conn.data
    if a._task is None or not a.open:
        a._lent = False
        return True  # nobody will read it: dropped (the task ended, or closing)
    if a._lent:
        if a._wants != _RECV:
            return _keep(conn)  # the task still reads it
        a._lent = False
        return True  # done with: consumed; the next piece comes next
    if a._wants != _RECV:
        return _keep(conn)  # the task is busy: backpressure
    a.msg = data
    a.text = text
    a.first = first
    a.last = last
    a._lent = True
    a._wake(_RECV)
    return _keep(conn)


def _keep(conn):
    # Refused: the reader pauses. Sends from now on go out at once (the reader, parked,
    # has no batch to write at its end).
    conn._slot.batching = False
    return False


async def _run(fn, a):
    c = a.conn
    try:
        await fn(a)
    except Exception as e:  # (not CancelledError)
        log_exc("async handler", e)
        if c._slot is not None:
            mem = isinstance(e, MemoryError)
            c._server._close(c._slot, CLOSE_INTERNAL, "out of memory" if mem else "internal error",
                             "memory" if mem else "app_error")
    finally:
        a._task = None
        a.msg = None
        if c.open:
            c.close()
        a._release()  # the reader drops a lent piece and reads on (the peer's close)
