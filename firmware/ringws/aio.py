# pyright: reportAttributeAccessIssue=false
# (AsyncConn's fields are class defaults of None filled in per connection, and pyright
# types them None; this module uses no port API beyond asyncio and ringws.)
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

from ringws.compat import const, park, wake
from ringws.compat_aio import AGAIN, Waiter, when_done
from ringws.connection import flush, log_exc

# AsyncConn._st: what the task waits for (low two bits), and flags.
_RECV = const(1)  # the next piece
_ROOM = const(2)  # room in the ring
_END = const(3)  # the end of the connection
_WANTS = const(3)
_LENT = const(4)  # the runtime keeps a piece for the task
_ENDED = const(8)  # on_close was called
_GOT = const(16)  # a piece was handed over: the task's receive() returns it
_ITER = const(32)  # the task waits in `async for`: the end is StopAsyncIteration
_CLOSE_INTERNAL = const(1011)  # (frames.CLOSE_INTERNAL)
_BATCHING = const(0x400)  # (a bit of the slot's flags: slot.BATCHING)


class AsyncConn(Waiter):
    """The task's handle on one connection. `msg = await conn.receive()` (or `async for msg
    in conn`): a memoryview, valid until the next receive() or the end of the handler;
    conn.text, conn.first, conn.last describe it (first and last both True for a whole
    message; a message larger than the slot comes in pieces). None once closed. The
    callback handle's id, path, query, remote, subprotocol, open and writable() read
    through."""

    data = None  # the application's
    close_code = None  # set at the end: the code on_close got
    conn = _task = None
    _st = 0

    def __getattr__(self, name):
        # text/first/last: the runtime's own fields of the lent piece (valid as long as the
        # piece is), so that a connection stores nothing per message.
        c = self.conn
        if name == "text" or name == "first" or name == "last":
            s = c._slot
            return s is not None and (s.ev_text if name == "text" else
                                      s.ev_first if name == "first" else s.ev_last)
        return getattr(c, name)

    def receive(self):
        self._st &= ~_ITER
        return self  # awaited: _poll()

    def __aiter__(self):
        return self

    def __anext__(self):
        self._st |= _ITER
        return self

    def _poll(self):
        # At the start of receive() and each time the task is woken while in it.
        st = self._st
        if st & _GOT:  # on_fragment handed a piece over
            self._st = st & ~_GOT
            return self.conn._slot.ev_data
        self._release()  # the reader offers the lent piece again: consumed (or dropped)
        if self.conn.open:
            self._st = st & ~_WANTS | _RECV
            return AGAIN
        if st & _ITER:
            raise StopAsyncIteration
        return None

    def send(self, data, text=False):
        """Queue one frame; await it. True once it is in the ring, False if the connection
        is closing. Waits for room; never buffers beyond the ring. A payload the ring can
        never hold raises ValueError (as conn.send). A str is sent as text."""
        return self.send_fragment(data, text, True, True)

    async def send_fragment(self, data, text, first, last):
        """One fragment of a message (see conn.send_fragment); awaited as send()."""
        c = self.conn
        while c.open:
            # A whole message through conn.send: its frame fits the C stack (no heap).
            if c.send(data, text) if first and last else c.send_fragment(data, text, first, last):
                return True
            if c._slot.flags & _BATCHING:  # the reader is parked for us in mid-batch: we write
                flush(c._server, c._slot)
            self._st = self._st & ~_WANTS | _ROOM
            await park()  # on_writable (or on_close) wakes us
            self._st &= ~_WANTS
        return False

    async def close(self, code=1000, reason=""):
        """Start the close handshake and wait for the end of the connection."""
        self.conn.close(code, reason)
        while not self._st & _ENDED:
            self._release()  # the reader goes on: it reads the peer's close
            self._st = self._st & ~_WANTS | _END
            await park()

    def __call__(self, task, e):
        # The task's end: an exception closes with 1011 (counted); a return with 1000.
        c = self.conn
        self._task = None
        if not isinstance(e, (StopIteration, asyncio.CancelledError)):
            log_exc("async handler", e)
            if c._slot is not None:
                e = isinstance(e, MemoryError)
                c._server._close(c._slot, _CLOSE_INTERNAL, "out of memory" if e else
                                 "internal error", "memory" if e else "app_error")
        if c.open:
            c.close()
        self._release()  # the reader drops a lent piece and reads on (the peer's close)

    def _release(self):
        # Wake the reader if it is parked for us (a no-op otherwise): it offers the lent
        # piece again, and the route's on_fragment says whether it is consumed.
        s = self.conn._slot
        if s is not None and s.reader is not None:
            wake(s.reader)


class serve_async:
    """The route handler for `async def fn(conn)`: srv.route(path, serve_async(fn)). Runs
    fn as one task per connection and lends it the pieces the runtime offers."""

    def __init__(self, fn, subprotocols=()):
        self.fn = fn
        if subprotocols:
            self.subprotocols = subprotocols

    def on_open(self, conn):
        a = conn.data = AsyncConn()
        a.conn = conn
        a._task = asyncio.create_task(self.fn(a))
        when_done(a._task, a)  # a(task, exc) at its end

    def on_fragment(self, conn, data, text, first=True, last=True):
        # The runtime offers a piece (again, while it is lent). True: consumed (or
        # dropped); False: kept in the receive buffer, reading paused (and sends from now
        # on go out at once: the reader, parked, has no batch to write at its end).
        a = conn.data
        st = a._st
        if a._task is None or not conn.open:
            a._st = st & ~_LENT
            return True  # nobody will read it: dropped (the task ended, or closing)
        if st & _LENT:
            if st & _WANTS == _RECV:
                a._st = st & ~_LENT
                return True  # done with: consumed; the next piece comes next
        elif st & _WANTS == _RECV:
            a._st = st & _ITER | _LENT | _GOT  # (and no longer waiting)
            wake(a._task)
        conn._slot.flags &= ~_BATCHING
        return False  # lent, still in use, or the task is busy: backpressure

    on_message = on_fragment  # (conn, data, text): a whole message

    def on_writable(self, conn):
        a = conn.data
        if a._st & _WANTS == _ROOM:  # (left set until the task runs: see on_close)
            wake(a._task)

    def on_close(self, conn, code, reason):
        a = conn.data
        a.close_code = code
        st = a._st
        a._st = st & _ITER | _ENDED
        t = a._task
        if t is None:
            return
        if st & (_WANTS | _GOT):  # (_GOT: woken with a piece, not run yet)
            wake(t)  # receive() returns None, send() False, close() returns
        elif t is not asyncio.current_task():
            t.cancel()  # waiting on something else: it ends with its connection

    def pause(self, ms):
        # The reader's wait after we refused a piece (see connection.pause): parked until
        # the task asks for the next piece (AsyncConn._release) or teardown cancels it.
        return park()


AsyncRoute = serve_async
