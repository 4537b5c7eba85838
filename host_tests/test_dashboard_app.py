"""The /ws channel's logic on CPython.

Telemetry and commands run against a fake server whose connections' rings can be made
full (fault injection). Everything that goes through srv.broadcast (say, led) runs against
the real Server through the fake socket layer, with a tab whose peer stops reading. The
same module runs under MicroPython in test_dashboard_ws.py and test_dashboard_browser.py.
"""
import importlib.util
import json
import os

import pytest

from ringws.frames import OP_TEXT
from test_core_server_fake import Echo, close_handshake, run

# Loaded by path: the module needs nothing else from the firmware (app/__init__ does).
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "firmware", "app", "dashboard.py")
_spec = importlib.util.spec_from_file_location("dashboard_under_test", _SRC)
dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard)


class Conn:
    def __init__(self, cid, room=10):
        self.id = cid
        self.open = True
        self.data = None
        self.room = room  # frames the ring still takes; 0 = full
        self.frames = []
        self.pings = []

    def ping(self, payload=b""):
        self.pings.append(bytes(payload))
        return True

    def send(self, data, text=False):
        assert text, "the dashboard speaks JSON text only"
        if self.room <= 0:
            return False
        self.room -= 1
        self.frames.append(json.loads(bytes(data)))
        return True

    def of(self, t):
        return [f for f in self.frames if f["t"] == t]


class Srv:
    def __init__(self):
        self.routes, self.timers, self.statics = {}, [], []
        self.dropped = 0
        self.conns = []
        self.n = 0
        self.cfg = {"max_message": 256}

    def route(self, path, handler):
        self.routes[path] = handler

    def static(self, prefix, folder):
        self.statics.append((prefix, folder))

    def add_timer(self, ms, cb):
        self.timers.append((ms, cb))

    def count_drop(self, n):
        self.dropped += n

    def stats(self):
        self.n += 1
        return {"mem_free": 50000 - self.n, "connections": len(self.conns),
                "dropped": self.dropped, "uptime_ms": 1000 * self.n}

class Board:
    def __init__(self):
        self.state = False

    def led(self, state=None):
        if state is not None:
            self.state = state
        return self.state

    def status(self):
        return {"reset_cause": "power on"}


@pytest.fixture
def env():
    srv, board = Srv(), Board()
    dash = dashboard.install(srv, {"app": {"telemetry_ms": 250}}, board)
    return srv, board, dash


def open_tab(srv, dash, cid, room=10):
    c = Conn(cid, room)
    srv.conns.append(c)
    dash.on_open(c)
    return c


def cmd(dash, conn, obj):
    raw = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
    raw = raw.encode() if isinstance(raw, str) else raw
    dash.on_message(conn, memoryview(raw), True)


def test_install_registers_channel_and_timer(env):
    srv, _, dash = env
    assert srv.routes["/ws"] is dash
    assert srv.timers == [(250, dash.tick)]


def test_rate_has_a_floor_and_a_default():
    srv = Srv()
    dashboard.install(srv, {"app": {"telemetry_ms": 1}}, Board())
    dashboard.install(srv, {}, Board())
    assert [ms for ms, _ in srv.timers] == [dashboard.MIN_MS, dashboard.DEFAULT_MS]


def test_hello_then_samples_with_board_status_and_led(env):
    srv, board, dash = env
    c = open_tab(srv, dash, 3)
    assert c.frames[0] == {"t": "hello", "id": 3, "led": False, "sim": False, "ms": 250,
                           "max": 256}
    board.state = True
    dash.tick(0)
    s = c.of("stats")[-1]
    assert s["led"] is True
    assert s["s"]["board"] == {"reset_cause": "power on"}
    assert s["s"]["mem_free"] == 50000 - srv.n


def test_tabs_are_pinged_once_a_second_and_samples_carry_their_round_trips(env):
    srv, _, dash = env  # telemetry every 250 ms: a ping every fourth tick
    a, b = open_tab(srv, dash, 3), open_tab(srv, dash, 4)
    dash.tick(0)
    assert len(a.pings) == len(b.pings) == 1
    assert a.of("stats")[-1]["rtt"] == []
    dash.on_pong(a, 12)
    dash.on_pong(b, 7)
    for now in (250, 500, 750):
        dash.tick(now)
    assert len(a.pings) == len(b.pings) == 1
    dash.tick(1000)
    assert len(a.pings) == len(b.pings) == 2
    assert sorted(a.of("stats")[-1]["rtt"]) == [[3, 12], [4, 7]] == sorted(b.of("stats")[-1]["rtt"])
    dash.on_close(b, 1000, "")
    dash.tick(500)
    assert a.of("stats")[-1]["rtt"] == [[3, 12]]


def test_no_tabs_no_work(env):
    srv, _, dash = env
    dash.tick(0)
    assert srv.n == 0


def test_slow_tab_is_skipped_and_counted_until_it_drains(env):
    srv, _, dash = env
    fast = open_tab(srv, dash, 1, room=100)
    slow = open_tab(srv, dash, 2, room=2)  # hello + one sample, then full
    for _ in range(5):
        dash.tick(0)
    assert len(fast.of("stats")) == 5
    assert len(slow.of("stats")) == 1
    # First refusal arms the drain callback; later ticks skip without even trying.
    assert srv.dropped == 4
    assert slow.data is True
    slow.room = 100
    dash.tick(0)
    assert len(slow.of("stats")) == 1, "no send before the drain callback"
    dash.on_writable(slow)
    dash.tick(0)
    assert len(slow.of("stats")) == 2
    assert len(fast.of("stats")) == 7
    assert srv.dropped == 5


def test_closed_tab_gets_nothing(env):
    srv, _, dash = env
    c = open_tab(srv, dash, 1)
    dash.on_close(c, 1000, "")
    dash.on_close(c, 1000, "")  # tolerated
    n = len(c.frames)
    dash.tick(0)
    assert len(c.frames) == n
    assert srv.n == 0


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "a command is a JSON object"),
    (b'{"on": true}', 'missing "cmd"'),
    (b'{"cmd": "reboot"}', "unknown cmd"),
    (b'{"cmd": "led"}', 'led needs "on"'),
    (b'{"cmd": "led", "on": 1}', 'led needs "on"'),
    (b'{"cmd": "say"}', 'say needs "text"'),
    (b'{"cmd": "say", "text": "   "}', 'say needs "text"'),
    (b'{"cmd": "say", "text": 5}', 'say needs "text"'),
    (json.dumps({"cmd": "say", "text": "x" * 201}).encode(), "longer than 200"),
])
def test_bad_commands_get_a_clear_error_and_change_nothing(env, raw, why):
    srv, board, dash = env
    a, b = open_tab(srv, dash, 1), open_tab(srv, dash, 2)
    cmd(dash, a, raw)
    errors = a.of("error")
    assert len(errors) == 1 and why in errors[0]["error"]
    assert board.state is False
    assert len(b.frames) == 1  # only its hello


def test_binary_is_refused(env):
    srv, _, dash = env
    a = open_tab(srv, dash, 1)
    dash.on_message(a, memoryview(b'{"cmd":"led","on":true}'), False)
    assert "binary" in a.of("error")[0]["error"]


def test_reply_to_full_ring_is_counted_not_queued(env):
    srv, _, dash = env
    a = open_tab(srv, dash, 1, room=1)
    cmd(dash, a, b"nope")
    assert a.of("error") == [] and srv.dropped == 1


class NoPinBoard:
    # What firmware/board.py does on the host: led() is None when there is no pin.
    def led(self, state=None):
        return None


@pytest.mark.parametrize("board", [object(), NoPinBoard()])
def test_board_without_led_gets_a_simulated_pin(board):
    async def scenario(ctx):
        dash = dashboard.install(ctx.srv, {"app": {"telemetry_ms": 600000}}, board)
        a = await ctx.client().handshake("/ws")
        hello = await msg(a)
        assert hello["sim"] is True and hello["led"] is False
        a.send(OP_TEXT, b'{"cmd": "led", "on": true}')
        assert await msg(a) == {"t": "led", "on": True}
        dash.tick(0)
        assert (await msg(a))["led"] is True
        assert (await a.frame())[1] == 0x9  # the tick's ping: the round trip
        await close_handshake(a)

    run(scenario, handlers={})


def test_sample_carries_the_page_figures_only(env):
    srv, _, dash = env
    srv.stats = lambda: {"mem_free": 1, "uptime_ms": 2, "closed": {"normal": 3},
                         "board": {"reset_cause": "WDT_RESET", "rssi": -61, "ip": None,
                                   "reason": "x" * 300}}
    c = open_tab(srv, dash, 1)
    dash.tick(0)
    assert c.of("stats")[0]["s"] == {"mem_free": 1, "uptime_ms": 2,
                                     "board": {"reset_cause": "WDT_RESET", "rssi": -61}}


def test_messages_are_built_in_a_fixed_buffer():
    srv = Srv()
    srv.cfg = {"max_message": 100, "recv_buf": 80, "send_ring": 1000}
    dash = dashboard.install(srv, {}, Board())
    assert len(dash.buf) == dashboard.SAMPLE_ROOM + 100  # max(recv_buf, max_message)
    a, b = open_tab(srv, dash, 1), open_tab(srv, dash, 2)
    # 200 characters, each \u0001 escaped to 6 bytes: more than the buffer holds.
    cmd(dash, a, {"cmd": "say", "text": "\x01" * 200})
    assert "too long" in a.of("error")[0]["error"] and b.of("say") == []
    srv.stats = lambda: {"board": {"wifi": "w" * 600}}
    dash.tick(0)  # a sample no ring could take: missed by both, counted
    assert a.of("stats") == [] and srv.dropped == 2


# -- through the real Server: srv.broadcast ---------------------------------------------

async def tab(ctx):
    """A /ws client past its hello."""
    c = await ctx.client().handshake("/ws")
    assert (await msg(c))["t"] == "hello"
    return c


async def msg(c):
    text, payload = await c.message()
    assert text
    return json.loads(payload)


def say(c, text):
    c.send(OP_TEXT, json.dumps({"cmd": "say", "text": text}).encode())


def test_say_reaches_every_tab_and_a_full_ring_is_skipped_and_counted():
    async def scenario(ctx):
        srv = ctx.srv
        dashboard.install(srv, {"app": {"telemetry_ms": 600000}}, Board())
        a, b, full = await tab(ctx), await tab(ctx), await tab(ctx)
        other = await ctx.client().handshake("/echo")
        full.sock.send_budget = 0  # this tab's peer stops reading: its ring fills
        d0 = srv.dropped
        # Says until the full tab's ring refuses one (a 1 KiB ring: a few 200-byte says).
        for n in range(1, 20):
            say(a, "say %d " % n + "x" * 180)
            mine, sent = await msg(a), await msg(a)
            assert mine["t"] == "say" and await msg(b) == mine
            if sent["skipped"]:
                break
            assert sent == {"t": "sent", "to": 3, "skipped": 0}
        assert n > 1 and sent == {"t": "sent", "to": 2, "skipped": 1}
        assert srv.dropped == d0 + 1
        assert srv.stats()["dropped"] == d0 + 1
        # The full tab, reading again, gets the says that fit, in order; the skipped one
        # was not queued: the next say comes right after them.
        full.sock.allow(1 << 20)
        say(a, "after")
        assert [(await msg(full))["text"][:6] for _ in range(n - 1)] == [
            "say %d " % i for i in range(1, n)]
        assert (await msg(full))["text"] == "after"
        assert (await msg(b))["text"] == (await msg(a))["text"] == "after"
        assert await msg(a) == {"t": "sent", "to": 3, "skipped": 0}
        # A connection on another path gets nothing of the channel.
        assert other.sock.take() == b"" and other.buf == bytearray()
        for c in (a, b, full, other):
            await close_handshake(c)

    run(scenario, cfg={"max_connections": 5}, handlers={"/echo": Echo()},
        expect={"normal": 4})


def test_led_command_sets_pin_and_tells_every_tab():
    board = Board()

    async def scenario(ctx):
        dashboard.install(ctx.srv, {"app": {"telemetry_ms": 600000}}, board)
        a, b = await tab(ctx), await tab(ctx)
        other = await ctx.client().handshake("/echo")
        a.send(OP_TEXT, b'{"cmd": "led", "on": true}')
        assert await msg(a) == await msg(b) == {"t": "led", "on": True}
        assert board.state is True
        b.send(OP_TEXT, b'{"cmd": "led", "on": false}')
        assert await msg(a) == await msg(b) == {"t": "led", "on": False}
        assert board.state is False
        assert other.sock.take() == b"" and other.buf == bytearray()
        for c in (a, b, other):
            await close_handshake(c)

    run(scenario, cfg={"max_connections": 4}, handlers={"/echo": Echo()},
        expect={"normal": 3})
