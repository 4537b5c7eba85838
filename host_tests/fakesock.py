"""A fake socket layer for driving the real ringws Server on CPython asyncio.

Only for fault injection: each FakeConn is a non-blocking server-side socket whose peer is
the test. compat.wait_readable/wait_writable await the sockets' own wait_readable() /
wait_writable() methods, so the server's code runs unchanged.

Knobs on FakeConn (all optional):
  recv_chunk     at most this many bytes per recv_into (1 = byte by byte)
  send_chunk     at most this many bytes taken per send (1 = byte by byte)
  send_eagain    schedule: f(call_number) -> True to raise BlockingIOError on that send
  recv_eagain    the same for recv_into (data waiting or not)
  send_budget    bytes the peer will read in all; then send takes nothing (slow
                 consumer) until allow(n) raises it
  reset_after_in reset the connection once the server has read this many bytes
  memory_error   {"recv": k, "send": k}: MemoryError on the k-th call (1-based)

FakeNet keeps every socket it made, so a test can assert that none is left open.
"""
import asyncio
import errno
import random


def every(k):
    """Schedule: EAGAIN on every k-th call."""
    return lambda i: i % k == 0


def storm(p, seed=1):
    """Schedule: EAGAIN on a random fraction p of calls (deterministic)."""
    rng = random.Random(seed)
    return lambda i: rng.random() < p


class FakeNet:
    def __init__(self):
        self.sockets = []
        self._fd = 1000

    def _next_fd(self):
        self._fd += 1
        return self._fd

    def listener(self):
        s = FakeListener(self)
        self.sockets.append(s)
        return s

    def open_sockets(self, include_listeners=True):
        return [s for s in self.sockets if not s.closed and (include_listeners or not isinstance(s, FakeListener))]

    def connect(self, listener, **knobs):
        """A client connects: the server will accept this FakeConn (returned)."""
        c = FakeConn(self, **knobs)
        self.sockets.append(c)
        listener.push(c)
        return c


class FakeListener:
    def __init__(self, net):
        self.net = net
        self.closed = False
        self.blocking = True
        self._fd = net._next_fd()
        self._queue = []
        self._port = 40000 + self._fd
        self._event = asyncio.Event()
        self.accept_errors = []  # OSErrors raised by the next accept() calls

    def push(self, conn):
        self._queue.append(conn)
        self._event.set()

    def accept(self):
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        if self.accept_errors:
            raise self.accept_errors.pop(0)
        if not self._queue:
            raise BlockingIOError(errno.EAGAIN, "no connection waiting")
        c = self._queue.pop(0)
        c.accepted = True
        return c, ("127.0.0.1", c.port)

    async def wait_readable(self):
        while not (self._queue or self.accept_errors or self.closed):
            self._event.clear()
            await self._event.wait()

    def setblocking(self, flag):
        self.blocking = flag

    def setsockopt(self, *args):
        pass

    def fileno(self):
        return self._fd

    def close(self):
        self.closed = True
        self._event.set()
        # Connections never accepted are closed with the listener (the kernel would).
        for c in self._queue:
            c.close()
        self._queue = []


class FakeConn:
    def __init__(self, net, recv_chunk=None, send_chunk=None, send_eagain=None, recv_eagain=None,
                 send_budget=None, reset_after_in=None, memory_error=None):
        self.net = net
        self._fd = net._next_fd()
        self.port = 50000 + self._fd
        self.recv_chunk = recv_chunk
        self.send_chunk = send_chunk
        self.send_eagain = send_eagain
        self.recv_eagain = recv_eagain
        self.send_budget = send_budget
        self.reset_after_in = reset_after_in
        self.memory_error = dict(memory_error or {})
        self.inbound = bytearray()  # client -> server, not read yet
        self.outbound = bytearray()  # server -> client, not taken by the test yet
        self.eof = False  # the client shut down its sending side
        self.is_reset = False
        self.closed = False
        self.close_calls = 0
        self.accepted = False
        self.blocking = True
        self.nodelay = False
        self.recv_calls = 0
        self.send_calls = 0
        self.bytes_read = 0  # by the server
        self.bytes_written = 0  # by the server
        self.last_recv_call = None  # loop time of the last recv_into
        self._rev = asyncio.Event()  # something for the server to read
        self._wev = asyncio.Event()  # room for the server to write
        self._out_ev = asyncio.Event()  # the server wrote something, or closed

    # -- the server's side ----------------------------------------------------------

    def _check_memory(self, what, count):
        if self.memory_error.get(what) == count:
            raise MemoryError("injected in %s #%d" % (what, count))

    def recv_into(self, buf, n=0):
        if self.closed:
            raise OSError(errno.EBADF, "recv on a closed socket")
        self.recv_calls += 1
        self.last_recv_call = asyncio.get_running_loop().time()
        self._check_memory("recv", self.recv_calls)
        if self.is_reset:
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        if self.recv_eagain is not None and self.recv_eagain(self.recv_calls):
            raise BlockingIOError(errno.EAGAIN, "injected EAGAIN")
        if not n:
            n = len(buf)
        k = min(n, len(buf), len(self.inbound))
        if self.recv_chunk:
            k = min(k, self.recv_chunk)
        if self.reset_after_in is not None:
            left = self.reset_after_in - self.bytes_read
            if left <= 0:
                self.is_reset = True
                raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
            k = min(k, left)
        if k == 0:
            if self.eof:
                return 0
            raise BlockingIOError(errno.EAGAIN, "nothing to read")
        buf[:k] = self.inbound[:k]
        del self.inbound[:k]
        self.bytes_read += k
        return k

    def send(self, data):
        if self.closed:
            raise OSError(errno.EBADF, "send on a closed socket")
        self.send_calls += 1
        self._check_memory("send", self.send_calls)
        if self.is_reset:
            raise BrokenPipeError(errno.EPIPE, "broken pipe")
        if self.send_eagain is not None and self.send_eagain(self.send_calls):
            raise BlockingIOError(errno.EAGAIN, "injected EAGAIN")
        k = len(data)
        if self.send_chunk:
            k = min(k, self.send_chunk)
        if self.send_budget is not None:
            k = min(k, self.send_budget)
            if k == 0:
                raise BlockingIOError(errno.EAGAIN, "peer is not reading")
            self.send_budget -= k
        self.outbound += bytes(data[:k])
        self.bytes_written += k
        self._out_ev.set()
        return k

    async def wait_readable(self):
        while not (self.inbound or self.eof or self.is_reset or self.closed):
            self._rev.clear()
            await self._rev.wait()
        await asyncio.sleep(0)  # readiness is reported by the loop, never synchronously

    async def wait_writable(self):
        while self.send_budget == 0 and not (self.is_reset or self.closed):
            self._wev.clear()
            await self._wev.wait()
        await asyncio.sleep(0)

    def setblocking(self, flag):
        self.blocking = flag

    def setsockopt(self, level, opt, value):
        if (level, opt) == (6, 1):
            self.nodelay = bool(value)

    def fileno(self):
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        return self._fd

    def close(self):
        self.close_calls += 1
        self.closed = True
        self._rev.set()
        self._wev.set()
        self._out_ev.set()

    # -- the test's (client's) side -------------------------------------------------

    def client_send(self, data):
        self.inbound += data
        self._rev.set()

    def client_eof(self):
        self.eof = True
        self._rev.set()

    def reset(self):
        """The peer resets the connection (RST)."""
        self.is_reset = True
        self._rev.set()
        self._wev.set()

    def allow(self, n):
        """A slow consumer reads n more bytes."""
        self.send_budget = (self.send_budget or 0) + n
        self._wev.set()

    def take(self):
        """Everything the server wrote since the last take()."""
        out = bytes(self.outbound)
        self.outbound.clear()
        return out

    async def wait_output(self, timeout=2.0):
        """Wait until the server wrote something new or closed the socket."""
        if self.outbound or self.closed:
            return
        self._out_ev.clear()
        await asyncio.wait_for(self._out_ev.wait(), timeout)
