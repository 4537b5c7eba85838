"""ringws.aio (async handlers) on the real Server under CPython asyncio, through fake sockets.

Each scenario runs under test_core_server_fake.run(): afterwards no socket, no task (the
connections' handler tasks included) and no slot is left, and on_close ran once per
connection.
"""
import asyncio

import pytest

from conftest import close_payload
from test_core_server_fake import close_handshake, run, until
from ringws.aio import AsyncRoute
from ringws.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT

pytestmark = pytest.mark.timeout(20)


class Route(AsyncRoute):
    """serve_async(fn) with the bookkeeping run() checks: on_open/on_close per connection,
    and each handler's end (returned, cancelled, or raised)."""

    def __init__(self, fn):
        async def handler(conn):
            try:
                r = await fn(conn)
            except asyncio.CancelledError:
                self.ends.append((conn.id, "cancelled"))
                raise
            except BaseException:
                self.ends.append((conn.id, "raised"))
                raise
            self.ends.append((conn.id, "returned"))
            return r

        AsyncRoute.__init__(self, handler)
        self.opened = []
        self.closes = []
        self.ends = []  # (conn id, "returned" / "cancelled" / "raised")

    def on_open(self, conn):
        self.opened.append(conn)

    def on_close(self, conn, code, reason):
        self.closes.append((conn.id, code, reason))
        AsyncRoute.on_close(self, conn, code, reason)

    def check_once(self):
        ids = sorted(c.id for c in self.opened)
        assert sorted(c[0] for c in self.closes) == ids, "on_close once per connection"
        assert sorted(e[0] for e in self.ends) == ids, "every handler ended"


async def echo(conn):
    async for msg in conn:
        await conn.send_fragment(msg, conn.text, conn.first, conn.last)


def test_echo_with_async_for_and_peer_close():
    seen = []

    async def handler(conn):
        async for msg in conn:
            seen.append((bytes(msg), conn.text, conn.first, conn.last))
            assert await conn.send(msg, conn.text) is True
        seen.append(("after", await conn.receive(), conn.open))

    route = Route(handler)

    async def scenario(ctx):
        c = await ctx.client().handshake("/a")
        for text, data in [(True, "héllo".encode()), (False, bytes(range(200))), (True, b"")]:
            c.send(OP_TEXT if text else OP_BINARY, data)
            assert await c.message() == (text, data)
        c.send(OP_TEXT, b"frag", fin=False)  # a fragmented message that fits: whole
        c.send(OP_CONT, b"mented")
        assert await c.message() == (True, b"fragmented")
        await close_handshake(c, 1000)
        await until(lambda: route.ends, 2, "the handler's end")

    ctx = run(scenario, handlers={"/a": route}, expect={"normal": 1})
    assert seen[:4] == [("héllo".encode(), True, True, True), (bytes(range(200)), False, True, True),
                        (b"", True, True, True), (b"fragmented", True, True, True)]
    assert seen[4] == ("after", None, False)  # receive() after the close: None
    assert route.ends == [(route.opened[0].id, "returned")]
    assert route.closes == [(route.opened[0].id, 1000, "")]
    st = ctx.srv.stats()
    assert st["messages_in"] == 4 == st["messages_out"]


def test_message_larger_than_the_slot_arrives_in_pieces():
    pieces = []

    async def handler(conn):
        while True:
            msg = await conn.receive()
            if msg is None:
                return
            pieces.append((len(msg), conn.text, conn.first, conn.last))
            await conn.send_fragment(msg, conn.text, conn.first, conn.last)

    route = Route(handler)
    payload = bytes((i * 7) & 0xFF for i in range(20000))
    text = "€".encode() * 3000

    async def scenario(ctx):
        c = await ctx.client(recv_chunk=700).handshake("/a")
        c.send(OP_BINARY, payload)
        assert await c.message(5) == (False, payload)
        c.send(OP_TEXT, text[:4001], fin=False)  # a character split between fragments
        c.send(OP_CONT, text[4001:])
        assert await c.message(5) == (True, text)
        await close_handshake(c)

    run(scenario, handlers={"/a": route}, expect={"normal": 1})
    first_msg = [p for p in pieces if not p[1]]
    assert len(first_msg) > 3 and sum(p[0] for p in first_msg) == len(payload)
    assert first_msg[0][2] and not any(p[2] for p in first_msg[1:])  # first: the first piece only
    assert first_msg[-1][3] and not any(p[3] for p in first_msg[:-1])  # last: the last only
    assert all(p[0] <= 512 for p in pieces)  # each fits the ring (max_piece)
    second = [p for p in pieces if p[1]]
    assert sum(p[0] for p in second) == len(text) and second[0][2] and second[-1][3]


@pytest.mark.parametrize("whole", [False, True])
def test_relay_echoes_in_the_framing_each_piece_came_in(whole):
    # await conn.relay(msg): the piece goes back as conn.relay sends it (the frames of the
    # request, in place when the ring is empty); a whole message as send(). With
    # whole_frames a frame that arrived whole comes as one piece.
    async def handler(conn):
        async for msg in conn:
            if not await conn.relay(msg):
                return

    route = Route(handler)
    route.whole_frames = whole
    payload = bytes((i * 7) & 0xFF for i in range(20000))
    text = "€".encode() * 3000

    async def scenario(ctx):
        c = await ctx.client(recv_chunk=700).handshake("/a")
        for i in range(20):  # small whole messages, 1 KiB frames and one far larger
            c.send(OP_BINARY, b"s%d" % i)
            c.send(OP_TEXT, b"t" * 1000)
        c.send(OP_BINARY, payload)
        for i in range(20):
            assert await c.message(5) == (False, b"s%d" % i)
            assert await c.message(5) == (True, b"t" * 1000)
        assert await c.message(5) == (False, payload)
        c.send(OP_TEXT, text[:4001], fin=False)
        c.send(OP_CONT, text[4001:])
        assert await c.message(5) == (True, text)
        await close_handshake(c)

    run(scenario, handlers={"/a": route}, expect={"normal": 1})


def test_slow_handler_pauses_reading_and_nothing_queues():
    go = asyncio.Event()
    got = []

    async def handler(conn):
        await go.wait()  # not receiving: the runtime must stop reading this socket
        async for msg in conn:
            got.append(bytes(msg))
            await conn.send(msg)

    route = Route(handler)
    msgs = [bytes([i]) * 100 for i in range(60)]  # 6 KB: more than the slot holds

    async def scenario(ctx):
        c = await ctx.client().handshake("/a")
        for m in msgs:
            c.send(OP_BINARY, m)
        await asyncio.sleep(0.1)
        read1, calls1 = c.sock.bytes_read, c.sock.recv_calls
        await asyncio.sleep(0.2)
        assert c.sock.bytes_read == read1 and c.sock.recv_calls == calls1  # paused
        assert len(c.sock.inbound) > 4000  # left with the peer (TCP would push back)
        assert got == []
        go.set()
        for m in msgs:
            assert await c.message() == (False, m)
        await close_handshake(c)

    run(scenario, handlers={"/a": route}, expect={"normal": 1})
    assert got == msgs


def test_send_waits_for_room_in_the_ring_and_too_large_raises():
    sent = []
    errors = []

    async def handler(conn):
        try:
            await conn.send(bytes(2000))
        except ValueError as e:
            errors.append(str(e))
        for i in range(20):  # 20 x 300 B through a 1 KiB ring to a peer that reads slowly
            assert await conn.send(bytes([i]) * 300)
            sent.append(i)
        await conn.receive()

    route = Route(handler)

    async def scenario(ctx):
        c = ctx.client(send_budget=0)
        c.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)  # the 101 only
        await c.handshake("/a")
        await until(lambda: sent, 2, "the first sends")
        await asyncio.sleep(0.1)
        n = len(sent)
        assert 0 < n < 20  # waiting for room: the ring holds at most a few
        ring = ctx.srv.slots[0].ring if ctx.srv.slots[0].conn else None
        assert ring is None or ring.used <= ring.size
        c.sock.allow(1 << 20)
        for i in range(20):
            assert await c.message() == (False, bytes([i]) * 300)
        await close_handshake(c)

    run(scenario, handlers={"/a": route}, expect={"normal": 1})
    assert sent == list(range(20))
    assert errors and "send ring takes frames of up to" in errors[0]


def test_close_from_the_handler_waits_for_the_end():
    order = []

    async def handler(conn):
        msg = await conn.receive()
        order.append(bytes(msg))
        await conn.close(4000, "bye")
        order.append(("closed", conn.close_code, conn.open, await conn.receive()))

    route = Route(handler)

    async def scenario(ctx):
        c = await ctx.client().handshake("/a")
        c.send(OP_TEXT, b"hi")
        f = await c.expect_close(4000)
        assert f[2][2:] == b"bye"
        c.send(OP_TEXT, b"dropped: we are closing")
        c.send(OP_CLOSE, close_payload(4000))
        await c.closed()

    run(scenario, handlers={"/a": route}, expect={"normal": 1})
    assert order == [b"hi", ("closed", 4000, False, None)]


def test_returning_closes_with_1000():
    async def handler(conn):
        await conn.send("done")

    route = Route(handler)

    async def scenario(ctx):
        c = await ctx.client().handshake("/a")
        assert await c.message() == (True, b"done")
        await c.expect_close(1000)
        c.send(OP_CLOSE, close_payload(1000))
        await c.closed()

    run(scenario, handlers={"/a": route}, expect={"normal": 1})
    assert [e[1] for e in route.ends] == ["returned"]


def test_teardown_cancels_a_task_waiting_elsewhere():
    state = []

    async def handler(conn):
        try:
            await asyncio.sleep(100)
        finally:
            state.append("finally")

    route = Route(handler)

    async def scenario(ctx):
        c = await ctx.client().handshake("/a")
        c.send(OP_BINARY, b"unread")  # held for a task that never asks: reading paused
        await asyncio.sleep(0.05)
        c.sock.reset()  # unseen by the paused reader; the keepalive ping's write sees it
        await until(lambda: route.ends, 2, "the task's end")

    run(scenario, cfg={"ping_interval_ms": 100}, handlers={"/a": route}, expect={"peer_reset": 1})
    assert route.ends == [(route.opened[0].id, "cancelled")] and state == ["finally"]
    assert route.closes == [(route.opened[0].id, 1006, "")]


def test_shutdown_ends_every_task():
    route = Route(echo)

    async def scenario(ctx):
        cs = [await ctx.client().handshake("/a") for _ in range(2)]
        for c in cs:
            c.send(OP_TEXT, b"x")
            assert await c.message() == (True, b"x")
        await ctx.srv.shutdown()  # 1001 to both; nobody answers: forced at the timeout
        await until(lambda: len(route.ends) == 2, 2, "both tasks' ends")

    run(scenario, handlers={"/a": route}, settle=False, expect={"shutdown": 2})
    assert len(route.closes) == 2


def test_handler_error_closes_1011_counted_and_others_go_on():
    async def handler(conn):
        async for msg in conn:
            if bytes(msg) == b"raise":
                raise RuntimeError("handler bug")
            await conn.send(msg, conn.text)

    route = Route(handler)

    async def scenario(ctx):
        a = await ctx.client().handshake("/a")
        b = await ctx.client().handshake("/a")
        a.send(OP_TEXT, b"raise")
        await a.expect_close(1011)
        a.send(OP_CLOSE, close_payload(1011))
        await a.closed()
        b.send(OP_TEXT, b"still here")
        assert await b.message() == (True, b"still here")
        await close_handshake(b)

    run(scenario, handlers={"/a": route}, expect={"app_error": 1, "normal": 1})
    assert sorted(e[1] for e in route.ends) == ["raised", "returned"]
    assert sorted(c[1] for c in route.closes) == [1000, 1011]


def test_send_waiting_for_room_returns_false_when_the_connection_ends():
    results = []

    async def handler(conn):
        while True:
            ok = await conn.send(bytes(300))
            if not ok:
                results.append(("send", ok, conn.open, conn.close_code))
                results.append(("receive", await conn.receive()))
                return

    route = Route(handler)

    async def scenario(ctx):
        c = ctx.client(send_budget=0)
        c.sock.allow(len(b"HTTP/1.1 101 Switching Protocols\r\n") + 200)  # the 101 only
        await c.handshake("/a")
        await asyncio.sleep(0.1)  # the ring fills; the task waits for room
        assert results == []
        c.sock.reset()  # the writer's next write (or the keepalive's) sees it
        await until(lambda: route.ends, 2, "the task's end")

    run(scenario, cfg={"ping_interval_ms": 100}, handlers={"/a": route}, expect={"peer_reset": 1})
    assert results == [("send", False, False, 1006), ("receive", None)]
    assert route.ends == [(route.opened[0].id, "returned")]
