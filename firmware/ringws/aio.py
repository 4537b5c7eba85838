# pyright: reportAttributeAccessIssue=false
# (AsyncConn's fields are class defaults of None filled in per connection, and pyright
# types them None; this module uses no port API beyond asyncio and ringws.)
# Async handlers: `async def handler(conn)` with `await conn.receive()`, `await conn.send()`,
# on the callback contract and its backpressure. Loaded only by apps that use it:
#
#     from ringws.aio import serve_async
#     srv.route("/x", serve_async(handler))
#
# No task per connection: the slot's reader runs the handler's coroutine itself, the way
# asyncio's loop steps a task (coroutine.send), and the handle (AsyncConn, the runtime's
# Conn with two fields more) is the one object every await on it reuses.
# - A piece (a whole message, or a piece of one too large for the slot) is lent, not
#   copied: on_message/on_fragment steps the coroutine waiting in receive(), which gets the
#   runtime's memoryview; when the handler asks for the next one, the piece is consumed.
#   What it sends meanwhile joins the reader's batch: one socket write per read.
# - A send that does not fit keeps the piece (False): the reader drains the ring as for a
#   callback (connection.pause), offers the piece again, and the send is retried.
# - An await on anything else (asyncio.sleep, an Event...) suspends the reader with the
#   handler (serve_async.pause, the reader's hook): it reads nothing meanwhile, so a
#   handler that does not receive still slows its peer, not the heap.
# The one teardown path calls on_close once: the rest of the handler then runs as a task of
# its own, where receive() gives None, send() False and close() returns, and a wait on
# anything else is cancelled. When the handler ends first, the connection is closed (1000;
# an exception: 1011, counted as app_error).
import asyncio

from ringws.compat import const, wake
from ringws.compat_aio import suspend, when_done
from ringws.connection import flush, log_exc
from ringws.server import Conn

# AsyncConn._st: what the handler waits for (the low three bits), and flags.
_START = const(0)  # not started
_RECV = const(1)  # receive(): the next piece
_ROOM = const(2)  # send(): room in the ring for _out
_END = const(3)  # close(): the end of the connection
_AWAY = const(4)  # anything else: the reader waits with it
_FOREIGN = const(5)  # the same, awaited while a piece was offered: the reader is to wait
_DONE = const(6)  # returned or raised
_KIND = const(7)
_LENT = const(8)  # the runtime keeps a piece for the handler
_GOT = const(16)  # the piece is handed over: the handler's receive() returns it
_ITER = const(32)  # waiting in `async for`: the end is StopAsyncIteration
_RUN = const(64)  # being stepped: an await on the handle is the handler's
_ENDED = const(128)  # on_close was called
_TEXT = const(256)  # _out's frame: text, first, last
_FIRST = const(512)
_LAST = const(1024)
_RELAY = const(2048)  # _out goes out as conn.relay sends it
_CODE = const(12)  # on_close's code, from this bit up (close_code)
_EV_FRAGMENT = const(2)  # (protocol.EV_FRAGMENT)
_CLOSE_INTERNAL = const(1011)  # (frames.CLOSE_INTERNAL)
_BATCHING = const(0x400)  # (a bit of the slot's flags: slot.BATCHING)

# What an await on the handle gives back, raised as an iterator's StopIteration: made once.
_TRUE = StopIteration(True)
_FALSE = StopIteration(False)
_NONE = StopIteration()
_SUSPEND = object()  # what a handler waiting on its handle yields to the reader


def _give(stop):
    stop.__traceback__ = None  # (raised again and again: see compat._Parked)
    raise stop


class AsyncConn(Conn):
    """The handler's handle on one connection (the callback handle, plus awaits).
    `msg = await conn.receive()` (or `async for msg in conn`): a memoryview, valid until
    the next receive() or the end of the handler; conn.text, conn.first, conn.last describe
    it (first and last both True for a whole message; a message larger than the slot comes
    in pieces). None once closed."""

    _st = _START
    _co = _out = None

    def __getattr__(self, name):
        # text/first/last: the runtime's own fields of the lent piece (valid as long as the
        # piece is): nothing stored per message. close_code: on_close's code (None before),
        # kept in _st: a field more at the end could find no heap for a larger table.
        s = self._slot
        if name == "text":
            return s is not None and s.ev_text
        if name == "first":
            return s is not None and s.ev_first
        if name == "last":
            return s is not None and s.ev_last
        if name == "close_code":
            return self._st >> _CODE or None
        raise AttributeError(name)

    def throw(self, e, *args):
        # An exception thrown into a task that awaits the handle (the reader, cancelled)
        # goes on. (MicroPython's `await` asks for throw: __getattr__ must not answer.)
        raise e

    def receive(self):
        self._st = self._st & ~(_KIND | _ITER) | _RECV
        return self  # awaited: __next__

    def __anext__(self):
        self._st = self._st & ~_KIND | _RECV | _ITER
        return self

    def send_fragment(self, data, text=False, first=True, last=True):
        """send(data, text=False): queue one frame; await it. True once it is in the ring,
        False if the connection is closing. Waits for room; never buffers beyond the ring.
        A payload the ring can never hold raises ValueError (as conn.send). A str is sent
        as text. send_fragment(data, text, first, last): one fragment of a message (see
        conn.send_fragment), awaited the same way."""
        if isinstance(data, str):
            data = data.encode()
            text = True
        self._out = data
        self._st = (self._st & ~(_KIND | _TEXT | _FIRST | _LAST | _RELAY) | _ROOM |
                    (_TEXT if text else 0) | (_FIRST if first else 0) | (_LAST if last else 0))
        return self  # awaited: __next__ sends (no room: waits for it)

    send = send_fragment

    def relay(self, data):
        """The piece receive() gave last, sent back in the framing it came in (as
        conn.relay: from where it lies, without a copy, when the ring is empty); awaited as
        send(). A whole message goes as send(data, conn.text)."""
        s = self._slot
        if s is not None and s.pending != _EV_FRAGMENT:
            return self.send_fragment(data, s.ev_text)
        self._out = data
        self._st = self._st & ~(_KIND | _TEXT | _FIRST | _LAST) | _ROOM | _RELAY
        return self

    def close(self, code=1000, reason=""):
        """Start the close handshake; awaited, returns when the connection has ended."""
        Conn.close(self, code, reason)
        self._st = self._st & ~_KIND | _END
        return self

    def __iter__(self):
        return self

    __await__ = __aiter__ = __iter__

    def __next__(self):
        # The handler's await of receive(), send() or close() (their result, raised as
        # StopIteration, or _SUSPEND: it waits), or the reader's (see _drive).
        st = self._st
        if not st & (_RUN | _ENDED):
            return _drive(self, st)
        k = st & _KIND
        if k == _ROOM:
            d = self._out
            if st & _RELAY:
                ok = Conn.relay(self, d)
            elif st & _FIRST and st & _LAST:  # (its frame fits the C stack: no heap)
                ok = Conn.send(self, d, st & _TEXT)
            else:
                ok = Conn.send_fragment(self, d, st & _TEXT, st & _FIRST, st & _LAST)
            if ok or not self.open:
                self._out = None
                self._st = st & ~(_KIND | _RELAY)
                _give(_TRUE if ok else _FALSE)
            return _SUSPEND
        if k == _RECV:
            if st & _GOT:
                self._st = st & ~_GOT
                raise StopIteration(self._slot.ev_data)
            if not st & _ENDED and self.open:
                return _SUSPEND
            if st & _ITER:
                raise StopAsyncIteration
            _give(_NONE)
        if k != _END:
            # The reader, woken after on_close handed the handler to a task of its own:
            # it ends as if cancelled. (Or `await conn` itself, which waits for nothing.)
            raise asyncio.CancelledError if st & _ENDED else TypeError("await conn.receive()")
        if st & _ENDED:
            _give(_NONE)
        return _SUSPEND  # close(): until the end

    def _step(self):
        # Run the handler until it waits: what it yields (_SUSPEND: it waits on us).
        self._st |= _RUN
        try:
            return self._co.send(None)
        except (Exception, asyncio.CancelledError) as e:  # (StopIteration: it returned)
            self(None, e)
            return _SUSPEND
        finally:
            self._st &= ~_RUN

    def __call__(self, task, e):
        # The handler's end: an exception closes with 1011 (counted); a return with 1000.
        self._st = self._st & ~_KIND | _DONE
        self._co = self._out = None
        if not isinstance(e, (StopIteration, asyncio.CancelledError)):
            log_exc("async handler", e)
            if self._slot is not None:
                e = isinstance(e, MemoryError)
                self._slot.srv._close(self._slot, _CLOSE_INTERNAL, "out of memory" if e else
                                    "internal error", "memory" if e else "app_error")
        if self.open:
            Conn.close(self)


def _drive(a, st):
    # The reader awaits the handle (serve_async.pause): it runs the handler until it waits
    # on the handle again, and waits with it meanwhile.
    k = st & _KIND
    s = a._slot
    if k == _FOREIGN:  # awaited during on_message: the reader now waits for it
        a._st = st & ~_KIND | _AWAY
        r = a._out
        a._out = None
        s.flags &= ~_BATCHING
        flush(s.srv, s)  # (the batch so far)
        return r
    if k != _START and k != _AWAY and k != _ROOM:
        return _give(_NONE)  # waits for a piece (or the end): the reader reads on
    if k == _START:
        a._co = s.handler.fn(a)
    again = True
    while True:
        s.flags |= _BATCHING  # (its sends join one write)
        r = a._step()
        if r is _SUSPEND and a._st & _KIND != _ROOM:
            return _give(_NONE)
        s.flags &= ~_BATCHING
        if flush(s.srv, s) or r is not _SUSPEND or s.ring.used or not again:
            break
        again = False  # the socket took the whole ring: the send may fit now
    if r is _SUSPEND:  # send(): on_writable wakes the reader
        return suspend()
    a._st = a._st & ~_KIND | _AWAY
    return r  # the handler's wait is the reader's


def _offer(a):
    # The runtime offers a piece (again, while it is lent). True: consumed (or dropped);
    # False: kept in the receive buffer, reading paused.
    while True:
        st = a._st
        k = st & _KIND
        if k == _RECV:
            if st & _LENT:
                a._st = st & ~_LENT
                return True  # the handler asks for the next: done with this one
            if not a.open:
                return True  # closing: dropped
            a._st = st | _LENT | _GOT
        elif k != _ROOM:
            if k == _END or k == _DONE:
                a._st = st & ~_LENT
                return True  # nobody will read it: dropped
            return False  # started, or away: the reader waits with the handler (pause)
        r = a._step()
        if r is not _SUSPEND:  # an await on something else: the reader is to wait for it
            a._out = r
            a._st = a._st & ~_KIND | _FOREIGN
            return False
        if a._st & _KIND == _ROOM:
            return False  # the reader drains the ring (connection.pause), then offers again


class serve_async:
    """The route handler for `async def fn(conn)`: srv.route(path, serve_async(fn)). The
    reader of each connection runs fn's coroutine and lends it the pieces it reads."""

    Conn = AsyncConn  # the handle the runtime makes for each connection
    # What one connection takes while open, handle and coroutine (about 900 B on x64 with
    # a short handler): permessage-deflate's gate keeps it for each free slot (pmdgate.py).
    heap_per_connection = 1024

    def __init__(self, fn, subprotocols=()):
        self.fn = fn
        if subprotocols:
            self.subprotocols = subprotocols

    def on_fragment(self, conn, data, text, first=True, last=True):
        return _offer(conn)

    on_message = on_fragment  # (conn, data, text): a whole message

    def on_writable(self, conn):
        if conn._st & _KIND == _ROOM:  # the reader waits with the handler (_drive)
            wake(conn._slot.reader)  # (a reader that is not parked is left alone)

    def pause(self, conn):
        # The reader's hook (connection.pause): at the start and when a piece was refused.
        # The handle, for the reader to run the handler and wait with it, or None: the
        # runtime's own wait (drain the ring, then offer the piece again).
        k = conn._st & _KIND
        return conn if k == _START or k == _FOREIGN else None

    def on_close(self, conn, code, reason):
        st = conn._st
        conn._st = st & ~(_LENT | _GOT) | _ENDED | code << _CODE
        co = conn._co
        if co is None or st & _RUN:
            return  # ended, or running: it sees the end at its next await
        # The rest runs as a task: its awaits on conn end at once.
        try:
            t = asyncio.create_task(co)
        except MemoryError:
            conn._co = None
            co.close()
            return
        when_done(t, conn)
        k = st & _KIND
        if k == _AWAY or k == _FOREIGN:
            t.cancel()  # waiting on something else: it ends with its connection


AsyncRoute = serve_async
