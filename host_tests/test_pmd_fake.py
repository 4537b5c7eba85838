"""permessage-deflate (RFC 7692) through the real Server on CPython, via the fake sockets.

Messages are compressed here with zlib the way clients do it (raw deflate, a sync flush
whose 00 00 ff ff is stripped, or a final block) and sent in frames cut anywhere; the
echo must return the inflated payload, uncompressed. Broken streams close 1007, too
large ones 1009, RSV1 where it does not belong 1002.
"""
import asyncio
import os
import zlib

import pytest

from conftest import client_frame
from ringws import pmd, pmdoffer
from ringws.frames import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from test_core_server_fake import Echo, Recorder, close_handshake, run, until, upgrade_request

pytestmark = pytest.mark.timeout(60)

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def squeeze(data, wbits=9, final=False, level=6):
    """One message's payload as a client compresses it."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    if final:
        return c.compress(data) + c.flush(zlib.Z_FINISH)
    z = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert z.endswith(b"\x00\x00\xff\xff")
    return z[:-4]


def frames(z, text, cuts=(), rsv=4):
    """The compressed payload z as frames cut at the offsets in cuts (RSV1 on the first)."""
    out = b""
    edges = [0] + sorted(cuts) + [len(z)]
    for i in range(len(edges) - 1):
        op = (OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONT
        out += client_frame(op, z[edges[i] : edges[i + 1]], fin=i == len(edges) - 2, rsv=rsv if i == 0 else 0)
    return out


ON = {"inflaters": 1}


async def open_pmd(ctx, offer=OFFER, path="/echo", **knobs):
    c = ctx.client(**knobs)
    assert await c.http(upgrade_request(path, offer)) == 101, c.head
    return c


def ext_of(c):
    for line in c.head.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-extensions:"):
            return line.split(":", 1)[1].strip()
    return None


# -- negotiation ------------------------------------------------------------------------

@pytest.mark.parametrize("offer, bits, answer", [
    ("permessage-deflate; client_max_window_bits", 9,
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits=12", 9, "client_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits=8", 9, "client_max_window_bits=8"),
    ('permessage-deflate; client_max_window_bits="10"', 15, "client_max_window_bits=10"),
    ("permessage-deflate", 9, None),  # the client may use 32 KiB: declined
    ("permessage-deflate", 15, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10; client_max_window_bits", 9, "server_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits; server_no_context_takeover; client_no_context_takeover", 9,
     "client_max_window_bits=9"),
    ("permessage-deflate; x-unknown; client_max_window_bits, permessage-deflate; client_max_window_bits=11", 9,
     "client_max_window_bits=9"),  # the first offer declined, the second taken
    ("permessage-deflate; client_max_window_bits=16", 9, None),
    ("permessage-deflate; client_max_window_bits=09", 9, None),
    ("permessage-deflate; client_max_window_bits=", 9, None),
    ("permessage-deflate; server_max_window_bits", 15, None),  # needs a value
    ("permessage-deflate; server_max_window_bits=7; client_max_window_bits", 9, None),
    ("permessage-deflate; client_no_context_takeover=1; client_max_window_bits", 9, None),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits", 9, None),  # repeated
    ("x-webkit-deflate-frame, foo; bar=1", 15, None),
    ("PerMessage-Deflate ;  Client_Max_Window_Bits ", 9, "client_max_window_bits=9"),
    (";;,,", 15, None),
])
def test_negotiation_follows_rfc7692(offer, bits, answer):
    got = pmdoffer.negotiate(offer, bits)
    if answer is None:
        assert got is None
    else:
        assert got is not None and answer in got
        assert "client_no_context_takeover" in got and "server_no_context_takeover" in got


def test_handshake_answers_the_extension_and_the_connection_always_opens():
    async def scenario(ctx):
        c = await open_pmd(ctx)
        assert ext_of(c) == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                             "client_max_window_bits=9")
        await close_handshake(c)
        for offer in ("Sec-WebSocket-Extensions: permessage-deflate\r\n",  # 32 KiB window
                      "Sec-WebSocket-Extensions: permessage-deflate; bogus=1\r\n", ""):
            c = await open_pmd(ctx, offer)
            assert ext_of(c) is None
            # Without the extension, RSV1 is a protocol error (1002), as before.
            c.send_raw(frames(squeeze(b"hello"), True))
            await c.expect_close(1002)
            await c.closed()
        c = await open_pmd(ctx, path="/plain")  # the route turned it off
        assert ext_of(c) is None
        await close_handshake(c)

    class Plain(Echo):
        compression = False

    run(scenario, cfg=ON, handlers={"/echo": Echo(), "/plain": Plain()})


def test_an_offer_without_heap_for_the_free_slots_is_declined_counted_and_pmd_leaves(monkeypatch):
    # pmdgate.offer: pmd's code is loaded or kept only while mem_free() keeps
    # deflate_reserve for each slot still free (here 4 slots: 3 once this one opens) and
    # twice that for /stats.
    import sys

    import ringws
    from ringws import compat

    heap = [(3 + 2) * 100]
    monkeypatch.setattr(compat, "mem_free", lambda: heap[0])
    monkeypatch.setitem(sys.modules, "ringws.pmd", pmd)  # (restored after the test)
    monkeypatch.setattr(ringws, "pmd", pmd, raising=False)

    async def scenario(ctx):
        st = ctx.srv.stats()["deflate"]
        c = await open_pmd(ctx)  # loaded, unused, 500 B >= (3 + 2) x 100: accepted
        assert ext_of(c) is not None and st["declined"] == 0
        heap[0] = 0  # no heap to spare, but a connection uses pmd: the next offer shares its pool
        d = await open_pmd(ctx)
        assert ext_of(d) is not None and st["declined"] == 0 and st["loads"] == 0
        d.send_raw(frames(squeeze(b"y" * 200), False))
        assert await d.message() == (False, b"y" * 200)
        await close_handshake(c)
        await close_handshake(d)
        heap[0] = (3 + 2) * 100 - 1  # unused and short: declined, and the code leaves the heap
        c = await open_pmd(ctx)
        assert ext_of(c) is None and st["declined"] == 1 and "ringws.pmd" not in sys.modules
        await close_handshake(c)
        heap[0] = (3 + 2) * 100  # room again: loaded anew (a new module, the pool handed over)
        c = await open_pmd(ctx)
        assert ext_of(c) is not None and st["loads"] == 1 and sys.modules["ringws.pmd"] is not pmd
        c.send_raw(frames(squeeze(b"x" * 300), False))
        assert await c.message() == (False, b"x" * 300)
        await close_handshake(c)

    run(scenario, cfg=dict(ON, max_connections=4, deflate_reserve=100, deflate_code=0))


def test_the_gate_keeps_the_hungriest_routes_heap_per_connection_for_each_free_slot(monkeypatch):
    # An async route's connection takes more than deflate_reserve (ringws.aio declares it):
    # with such a route installed, the same heap that takes the offer otherwise declines it.
    import sys

    import ringws
    from ringws import compat

    monkeypatch.setattr(compat, "mem_free", lambda: (3 + 2) * 100)
    monkeypatch.setitem(sys.modules, "ringws.pmd", pmd)
    monkeypatch.setattr(ringws, "pmd", pmd, raising=False)

    class Hungry(Echo):
        heap_per_connection = 101

    for hungry, taken in ((False, True), (True, False)):
        async def scenario(ctx):
            c = await open_pmd(ctx)
            assert (ext_of(c) is not None) == taken
            await close_handshake(c)

        handlers = {"/echo": Echo()}
        if hungry:
            handlers["/other"] = Hungry()
        monkeypatch.setitem(sys.modules, "ringws.pmd", pmd)
        run(scenario, cfg=dict(ON, max_connections=4, deflate_reserve=100, deflate_code=0),
            handlers=handlers)


def test_slots_already_reading_a_request_are_kept_a_quarter_of_the_reserve(monkeypatch):
    # Clients that connect at once (a page's reconnect after the router's): each slot
    # already reading its request holds most of what its connection will take.
    import sys

    import ringws
    from ringws import compat

    heap = [0]
    monkeypatch.setattr(compat, "mem_free", lambda: heap[0])
    monkeypatch.setitem(sys.modules, "ringws.pmd", pmd)
    monkeypatch.setattr(ringws, "pmd", pmd, raising=False)

    async def scenario(ctx):
        st = ctx.srv.stats()["deflate"]
        waiting = [ctx.client(), ctx.client()]
        for w in waiting:
            w.send_raw(b"GET /echo HTTP/1.1\r\n")  # (half a request head)
        await until(lambda: sum(s.phase == 1 for s in ctx.srv.slots) == 2)
        # 3 slots free once this one opens, 2 of them reading: (1 + 2) x 100 + 2 x 25.
        for free, taken in ((349, False), (350, True)):
            heap[0] = free
            c = await open_pmd(ctx)
            assert (ext_of(c) is not None) == taken and st["declined"] == 1
            await close_handshake(c)

    run(scenario, cfg=dict(ON, max_connections=4, deflate_reserve=100, deflate_code=0))


def test_a_memory_error_while_pmd_loads_declines_and_the_connection_opens(monkeypatch):
    import sys

    import ringws
    from ringws import compat

    class Boom:  # pmd.py's import runs out of memory
        def find_spec(self, name, path=None, target=None):
            if name == "ringws.pmd":
                raise MemoryError
            return None

    monkeypatch.setattr(compat, "mem_free", lambda: 50000)
    monkeypatch.setattr(sys, "meta_path", [Boom()] + sys.meta_path)
    monkeypatch.delitem(sys.modules, "ringws.pmd")
    monkeypatch.delattr(ringws, "pmd")

    async def scenario(ctx):
        st = ctx.srv.stats()["deflate"]
        c = await open_pmd(ctx)
        assert ext_of(c) is None and st["declined"] == 1 and st["loads"] == 0
        assert st["code"] == 50000  # (no new try until the heap has more than that)
        c.send_raw(frames(b"plain", True, rsv=0))
        assert await c.message() == (True, b"plain")
        await close_handshake(c)

    run(scenario, cfg=ON)
    monkeypatch.undo()
    assert sys.modules["ringws.pmd"] is pmd


def test_no_inflaters_no_extension():
    async def scenario(ctx):
        c = await open_pmd(ctx)
        assert ext_of(c) is None
        await close_handshake(c)

    run(scenario, cfg={"inflaters": 0})


# -- inflate ----------------------------------------------------------------------------

TEXT = ('{"id": %d, "sensor": "t\u00e9mp\u00e9rature \u2713", "value": 21.5, "ok": true}, ' * 40).encode()


@pytest.mark.parametrize("wbits", range(9, 16))
@pytest.mark.parametrize("final", [False, True])
def test_every_window_size_sync_flush_or_final_block(wbits, final):
    # (the noise starts with 0x00: one starting with '{' would be sent as text, and fail UTF-8)
    payloads = [TEXT[:n] for n in (0, 1, 17, 300, 511, 512, 513, 760, 1500)] + [b"\0" + os.urandom(699), bytes(3000)]

    async def scenario(ctx):
        c = await open_pmd(ctx)
        for data in payloads:
            text = not data or data[:1] == b"{"
            z = squeeze(data, wbits, final)
            if final and len(data) % 2:
                z += b"\x00"  # RFC 7692 7.2.3.3: what is left of the empty block after a final one
            c.send_raw(frames(z, text))
            assert await c.message() == (text, data), (wbits, len(data))
        await close_handshake(c)

    run(scenario, cfg=dict(ON, inflate_bits=wbits))


def test_a_message_split_at_every_byte():
    data = TEXT[:400]
    z = squeeze(data)

    async def scenario(ctx):
        c = await open_pmd(ctx)
        for k in range(len(z) + 1):
            c.send_raw(frames(z, True, cuts=(k,)))
            assert await c.message() == (True, data), k
        # Every byte its own frame, a ping in between; and the socket giving a byte per read.
        raw = frames(z, True, cuts=range(1, len(z)))
        c.send_raw(raw[:42] + client_frame(OP_PING, b"p") + raw[42:])  # (7-byte frames)
        assert await c.frame() == (True, OP_PONG, b"p")
        assert await c.message() == (True, data)
        await close_handshake(c)
        c = await open_pmd(ctx, recv_chunk=1)
        c.send_raw(frames(z, True, cuts=(7, 100)))
        assert await c.message() == (True, data)
        await close_handshake(c)

    run(scenario, cfg=ON)


def test_empty_messages_and_empty_frames():
    async def scenario(ctx):
        c = await open_pmd(ctx)
        for z in (squeeze(b""), b"\x00", b"", squeeze(b"", final=True)):
            c.send_raw(frames(z, False))
            assert await c.message() == (False, b"")
        z = squeeze(b"abc")
        c.send_raw(frames(z, True, cuts=(0, 0, len(z), len(z))))  # empty first and last frames
        assert await c.message() == (True, b"abc")
        await close_handshake(c)

    run(scenario, cfg=ON)


def test_bomb_streams_to_a_streaming_handler_and_1009_otherwise():
    bomb = squeeze(bytes(4 << 20))  # 4 MiB of zeros in about 4 KiB

    class Count(Recorder):
        def __init__(self):
            super().__init__()
            self.got = 0
            self.pieces = 0

        def on_fragment(self, conn, data, text, first, last):
            assert len(data) <= 760
            assert not any(data)
            self.got += len(data)
            self.pieces += 1
            if last:
                conn.send(b"%d" % self.got)

    async def scenario(ctx):
        c = await open_pmd(ctx, path="/count")
        c.send_raw(frames(bomb, False, cuts=range(1000, len(bomb), 1000)))
        assert await c.message(timeout=20) == (False, b"%d" % (4 << 20))
        await close_handshake(c)
        c = await open_pmd(ctx, path="/whole")
        c.send_raw(frames(squeeze(bytes(513)), False))
        await c.expect_close(1009)
        await c.closed()
        c = await open_pmd(ctx, path="/whole")
        c.send_raw(frames(squeeze(bytes(512)), False))  # max_message exactly: whole
        await c.expect_close(4000)  # (Whole closes after one message)
        await c.closed()

    class Whole(Recorder):
        def on_message(self, conn, data, text):
            assert bytes(data) == bytes(512)
            conn.close(4000)

    run(scenario, cfg=ON, handlers={"/count": Count(), "/whole": Whole()})


@pytest.mark.parametrize("what", ["truncated", "garbage", "reserved block type", "over the window",
                                  "bad utf-8", "utf-8 cut at the end", "bad stored length"])
def test_broken_streams_close_1007(what):
    data = TEXT[:600]
    if what == "truncated":
        z, text = squeeze(data)[:-3], True
    elif what == "garbage":
        z, text = bytes([0xFF] * 64), False
    elif what == "reserved block type":
        z, text = b"\x07\x00\x00", False
    elif what == "over the window":
        blob = os.urandom(1500)
        z, text = squeeze(blob + blob, wbits=15), False  # refers 1500 bytes back; we have 512
    elif what == "bad utf-8":
        z, text = squeeze(b"ok \xc0\xaf overlong"), True
    elif what == "utf-8 cut at the end":
        z, text = squeeze("abc\u2713".encode()[:-1]), True
    else:
        z, text = b"\x00\x05\x00\x00\x00hello", False  # NLEN not LEN's complement

    async def scenario(ctx):
        c = await open_pmd(ctx)
        c.send_raw(frames(squeeze(b"first"), True))
        assert await c.message() == (True, b"first")
        c.send_raw(frames(z, text))
        f = await c.frame()
        while f is not None and f[1] != 0x8:  # (pieces streamed before the error was found)
            assert f[1] in (OP_BINARY, OP_TEXT, OP_CONT)
            f = await c.frame()
        assert f is not None and int.from_bytes(f[2][:2], "big") == 1007, f
        await c.closed()
        # The inflater went back: the next connection inflates.
        c = await open_pmd(ctx)
        c.send_raw(frames(squeeze(b"next"), True))
        assert await c.message() == (True, b"next")
        await close_handshake(c)

    run(scenario, cfg=ON, expect={"protocol": 1, "normal": 1})


@pytest.mark.parametrize("frame", [
    client_frame(OP_CONT, b"x", rsv=4),  # RSV1 on a continuation
    client_frame(OP_PING, b"x", rsv=4),  # on a control frame
    client_frame(OP_TEXT, b"x", rsv=2),  # RSV2
    client_frame(OP_TEXT, b"x", rsv=1),
])
def test_rsv_where_it_does_not_belong_is_1002(frame):
    async def scenario(ctx):
        c = await open_pmd(ctx)
        if frame[0] & 0x0F == OP_CONT:
            c.send_raw(client_frame(OP_TEXT, squeeze(b"ab")[:1], fin=False, rsv=4))
        c.send_raw(frame)
        await c.expect_close(1002)
        await c.closed()

    run(scenario, cfg=ON, expect={"protocol": 1})


def test_uncompressed_messages_still_pass_beside_compressed_ones():
    async def scenario(ctx):
        c = await open_pmd(ctx)
        c.send(OP_TEXT, b"plain")
        assert await c.message() == (True, b"plain")
        c.send_raw(frames(squeeze(b"packed"), True))
        assert await c.message() == (True, b"packed")
        c.send(OP_BINARY, bytes(300), fin=False)
        c.send(OP_CONT, bytes(300))
        assert await c.message() == (False, bytes(600))
        await close_handshake(c)

    run(scenario, cfg=ON)


def test_all_inflaters_busy_pauses_the_reader_until_one_is_free():
    z = squeeze(TEXT[:500])

    async def scenario(ctx):
        a = await open_pmd(ctx)
        b = await open_pmd(ctx)
        a.send_raw(frames(z, True, cuts=(10,))[: 6 + 10])  # a's message starts, holds the inflater
        await until(lambda: not pmd.POOL, what="a holds the inflater")
        b.send_raw(frames(squeeze(b"waiting"), True))
        await asyncio.sleep(0.05)  # (b's reader polls for an inflater meanwhile)
        assert b.sock.take() == b"", "b's message inflated while a held the only inflater"
        a.send_raw(frames(z, True, cuts=(10,))[6 + 10 :])
        assert await a.message() == (True, TEXT[:500])
        assert await b.message() == (True, b"waiting")
        await close_handshake(a)
        await close_handshake(b)

    run(scenario, cfg=ON)


def test_the_firmware_echo_relays_inflated_messages_uncompressed():
    from app.echo import EchoHandler

    data = os.urandom(20000)
    z = squeeze(data)

    async def scenario(ctx):
        c = await open_pmd(ctx)
        c.send_raw(frames(z, False, cuts=range(256, len(z), 256)))
        assert await c.message(timeout=10) == (False, data)
        c.send_raw(frames(squeeze(b"tiny"), True))
        assert await c.message() == (True, b"tiny")
        await close_handshake(c)

    class Echoes(EchoHandler, Recorder):
        def __init__(self):
            Recorder.__init__(self)

    run(scenario, cfg=ON, handlers={"/echo": Echoes()})


def test_stats_show_the_pool_and_that_the_server_answers_uncompressed():
    async def scenario(ctx):
        st = ctx.srv.stats()["deflate"]
        assert st == {"inflaters": 1, "bits": 9, "can_compress": False,  # (no deflate module here)
                      "declined": 0, "code": 7680, "loads": 0}  # (deflate_code until a load)
        c = await open_pmd(ctx)
        c.send_raw(frames(squeeze(b"x" * 300), False))
        assert await c.message() == (False, b"x" * 300)
        assert c.frames == []
        await close_handshake(c)

    run(scenario, cfg=ON)
