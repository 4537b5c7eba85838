"""The page's files and its /ws channel, against the firmware under the MicroPython unix
port (110 KiB heap) with the real `websockets` client and raw sockets."""
import base64
import contextlib
import gzip
import json
import os
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import ROOT
from fwrun import Firmware, until

pytestmark = pytest.mark.slow

PERIOD = 100
# max_message: room for a 200-character line. stuck_timeout_ms: the silent tab of
# test_slow_tab_... must stay open (skipped, not closed) for the whole test: filling it
# takes 12-13 s of flooding on a loaded machine, beyond the default 10 s.
SERVER = {"max_connections": 4, "max_message": 256, "stuck_timeout_ms": 60000}


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("dash_ws") / "fw", server=SERVER,
                 config={"app": {"telemetry_ms": PERIOD}}).start()
    yield f
    f.stop()


def recv_json(ws, t, timeout=5):
    """Next message of type t (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r message within %ss" % (t, timeout))
        msg = json.loads(ws.recv(timeout=left))
        if msg["t"] == t:
            return msg


def test_page_is_served_gzipped_with_caching_headers(fw):
    with open(os.path.join(ROOT, "firmware", "www", "index.html"), "rb") as f:
        page = f.read()
    status, headers, body = fw.get("/", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == page
    assert "text/html" in headers["Content-Type"]
    assert headers.get("Cache-Control") or headers.get("ETag") or headers.get("Last-Modified")
    status, headers, body = fw.get("/", {"Accept-Encoding": "identity"})
    assert status == 200 and body == page
    assert headers.get("Content-Encoding") in (None, "identity")


def test_page_is_small_and_self_contained():
    with open(os.path.join(ROOT, "firmware", "www", "index.html"), "rb") as f:
        page = f.read()
    assert len(gzip.compress(page)) < 6 * 1024
    for ref in (b"http://", b"https://", b"//cdn", b"src="):
        assert ref not in page, "the device may have no internet: %r" % ref
    # The one link: an empty icon, so that a browser does not open one more connection
    # for /favicon.ico (a 404) in the middle of every page load.
    assert page.count(b"<link") == 1 and b'<link rel="icon" href="data:,">' in page


def test_hello_then_telemetry_at_the_configured_rate(fw):
    with fw.ws("/ws") as ws:
        hello = recv_json(ws, "hello")
        assert hello["ms"] == PERIOD and isinstance(hello["led"], bool)
        first = recv_json(ws, "stats")
        t0 = time.monotonic()
        samples = [recv_json(ws, "stats") for _ in range(10)]
        elapsed = time.monotonic() - t0
        s = samples[-1]["s"]
        for key in ("mem_free", "connections", "slots_total", "bytes_in", "bytes_out",
                    "messages_in", "messages_out", "dropped", "uptime_ms"):
            assert isinstance(s[key], int), key
        assert s["connections"] >= 1
        # Device clock: ten samples span about ten periods (loose: a shared CI machine).
        span = s["uptime_ms"] - first["s"]["uptime_ms"]
        assert 10 * PERIOD * 0.8 <= span <= 10 * PERIOD * 3, span
        assert elapsed < 10 * PERIOD * 5 / 1000


def test_each_tab_gets_its_round_trip_from_the_servers_pings(fw):
    # The websockets client answers pings itself; the server's ping of each tick comes
    # back as on_pong, and the next samples carry every tab's round trip.
    with fw.ws("/ws") as a, fw.ws("/ws") as b:
        ids = [recv_json(ws, "hello")["id"] for ws in (a, b)]
        for ws in (a, b):
            for _ in range(20):
                m = recv_json(ws, "stats")
                got = dict(m.get("rtt") or [])
                if all(i in got for i in ids):
                    break
            else:
                raise AssertionError("no round trip for %r in %r" % (ids, m))
            assert all(isinstance(got[i], int) and 0 <= got[i] < 1000 for i in ids), got
    # A tab that does not answer pings, only sends pongs of its own (unsolicited, other
    # payloads), never gets a figure.
    from wspeer import FrameReader, frame, ws_open

    s = ws_open(fw.port, "/ws")
    r = FrameReader(s, auto_pong=False)
    try:
        op, _, data = r.next()
        me = json.loads(data)["id"]
        pings = 0
        while pings < 3:
            op, _, data = r.next()
            if op == 0x9:
                pings += 1
                s.sendall(frame(0xA, b"not " + data))
            elif op == 0x1:
                m = json.loads(data)
                if m["t"] == "stats":
                    assert me not in dict(m["rtt"]), m["rtt"]
    finally:
        s.close()


def test_bad_commands_get_clear_errors(fw):
    with fw.ws("/ws") as ws:
        recv_json(ws, "hello")
        for raw, why in [("{oops", "not JSON"), ("[]", "JSON object"),
                         ('{"cmd":"fly"}', "unknown cmd"), ('{"cmd":"led","on":"yes"}', "led needs"),
                         ('{"cmd":"say","text":""}', "say needs"),
                         (json.dumps({"cmd": "say", "text": "y" * 201}), "longer than")]:
            assert len(raw.encode()) <= SERVER["max_message"]
            ws.send(raw)
            assert why in recv_json(ws, "error")["error"], raw
        ws.send(b'{"cmd":"led","on":true}')
        assert "binary" in recv_json(ws, "error")["error"]
        # The connection is still fine after all that.
        ws.send('{"cmd":"say","text":"still here"}')
        assert recv_json(ws, "say")["text"] == "still here"


def test_led_command_reaches_every_page_and_sticks(fw):
    with fw.ws("/ws") as a, fw.ws("/ws") as b:
        recv_json(a, "hello"), recv_json(b, "hello")
        for on in (True, False, True):
            a.send(json.dumps({"cmd": "led", "on": on}))
            assert recv_json(b, "led")["on"] is on
            assert recv_json(a, "led")["on"] is on
        assert recv_json(b, "stats")["led"] is True
    with fw.ws("/ws") as c:
        assert recv_json(c, "hello")["led"] is True
        c.send('{"cmd":"led","on":false}')
        assert recv_json(c, "led")["on"] is False


def silent_tab(port):
    """A WebSocket client that never reads, with a tiny receive buffer."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    return s


class Tab:
    """A page stand-in that reads everything on a thread, so it always keeps up."""

    def __init__(self, fw):
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(fw.ws("/ws"))
        self.msgs = []
        self.last = time.monotonic()  # when the last message other than telemetry came
        self.cv = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for raw in self.ws:
                with self.cv:
                    msg = json.loads(raw)
                    self.msgs.append(msg)
                    if msg["t"] != "stats":
                        self.last = time.monotonic()
                    self.cv.notify_all()
        except ConnectionClosed:
            pass

    def wait(self, pred, start=0, timeout=5):
        """The first message from index start on that satisfies pred, and its index."""
        with self.cv:
            found = []

            def seen():
                for i in range(start, len(self.msgs)):
                    if pred(self.msgs[i]):
                        found.append(i)
                        return True
                return False

            assert self.cv.wait_for(seen, timeout), "no such message within %ss" % timeout
            return self.msgs[found[0]], found[0]

    def settle(self, quiet=0.4, timeout=5):
        """Wait until nothing but telemetry has come for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last < quiet:
            assert time.monotonic() < deadline, "never quiet"
            time.sleep(0.02)

    def close(self):
        self.stack.close()
        self.thread.join(5)


def probe(sender, listener, text):
    """One say, paced: returns the sender's "sent" reply; the listener must get it."""
    sender.settle(), listener.settle()  # both rings drained after a flood
    start = len(sender.msgs)
    sender.ws.send(json.dumps({"cmd": "say", "text": text}))
    _, i = sender.wait(lambda m: m["t"] == "say" and m["text"] == text, start)
    reply, _ = sender.wait(lambda m: m["t"] == "sent", i)
    listener.wait(lambda m: m["t"] == "say" and m["text"] == text)
    return reply


def test_slow_tab_is_skipped_and_counted_others_unaffected(fw):
    conns0 = fw.idle()["connections"]  # (an earlier test's tab may still be closing)
    slow = silent_tab(fw.port)
    sender, listener = Tab(fw), Tab(fw)
    try:
        sender.wait(lambda m: m["t"] == "hello")
        listener.wait(lambda m: m["t"] == "hello")
        # The dashboard's code is loaded, the three tabs are open (the silent one's request
        # may be read after the other two's).
        assert until(lambda: fw.stats()["connections"] == conns0 + 3, 5)
        base = fw.stats()
        # Flood until the silent tab's socket buffers and then its ring are full (the
        # host's TCP buffers hold megabytes; an ESP32's hold 5760 bytes).
        # About 7000 says a second get through the unix port: a few seconds at most.
        flood = json.dumps({"cmd": "say", "text": "\U0001F4E1" * 50}, ensure_ascii=False)
        deadline = time.monotonic() + 20
        k = 0
        while True:
            for _ in range(3000):
                sender.ws.send(flood)
            k += 1
            if probe(sender, listener, "probe %d" % k)["skipped"] == 1:
                break
            assert time.monotonic() < deadline, "the silent tab never filled up"
        # Now exactly the silent tab is skipped, and the tabs that read get every message.
        for i in range(10):
            reply = probe(sender, listener, "paced %d" % i)
            assert reply == {"t": "sent", "to": 2, "skipped": 1}
        # Telemetry for the silent tab is skipped and counted too, never queued.
        st0 = fw.stats()
        d0 = st0["dropped"]
        # Three telemetry ticks after st0 seen by the tab that reads (by the device clock:
        # a sample on its way while st0 was read was taken before it), then: three skips.
        assert until(lambda: sum(1 for m in list(listener.msgs) if m["t"] == "stats"
                                 and m["s"]["uptime_ms"] > st0["uptime_ms"]) >= 3,
                     30 * PERIOD / 1000)
        after = fw.stats()
        assert after["dropped"] >= d0 + 3, "telemetry for the full tab not skipped"
        assert after["connections"] == conns0 + 3
        # Skipping, not queueing: the heap did not shrink by what was refused (megabytes).
        assert after["mem_free"] > base["mem_free"] - 2 * 1024, (base, after)
    finally:
        slow.close()
        sender.close()
        listener.close()
    assert until(lambda: fw.stats()["connections"] == conns0, 5)


def test_the_dashboard_leaves_the_heap_with_the_last_tab(fw):
    with fw.ws("/ws") as a:  # loaded once before: its names are interned already
        recv_json(a, "hello")
    before = until(lambda: fw.idle()["connections"] == 0 and fw.idle(), 5)["mem_free"]
    with fw.ws("/ws") as a, fw.ws("/ws") as b:
        recv_json(a, "hello"), recv_json(b, "hello")
        open_ = fw.stats()["mem_free"]
    with fw.ws("/ws") as c:  # loaded again for a new page
        assert recv_json(c, "stats")["s"]["connections"] >= 1
    after = until(lambda: fw.idle()["connections"] == 0 and fw.idle(), 5)["mem_free"]
    assert open_ < before - 2048, (before, open_)  # the code took heap while pages were open
    assert after > before - 512, (before, after)  # and gave it back when they closed
