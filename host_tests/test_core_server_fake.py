"""The real Server (firmware/ringws/server.py) on CPython asyncio through fake sockets.

Each scenario runs under run(): a FakeNet with one listener, a Server with small timeouts,
handlers that record on_open/on_close. After every scenario run() asserts that nothing is
left: no open fake socket, no task but the test's own, every slot free, on_close exactly
once per opened connection, and the /stats close counts the scenario expects.
"""
import asyncio
import errno
import json

import pytest

from conftest import client_frame, close_payload, parse_server_frames
from fakesock import FakeNet, every, storm
from ringws.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from ringws.server import Server
from ringws.slot import _FREE as FREE

pytestmark = pytest.mark.timeout(20)

CFG = {
    "host": "127.0.0.1",
    "port": 0,
    "max_connections": 3,
    "recv_buf": 512,
    "send_ring": 1024,
    "max_message": 512,
    "handshake_timeout_ms": 200,
    "idle_timeout_ms": 0,
    "ping_interval_ms": 0,
    "pong_timeout_ms": 100,
    "close_timeout_ms": 200,
    "shutdown_timeout_ms": 200,
    "stuck_timeout_ms": 0,
    "tick_ms": 10,
    "gc_collect": False,
}

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Recorder:
    """on_open/on_close bookkeeping; subclasses add behaviour."""

    def __init__(self):
        self.opened = []  # Conn objects
        self.closes = []  # (conn.id, code, reason)
        self.messages = []  # (conn.id, text, bytes)

    def on_open(self, conn):
        self.opened.append(conn)

    def on_close(self, conn, code, reason):
        self.closes.append((conn.id, code, reason))

    def close_of(self, conn):
        return [c for c in self.closes if c[0] == conn.id]

    def check_once(self):
        ids = [c.id for c in self.opened]
        closed = [c[0] for c in self.closes]
        assert sorted(closed) == sorted(ids), "on_close must be called exactly once per opened connection"
        assert len(set(closed)) == len(closed)


class Echo(Recorder):
    def on_message(self, conn, data, text):
        self.messages.append((conn.id, text, bytes(data)))
        if bytes(data[:4]) == b"boom":
            raise MemoryError("handler ran out of memory")
        if bytes(data[:5]) == b"raise":
            raise RuntimeError("handler bug")
        if bytes(data[:3]) == b"bye":
            conn.close(4000, "bye")
            return True
        return conn.send(data, text)

    def on_fragment(self, conn, data, text, first, last):
        if first and bytes(data[:4]) == b"boom":
            raise MemoryError("handler ran out of memory (fragment)")
        return conn.send_fragment(data, text, first, last)


def upgrade_request(path="/echo", extra=""):
    return (
        "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (path, KEY, extra)
    ).encode()


class Client:
    """The test's end of a FakeConn: handshake, masked frames out, frames in."""

    def __init__(self, ctx, **knobs):
        self.sock = ctx.net.connect(ctx.lst, **knobs)
        self.buf = bytearray()
        self.frames = []
        self.status = None
        self.head = b""

    def send_raw(self, data):
        self.sock.client_send(data)

    def request(self, path="/echo", extra=""):
        return upgrade_request(path, extra)

    async def _more(self, timeout):
        got = self.sock.take()
        if not got:
            if self.sock.closed:
                return False
            await self.sock.wait_output(timeout)
            got = self.sock.take()
        self.buf += got
        return True

    async def http(self, data, timeout=2.0):
        """Send raw request bytes, read the response head; returns the status."""
        self.send_raw(data)
        while b"\r\n\r\n" not in self.buf:
            if not await self._more(timeout):
                break
        i = self.buf.find(b"\r\n\r\n")
        assert i >= 0, "no HTTP response head: %r" % bytes(self.buf)
        self.head = bytes(self.buf[: i + 4])
        del self.buf[: i + 4]
        self.status = int(self.head.split(b" ")[1])
        return self.status

    async def handshake(self, path="/echo"):
        status = await self.http(self.request(path))
        assert status == 101, self.head
        return self

    async def body(self, timeout=2.0):
        """Rest of an HTTP response (until the server closes the socket)."""
        while await self._more(timeout):
            pass
        return bytes(self.buf)

    def send(self, op, payload=b"", fin=True, **kw):
        self.sock.client_send(client_frame(op, payload, fin, **kw))

    async def frame(self, timeout=2.0):
        """The next frame from the server; None if the server closed the socket first."""
        while not self.frames:
            frames, rest = parse_server_frames(self.buf)
            self.frames.extend(frames)
            self.buf = bytearray(rest)
            if self.frames:
                break
            if not await self._more(timeout):
                return None
        return self.frames.pop(0)

    async def message(self, timeout=2.0):
        """The next data message, fragments joined: (text, payload). Pongs are collected."""
        parts = []
        text = None
        while True:
            f = await self.frame(timeout)
            assert f is not None, "socket closed inside a message"
            fin, op, data = f
            if op in (OP_PING, OP_PONG, OP_CLOSE):
                raise AssertionError("control frame %r while waiting for data" % (f,))
            if text is None:
                assert op in (OP_TEXT, OP_BINARY), f
                text = op == OP_TEXT
            else:
                assert op == OP_CONT, f
            parts.append(data)
            if fin:
                return text, b"".join(parts)

    async def expect_close(self, code, timeout=2.0):
        f = await self.frame(timeout)
        assert f is not None and f[1] == OP_CLOSE, f
        assert int.from_bytes(f[2][:2], "big") == code, f
        return f

    async def closed(self, timeout=2.0):
        await until(lambda: self.sock.closed, timeout)


async def until(pred, timeout=2.0, what=""):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("timed out waiting for %s" % (what or pred))
        await asyncio.sleep(0.005)


class Ctx:
    def __init__(self, net, lst, srv, handlers):
        self.net = net
        self.lst = lst
        self.srv = srv
        self.handlers = handlers

    def client(self, **knobs):
        return Client(self, **knobs)


def run(scenario, cfg=None, handlers=None, expect=None, settle=True):
    """Run scenario(ctx) against a fresh server and check that nothing is left over.

    settle: the scenario ends its own connections; everything must be back to zero
    before the final shutdown (so shutdown cannot hide a leak).
    expect: the non-zero close counts of /stats, by cause.
    """

    async def main():
        net = FakeNet()
        lst = net.listener()
        srv = Server(dict(CFG, **(cfg or {})))
        hs = handlers if handlers is not None else {"/echo": Echo()}
        for path, h in hs.items():
            srv.route(path, h)
        own = asyncio.current_task()
        serve = asyncio.create_task(srv.serve(sock=lst))
        await asyncio.sleep(0)
        ctx = Ctx(net, lst, srv, hs)
        try:
            await scenario(ctx)
            if settle:
                await until(lambda: len(srv.free) == len(srv.slots), 2, "every slot free")
                await until(lambda: not net.open_sockets(include_listeners=False), 2, "sockets closed")
                await asyncio.sleep(0.02)
                # A free slot keeps its reader task, parked, for its next connection:
                # at most one per slot, and nothing else may be left.
                parked = {s.reader for s in srv.slots if s.reader is not None}
                assert all(s.phase == FREE and s.sock is None for s in srv.slots if s.reader)
                left = asyncio.all_tasks() - {own, serve} - set(srv._tasks) - parked
                assert not left, "tasks left after the scenario: %r" % left
        finally:
            await srv.shutdown()
            await asyncio.wait_for(serve, 2)
        await asyncio.sleep(0.01)
        assert net.open_sockets() == []
        assert asyncio.all_tasks() == {own}
        assert len(srv.free) == len(srv.slots)
        for s in srv.slots:
            assert s.sock is None and s.conn is None and s.reader is None and s.writer is None
        for h in hs.values():
            h.check_once()
        for c in net.sockets:
            assert c.close_calls <= 1 if hasattr(c, "close_calls") else True, "socket closed twice"
        stats = json.loads(json.dumps(srv.stats()))
        closed = {k: v for k, v in stats["closed"].items() if v}
        if expect is not None:
            assert closed == expect
        return ctx

    return asyncio.run(main())


async def close_handshake(c, code=1000):
    c.send(OP_CLOSE, close_payload(code))
    await c.expect_close(code)
    await c.closed()


# -- echo ----------------------------------------------------------------------------------

MESSAGES = [
    (True, "hello".encode()),
    (False, bytes(range(256))),
    (True, b""),
    (True, "ünïcødé ✓".encode() * 20),
    (False, bytes(i & 0xFF for i in range(511))),
]


def test_echo_text_binary_fragmented_ping_and_close():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        assert c.sock.nodelay and not c.sock.blocking
        for text, data in MESSAGES:
            c.send(OP_TEXT if text else OP_BINARY, data)
            assert await c.message() == (text, data)
        c.send(OP_TEXT, b"frag", fin=False)
        c.send(OP_PING, b"in between")
        c.send(OP_CONT, b"mented")
        assert await c.frame() == (True, OP_PONG, b"in between")
        assert await c.message() == (True, b"fragmented")
        await close_handshake(c, 1000)
        h = ctx.handlers["/echo"]
        assert h.closes == [(h.opened[0].id, 1000, "")]
        st = ctx.srv.stats()
        assert st["messages_in"] == len(MESSAGES) + 1 == st["messages_out"]
        assert st["bytes_out"] == c.sock.bytes_written
        assert st["bytes_in"] == c.sock.bytes_read

    run(scenario, expect={"normal": 1})


def test_large_message_is_streamed_back_through_a_small_slot():
    payload = bytes((i * 31) & 0xFF for i in range(40000))

    async def scenario(ctx):
        c = await ctx.client(recv_chunk=700).handshake()
        c.send(OP_BINARY, payload)
        assert await c.message(5) == (False, payload)
        text = "€".encode() * 5000
        c.send(OP_TEXT, text[:7001], fin=False)  # splits a character between fragments
        c.send(OP_CONT, text[7001:])
        assert await c.message(5) == (True, text)
        await close_handshake(c)

    run(scenario, expect={"normal": 1})


@pytest.mark.parametrize(
    "knobs",
    [
        {"send_chunk": 1, "recv_chunk": 1},
        {"send_eagain": storm(0.5, 1), "recv_eagain": storm(0.5, 2)},
        {"send_chunk": 3, "recv_chunk": 2, "send_eagain": every(2), "recv_eagain": storm(0.3, 3)},
    ],
    ids=["1-byte", "eagain-storm", "both"],
)
def test_echo_through_tiny_writes_and_eagain(knobs):
    msgs = MESSAGES + [(False, bytes(range(256)) * 12), (True, "ж".encode() * 900)]

    async def scenario(ctx):
        c = await ctx.client(**knobs).handshake()
        other = await ctx.client().handshake()
        for text, data in msgs:
            c.send(OP_TEXT if text else OP_BINARY, data)
        other.send(OP_TEXT, b"unaffected")
        assert await other.message() == (True, b"unaffected")
        for text, data in msgs:
            assert await c.message(5) == (text, data)
        await close_handshake(c)
        await close_handshake(other)

    run(scenario, expect={"normal": 2})


# -- resets and EOF --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "payload", "between"])
def test_reset_mid_frame(where):
    async def scenario(ctx):
        frame = client_frame(OP_BINARY, b"x" * 300)
        req_len = len(upgrade_request())
        # The reset comes after this many bytes of the two frames.
        cut = {"header": 1, "payload": 100, "between": len(frame) + 1}[where]
        c = ctx.client(reset_after_in=req_len + cut)
        await c.handshake()
        c.send_raw(frame + frame)
        if where == "between":
            assert await c.message() == (False, b"x" * 300)
        await c.closed()
        h = ctx.handlers["/echo"]
        assert h.closes == [(h.opened[0].id, 1006, "")]

    run(scenario, expect={"peer_reset": 1})


def test_reset_while_idle_and_eof_mid_frame():
    async def scenario(ctx):
        a = await ctx.client().handshake()
        b = await ctx.client().handshake()
        a.sock.reset()
        await a.closed()
        b.send_raw(client_frame(OP_TEXT, b"half a frame")[:7])
        b.sock.client_eof()
        await b.closed()
        h = ctx.handlers["/echo"]
        assert sorted(x[1] for x in h.closes) == [1006, 1006]

    run(scenario, expect={"peer_reset": 2})


def test_reset_while_the_server_is_blocked_writing():
    async def scenario(ctx):
        c = await ctx.client(send_budget=200).handshake()
        for _ in range(10):
            c.send(OP_BINARY, b"y" * 400)
        await asyncio.sleep(0.05)
        c.sock.reset()
        await c.closed()

    run(scenario, expect={"peer_reset": 1})


# -- slow consumer: reading pauses, nothing grows --------------------------------------------


def test_slow_consumer_pauses_reading_and_others_go_on():
    msgs = [bytes([i]) * 400 for i in range(30)]  # 12 KB of echo against a 1 KB ring

    async def scenario(ctx):
        slow = ctx.client(send_budget=0)
        slow.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)  # the 101 only
        await slow.handshake()
        fast = await ctx.client().handshake()
        for m in msgs:
            slow.send(OP_BINARY, m)
        await asyncio.sleep(0.05)
        slot = [s for s in ctx.srv.slots if s.sock is slow.sock][0]
        calls = slow.sock.recv_calls
        unread = len(slow.sock.inbound)
        used = slot.ring.used
        assert unread > 0, "the server read everything: no backpressure"
        # Paused with echoes the socket has not taken (how full the ring got first
        # depends on how many messages one read brought).
        assert used > 0 and slot.pending
        for i in range(5):
            fast.send(OP_TEXT, b"still here %d" % i)
            assert await fast.message() == (True, b"still here %d" % i)
        await asyncio.sleep(0.1)
        # While the ring is full the server does not call recv_into at all.
        assert slow.sock.recv_calls == calls
        assert len(slow.sock.inbound) == unread
        assert slot.ring.used == used
        # The consumer reads again: every echo arrives, in order.
        slow.sock.allow(10 ** 6)
        for m in msgs:
            assert await slow.message(5) == (False, m)
        await close_handshake(slow)
        await close_handshake(fast)

    run(scenario, expect={"normal": 2})


def test_drain_callback_lets_a_producer_send_everything():
    class Producer(Recorder):
        def __init__(self):
            super().__init__()
            self.next = 0
            self.refused = 0
            self.drains = 0

        def on_open(self, conn):
            super().on_open(conn)
            self.pump(conn)

        def pump(self, conn):
            while self.next < 200:
                if not conn.send(b"%05d" % self.next + b"." * 95):
                    self.refused += 1
                    return
                self.next += 1

        def on_writable(self, conn):
            self.drains += 1
            self.pump(conn)

    prod = Producer()

    async def scenario(ctx):
        c = ctx.client(send_chunk=150, send_eagain=every(3))
        await c.handshake("/p")
        for i in range(200):
            assert await c.message(5) == (False, b"%05d" % i + b"." * 95)
        assert prod.refused > 0 and prod.drains >= prod.refused
        await close_handshake(c)

    run(scenario, handlers={"/p": prod}, expect={"normal": 1})


# -- MemoryError and handler exceptions -----------------------------------------------------


@pytest.mark.parametrize("trigger", ["message", "fragment"])
def test_memory_error_in_handler_closes_1011_others_unaffected(trigger):
    async def scenario(ctx):
        a = await ctx.client().handshake()
        b = await ctx.client().handshake()
        if trigger == "message":
            a.send(OP_BINARY, b"boom")
        else:
            a.send(OP_BINARY, b"boom" + b"!" * 3000)  # larger than max_message: streamed
        await a.expect_close(1011)
        b.send(OP_TEXT, b"fine")
        assert await b.message() == (True, b"fine")
        a.send(OP_CLOSE, close_payload(1011))
        await a.closed()
        await close_handshake(b)

    run(scenario, expect={"memory": 1, "normal": 1})


@pytest.mark.parametrize("what,at", [("recv", 3), ("send", 2)])
def test_memory_error_in_the_socket_layer(what, at):
    async def scenario(ctx):
        c = ctx.client(memory_error={what: at})
        status = await c.http(c.request())
        assert status == 101
        c.send(OP_TEXT, b"one")
        c.send(OP_TEXT, b"two")
        await c.closed()
        h = ctx.handlers["/echo"]
        assert len(h.closes) == 1

    run(scenario, expect={"memory": 1})


def test_accept_survives_errors_and_memory_errors():
    # accept() failing, with an OSError (EMFILE) or a MemoryError (the socket object did
    # not fit), is counted and the loop goes on: the next client is served.
    async def scenario(ctx):
        ctx.lst.accept_errors += [OSError(errno.EMFILE, "too many files"), MemoryError()]
        c = await ctx.client().handshake()
        c.send(OP_TEXT, b"still here")
        assert await c.message() == (True, b"still here")
        await close_handshake(c)
        assert ctx.srv.accept_errors == 2
        assert not ctx.lst.accept_errors

    run(scenario, expect={"normal": 1, "memory": 1})


def test_memory_error_in_the_writer_task_ends_the_connection():
    # The socket pushes back first, so a writer task does the sending; it then hits a
    # MemoryError. The connection must still be torn down (not left with a dead writer).
    async def scenario(ctx):
        c = ctx.client(send_eagain=lambda i: i == 2, memory_error={"send": 3})
        await c.handshake()
        c.send(OP_BINARY, b"z" * 300)
        await c.closed(1.0)

    run(scenario, expect={"memory": 1})


@pytest.mark.parametrize("where", ["on_open", "on_message", "on_fragment"])
def test_handler_exceptions_close_1011(where):
    class Faulty(Echo):
        def on_open(self, conn):
            super().on_open(conn)
            if where == "on_open":
                raise RuntimeError("on_open bug")

        def on_message(self, conn, data, text):
            if where == "on_message":
                raise ValueError("on_message bug")
            return super().on_message(conn, data, text)

        def on_fragment(self, conn, data, text, first, last):
            if where == "on_fragment":
                raise KeyError("on_fragment bug")
            return super().on_fragment(conn, data, text, first, last)

    faulty = Faulty()
    echo = Echo()

    async def scenario(ctx):
        good = await ctx.client().handshake("/good")
        c = await ctx.client().handshake("/bad")
        c.send(OP_BINARY, b"q" * (10 if where != "on_fragment" else 3000))
        await c.expect_close(1011)
        good.send(OP_TEXT, b"ok")
        assert await good.message() == (True, b"ok")
        c.send(OP_CLOSE, close_payload(1000))
        await c.closed()
        await close_handshake(good)
        assert len(faulty.closes) == 1

    run(scenario, handlers={"/bad": faulty, "/good": echo}, expect={"app_error": 1, "normal": 1})


def test_exception_in_on_close_does_not_break_teardown():
    class BadClose(Echo):
        def on_close(self, conn, code, reason):
            super().on_close(conn, code, reason)
            raise RuntimeError("on_close bug")

    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.sock.reset()
        await c.closed()
        d = await ctx.client().handshake()
        await close_handshake(d)

    run(scenario, handlers={"/echo": BadClose()}, expect={"peer_reset": 1, "normal": 1})


# -- protocol errors through the server --------------------------------------------------------


@pytest.mark.parametrize(
    "frame,code",
    [
        (client_frame(OP_TEXT, b"x", masked=False), 1002),
        (client_frame(OP_TEXT, b"\xff"), 1007),
        (client_frame(5, b""), 1002),
        (client_frame(OP_CLOSE, close_payload(1005)), 1002),
    ],
    ids=["unmasked", "bad-utf8", "opcode5", "close-1005"],
)
def test_protocol_errors_close_and_end(frame, code):
    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.send_raw(frame)
        await c.expect_close(code)
        c.send(OP_CLOSE, close_payload(code))
        c.sock.client_eof()
        await c.closed()
        h = ctx.handlers["/echo"]
        assert h.closes[0][1] == code

    run(scenario, expect={"protocol": 1})


# -- timeouts -------------------------------------------------------------------------------------


def test_a_slot_keeps_its_reader_task_from_connection_to_connection():
    # One slot: every connection below borrows it. Its reader task serves one after the
    # other and parks in between; only a teardown from another task (the handshake
    # timeout, from housekeeping) cancels it, and the next connection gets a new one.
    async def scenario(ctx):
        slot = ctx.srv.slots[0]
        readers = []
        for i in range(3):
            c = await ctx.client().handshake()
            readers.append(slot.reader)
            c.send(OP_TEXT, b"n%d" % i)
            assert await c.message() == (True, b"n%d" % i)
            await close_handshake(c)
            await until(lambda: slot.phase == FREE, what="slot free")
            assert slot.reader is readers[0] and not slot.reader.done()
        assert readers == [readers[0]] * 3
        slow = ctx.client()
        slow.send_raw(b"GET /echo HTTP/1.1\r\n")  # never finished: 408 from housekeeping
        await slow.closed(2)
        await until(lambda: slot.phase == FREE, what="slot free")
        assert slot.reader is None
        await asyncio.sleep(0)
        assert readers[0].cancelled()
        c = await ctx.client().handshake()
        assert slot.reader is not None and slot.reader is not readers[0]
        c.send(OP_BINARY, b"after")
        assert await c.message() == (False, b"after")
        await close_handshake(c)

    run(scenario, cfg={"max_connections": 1}, expect={"normal": 4, "handshake_timeout": 1})


def test_handshake_timeout_gets_408():
    async def scenario(ctx):
        c = ctx.client()
        t0 = asyncio.get_running_loop().time()
        c.send_raw(b"GET /echo HTTP/1.1\r\nHost: slow\r\n")  # never finished
        await c.closed(2)
        elapsed = asyncio.get_running_loop().time() - t0
        assert 0.18 < elapsed < 1.5
        assert bytes(c.sock.take()).startswith(b"HTTP/1.1 408 ")
        assert ctx.handlers["/echo"].opened == []

    run(scenario, expect={"handshake_timeout": 1})


def test_idle_timeout_closes_1001():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        busy = await ctx.client().handshake()
        for _ in range(6):  # keeps talking (every 40 ms): must not time out
            busy.send(OP_TEXT, b"hi")
            assert await busy.message() == (True, b"hi")
            await asyncio.sleep(0.04)
        f = await c.expect_close(1001)
        assert f[2][2:] == b"idle timeout"
        c.send(OP_CLOSE, close_payload(1001))
        await c.closed()
        await close_handshake(busy)

    # 400 ms: a process not scheduled for 100 ms (seen every few minutes on a quiet 2-core
    # machine) must not look like a busy client that went quiet.
    run(scenario, cfg={"idle_timeout_ms": 400}, expect={"idle_timeout": 1, "normal": 1})


def test_keepalive_ping_unanswered_closes_1011():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        f = await c.frame()
        assert f == (True, OP_PING, b"ringws")
        await c.expect_close(1011)  # no pong within pong_timeout_ms
        await c.closed()  # nor an answer to the close: dropped after close_timeout_ms

    run(scenario, cfg={"ping_interval_ms": 50, "pong_timeout_ms": 100}, expect={"ping_timeout": 1})


def test_keepalive_answered_pings_keep_the_connection():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.6
        pings = 0
        while loop.time() < end:
            f = await c.frame(1)
            assert f is not None and f[1] == OP_PING, f  # a close here is the bug
            pings += 1
            c.send(OP_PONG, f[2])
        assert pings >= 3
        await close_handshake(c)

    run(scenario, cfg={"ping_interval_ms": 50, "pong_timeout_ms": 100}, expect={"normal": 1})


def test_close_timeout_when_peer_never_answers():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.send(OP_TEXT, b"bye")
        t0 = asyncio.get_running_loop().time()
        await c.expect_close(4000)
        await c.closed(2)
        assert asyncio.get_running_loop().time() - t0 > 0.18
        h = ctx.handlers["/echo"]
        assert h.closes[0][1] == 4000

    run(scenario, expect={"close_timeout": 1})


def test_peer_close_is_echoed_and_server_closes_tcp_first():
    async def scenario(ctx):
        c = await ctx.client().handshake()
        c.send(OP_CLOSE, close_payload(3001, "done"))
        await c.expect_close(3001)
        await c.closed(0.5)  # without waiting for the client's EOF
        h = ctx.handlers["/echo"]
        assert h.closes == [(h.opened[0].id, 3001, "done")]

    run(scenario, expect={"normal": 1})


# -- shutdown ------------------------------------------------------------------------------------


def test_graceful_shutdown_1001_then_forced():
    async def scenario(ctx):
        polite = await ctx.client().handshake()
        deaf = await ctx.client().handshake()
        half = ctx.client()
        half.send_raw(b"GET /echo HTTP/1.1\r\n")  # still in the HTTP phase
        await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        done = asyncio.create_task(ctx.srv.shutdown())
        await polite.expect_close(1001)
        polite.send(OP_CLOSE, close_payload(1001))
        await deaf.expect_close(1001)
        await done
        elapsed = loop.time() - t0
        assert 0.18 < elapsed < 1.5
        assert polite.sock.closed and deaf.sock.closed and half.sock.closed
        assert ctx.lst.closed
        codes = sorted(c[1] for c in ctx.handlers["/echo"].closes)
        assert codes == [1001, 1001]

    run(scenario, settle=False, expect={"shutdown": 3})


# -- Conn handles and slots ---------------------------------------------------------------------


def test_conn_handle_after_close_is_inert():
    h = Echo()

    async def scenario(ctx):
        a = await ctx.client().handshake()
        old = h.opened[0]
        assert old.open and old.writable() > 0
        await close_handshake(a)
        assert not old.open
        assert old.send(b"late") is False
        assert old.send_fragment(b"late", False, True, True) is False
        assert old.writable() == 0
        old.close()  # no effect, no error
        old.want_writable()
        b = await ctx.client().handshake()  # borrows the same slot (max 3, all free)
        assert old.send(b"to the wrong connection?") is False
        b.send(OP_TEXT, b"mine")
        assert await b.message() == (True, b"mine")
        await close_handshake(b)

    run(scenario, handlers={"/echo": h}, expect={"normal": 2})


def test_a_page_streams_through_the_ring_to_a_slow_reader_and_its_file_is_closed(
        tmp_path, monkeypatch):
    # A page larger than the ring goes out in chunks to a client that reads a little at a
    # time; a client that resets in the middle ends its connection, and every file the
    # server opened is closed either way (the file is opened inside the coroutine that
    # sends it, so no path leaves it open).
    from ringws import http

    page = bytes(range(256)) * 40  # 10 KiB: ten times the ring
    (tmp_path / "index.html").write_bytes(page)
    opened = []

    def tracking_open(path, mode="r"):
        f = open(path, mode)
        opened.append(f)
        return f

    monkeypatch.setattr(http, "open", tracking_open, raising=False)
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

    async def scenario(ctx):
        ctx.srv.static("/", str(tmp_path))
        slow = ctx.client(send_budget=100)
        slow.send_raw(get)
        got = b""
        while not slow.sock.closed:
            await asyncio.sleep(0.002)
            got += slow.sock.take()
            slow.sock.allow(700)
        got += slow.sock.take()
        assert got.partition(b"\r\n\r\n")[2] == page
        assert slow.sock.send_calls > len(page) // 700  # it did go out a little at a time
        quick = ctx.client()
        assert await quick.http(get) == 200
        assert await quick.body() == page
        assert b"Content-Length: %d" % len(page) in quick.head
        etag = [ln for ln in quick.head.split(b"\r\n") if ln.startswith(b"ETag: ")][0][6:]
        again = ctx.client()
        assert await again.http(get[:-2] + b"If-None-Match: " + etag + b"\r\n\r\n") == 304
        assert await again.body() == b""
        cut = ctx.client(send_budget=1500)
        cut.send_raw(get)
        await until(lambda: cut.sock.send_budget == 0, 2, "the page to stall")
        cut.sock.reset()
        await cut.closed()

    run(scenario, expect={"http": 3, "peer_reset": 1})
    assert len(opened) == 3 and all(f.closed for f in opened), opened


def test_http_answers_and_full_server_503():
    async def scenario(ctx):
        plain = ctx.client()
        assert await plain.http(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n") == 400
        await plain.closed()
        nf = ctx.client()
        assert await nf.http(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n") == 404
        await nf.closed()
        st = ctx.client()
        assert await st.http(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n") == 200
        stats = json.loads(await st.body())
        assert stats["slots_total"] == 1 and stats["closed"]["http"] >= 2
        await st.closed()
        held = await ctx.client().handshake()
        full = ctx.client()
        assert await full.http(full.request()) == 503
        assert b"Retry-After: 1" in full.head
        await full.closed()
        await close_handshake(held)

    run(scenario, cfg={"max_connections": 1}, expect={"http": 3, "normal": 1})


# -- issue 22: answers to slow readers, stuck rings, a full board ----------------------------


def test_a_page_read_slowly_past_the_handshake_timeout_arrives_whole(tmp_path):
    # The answer's deadline is progress (stuck_timeout_ms with no byte taken), not the
    # request's handshake_timeout_ms: a slow but steady reader gets the whole page and no
    # 408 inside it.
    page = bytes(range(256)) * 40  # 10 KiB: ten times the ring
    (tmp_path / "index.html").write_bytes(page)

    async def scenario(ctx):
        ctx.srv.static("/", str(tmp_path))
        slow = ctx.client(send_budget=100)
        slow.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = b""
        while not slow.sock.closed:
            await asyncio.sleep(0.06)  # 1,000 bytes per 60 ms: about 0.6 s for the page
            got += slow.sock.take()
            slow.sock.allow(1000)
        got += slow.sock.take()
        assert loop.time() - t0 > 3 * 0.1  # well past handshake_timeout_ms
        assert b"408" not in got
        assert got.partition(b"\r\n\r\n")[2] == page

    run(scenario, cfg={"handshake_timeout_ms": 100, "stuck_timeout_ms": 300},
        expect={"http": 1})


def test_an_http_answer_nobody_reads_ends_after_stuck_timeout(tmp_path):
    (tmp_path / "index.html").write_bytes(b"x" * 10000)

    async def scenario(ctx):
        ctx.srv.static("/", str(tmp_path))
        dead = ctx.client(send_budget=1000)
        dead.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: dead.sock.send_budget == 0, 2, "the page to stall")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await dead.closed(2)
        assert 0.25 < loop.time() - t0 < 1.0
        assert b"408" not in dead.sock.take()

    run(scenario, cfg={"handshake_timeout_ms": 100, "stuck_timeout_ms": 300},
        expect={"too_slow": 1})


class Producer(Recorder):
    """Sends with conn.send() from a timer until the ring refuses, and again on every
    on_writable: an application that never calls broadcast()."""

    def __init__(self):
        super().__init__()
        self.conns = []
        self.codes = []

    def on_open(self, conn):
        super().on_open(conn)
        self.conns.append(conn)

    def tick(self, now):
        for c in self.conns:
            while c.open and c.send(b"p" * 200):
                pass

    def on_close(self, conn, code, reason):
        super().on_close(conn, code, reason)
        self.codes.append((code, reason))
        self.conns.remove(conn)


def test_a_peer_that_stops_reading_is_closed_1008_within_stuck_timeout():
    # The stuck check runs in housekeeping for every connection, whoever filled the ring:
    # here the application's conn.send(), no broadcast().
    stuck_ms, tick_ms = 300, 10
    h = Producer()

    async def scenario(ctx):
        ctx.srv.add_timer(20, h.tick)
        reader = await ctx.client().handshake()
        await until(lambda: h.conns, 2, "on_open")
        reader.sock.send_budget = 0  # the peer stops reading
        loop = asyncio.get_running_loop()
        slot = h.conns[0]._slot
        await until(lambda: slot.ring.used, 2, "output waiting")
        t0 = loop.time()
        await until(lambda: slot.cause == "too_slow", 2, "the stuck check")
        took = loop.time() - t0
        assert stuck_ms / 1000 <= took + 0.02 and took < (stuck_ms + 2 * tick_ms) / 1000 + 0.1, took
        assert h.codes == []  # closing: the close frame waits behind the data
        reader.sock.allow(1 << 20)  # the peer reads again: the data, then 1008
        while True:
            f = await reader.frame()
            assert f is not None, "socket closed before the close frame"
            if f[1] == OP_CLOSE:
                break
        assert f[2][:2] == (1008).to_bytes(2, "big") and f[2][2:] == b"too slow"
        reader.send(OP_CLOSE, close_payload(1008))
        await reader.closed()
        assert [code for code, _ in h.codes] == [1008]  # (the reason is the peer's echo)

    run(scenario, cfg={"stuck_timeout_ms": stuck_ms, "tick_ms": tick_ms},
        handlers={"/echo": h}, expect={"too_slow": 1})


def test_a_reader_that_keeps_up_is_never_stuck():
    h = Producer()

    async def scenario(ctx):
        ctx.srv.add_timer(20, h.tick)
        reader = await ctx.client().handshake()
        reader.sock.send_budget = 100
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.8  # over twice stuck_timeout_ms, the ring full all along
        while loop.time() < end:
            await asyncio.sleep(0.02)
            reader.buf += reader.sock.take()
            reader.sock.allow(500)
        assert ctx.srv.closed["too_slow"] == 0 and h.conns
        h.conns[0].close()
        reader.sock.allow(1 << 20)
        while (await reader.frame())[1] != OP_CLOSE:
            pass
        reader.send(OP_CLOSE, close_payload(1000))
        await reader.closed()

    run(scenario, cfg={"stuck_timeout_ms": 300}, handlers={"/echo": h}, expect={"normal": 1})


def test_a_full_board_still_answers_http():
    # WebSockets may hold every slot but one: /stats and the page are still served.
    async def scenario(ctx):
        held = [await ctx.client().handshake() for _ in range(2)]
        extra = ctx.client()
        assert await extra.http(extra.request()) == 503
        assert b"Retry-After: 1" in extra.head
        assert b"all connection slots are busy" in await extra.body()
        await extra.closed()
        st = ctx.client()
        assert await st.http(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n") == 200
        stats = json.loads(await st.body())
        assert stats["connections"] == 2 and stats["slots_total"] == 3
        assert stats["rejected_full"] == 1
        await st.closed()
        for c in held:
            await close_handshake(c)

    run(scenario, expect={"http": 2, "normal": 2})


class Pinger(Echo):
    """Echo that records on_pong(conn, rtt_ms)."""

    def __init__(self):
        Echo.__init__(self)
        self.rtts = []

    def on_pong(self, conn, rtt_ms):
        self.rtts.append(rtt_ms)


def test_conn_ping_and_on_pong_for_its_own_pong_only():
    h = Pinger()

    async def scenario(ctx):
        c = await ctx.client().handshake()
        conn = h.opened[0]
        with pytest.raises(ValueError):
            conn.ping(b"x" * 120)
        assert conn.ping(b"app") is True
        fin, op, data = await c.frame()
        assert op == OP_PING and data.endswith(b"app") and len(data) == 9
        c.send(OP_PONG, b"unsolicited")  # not ours: dropped
        c.send(OP_PONG, b"ringws")  # the keepalive's payload: not the app's either
        c.send(OP_TEXT, b"sync")
        assert await c.message() == (True, b"sync")
        assert h.rtts == []
        await asyncio.sleep(0.03)
        c.send(OP_PONG, data)  # the answer: about 30 ms later
        c.send(OP_TEXT, b"sync")
        assert await c.message() == (True, b"sync")
        assert len(h.rtts) == 1 and 25 <= h.rtts[0] < 1000, h.rtts
        await close_handshake(c)
        assert conn.ping() is False  # an inert handle after the close

    run(scenario, handlers={"/echo": h}, expect={"normal": 1})


def test_keepalive_pings_never_reach_on_pong():
    h = Pinger()

    async def scenario(ctx):
        c = await ctx.client().handshake()
        for _ in range(3):
            f = await c.frame(1)
            assert f[1] == OP_PING and f[2] == b"ringws", f
            c.send(OP_PONG, f[2])  # answered: the connection stays
        assert h.rtts == []
        await close_handshake(c)

    run(scenario, cfg={"ping_interval_ms": 50, "pong_timeout_ms": 100}, handlers={"/echo": h},
        expect={"normal": 1})


def test_ping_is_refused_when_the_ring_has_no_room_and_arms_on_writable():
    h = Pinger()
    h.writable_calls = 0

    def on_writable(conn):
        h.writable_calls += 1

    h.on_writable = on_writable

    async def scenario(ctx):
        c = ctx.client(send_budget=0)
        c.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)  # the 101 only
        await c.handshake()
        conn = h.opened[0]
        slot = [s for s in ctx.srv.slots if s.sock is c.sock][0]
        for size in (100, 1):  # the socket takes nothing: the ring fills to the reserve
            while conn.send(b"y" * size):
                pass
        used = slot.ring.used
        assert conn.ping(b"p") is False and slot.ring.used == used  # nothing queued
        c.sock.allow(10 ** 6)  # the peer reads again: the ring drains, on_writable fires
        await until(lambda: h.writable_calls > 0, what="on_writable after a refused ping")
        assert conn.ping(b"p") is True
        while True:  # the frames that filled the ring, then the ping
            f = await c.frame()
            if f[1] == OP_PING:
                break
            assert f[1] == OP_BINARY, f
        assert f[2].endswith(b"p")
        await close_handshake(c)

    run(scenario, handlers={"/echo": h}, expect={"normal": 1})


def test_shutdown_without_room_for_its_code_still_ends_everything(monkeypatch):
    # Server.shutdown loads its code (startstop.py) for the one use; a MemoryError while it
    # loads must still close every socket, end every connection once and stop the tasks.
    import ringws.server

    async def scenario(ctx):
        a = await ctx.client().handshake()
        half = ctx.client()
        half.send_raw(b"GET /echo HTTP/1.1\r\n")
        await asyncio.sleep(0.02)
        real = ringws.server.use_once

        def starved(name):
            if name == "startstop":
                raise MemoryError("no room to load " + name)
            return real(name)

        monkeypatch.setattr(ringws.server, "use_once", starved)
        await ctx.srv.shutdown()
        assert a.sock.closed and half.sock.closed and ctx.lst.closed
        assert [c[1] for c in ctx.handlers["/echo"].closes] == [1006]

    run(scenario, settle=False, expect={"shutdown": 2})


@pytest.mark.parametrize("fails, status", [(1, 200), (3, 200), (4, 503)])
def test_an_answer_short_of_heap_is_tried_again_before_its_503(monkeypatch, fails, status):
    # On a full board the messages other connections have in flight can leave the heap in
    # pieces too small for /stats' code for a moment: it is answered a little later, and
    # the prebuilt 503 comes only when three more tries have failed too.
    from ringws import http

    real = http.respond
    left = [fails]

    def starved(srv, req):
        if left[0]:
            left[0] -= 1
            raise MemoryError("heap in pieces")
        return real(srv, req)

    monkeypatch.setattr(http, "respond", starved)

    async def scenario(ctx):
        c = ctx.client()
        assert await c.http(b"GET /stats HTTP/1.1\r\nHost: board\r\n\r\n") == status, c.head
        body = await c.body()
        if status == 200:
            assert json.loads(body)["slots_total"] == len(ctx.srv.slots)
        else:
            assert body == b"503 Service Unavailable: out of memory, retry\n"
        assert left[0] == 0

    run(scenario, expect={"http": 1} if status == 200 else {"memory": 1})
