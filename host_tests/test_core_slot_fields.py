"""Every field of a Slot is set when it is made (Protocol.__init__, then slot.new_slot), so its
attribute table is sized once at start-up: a name set later, on some path, would grow the
table of every slot that takes that path (MicroPython sizes it by primes, 16 B an entry on
x86-64), in a heap in pieces. Under the MicroPython unix port with permessage-deflate on:
echo, streamed messages, compressed ones, pings both ways, pong events, closes both ways, a
failed connection, HTTP pages, errors and a request body, then the slots' names are compared
with those they had at start-up. And the table stays within 47 entries (the prime the field
count is budgeted for)."""
import os
import time

import pytest
import websockets
from conftest import FAST, client_frame
from fwrun import Firmware, http_get, until
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(120)


def slotkeys(fw):
    status, _, body = fw.get("/slotkeys")
    assert status == 200, (status, body, fw.log())
    n, added, _, gone = body.decode().split()
    return int(n), added, gone


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    server = dict(FAST, inflaters=1, max_connections=5, idle_timeout_ms=0)
    # (A larger heap than a board's: what is measured is the slots' names, not the heap.)
    f = Firmware(tmp_path_factory.mktemp("slotfields") / "fw", server=server, heap="256k",
                 entry=os.path.join(ROOT, "host_tests", "slot_fields_main.py")).start()
    yield f
    f.stop()


def test_no_path_adds_a_field_to_a_slot(fw):
    n, added, gone = slotkeys(fw)
    assert (added, gone) == ("-", "-") and n <= 47, (n, added, gone)
    with fw.ws() as ws:  # echo, whole and streamed (larger than max_message)
        for data in (b"x" * 16, "t\u00e9xt", b"y" * 5000):
            ws.send(data)
            assert ws.recv(timeout=10) == data
        ws.send([b"frag", b"mented"])
        assert ws.recv(timeout=10) == b"fragmented"
        ws.ping(b"k").wait(5)  # the peer's ping
        time.sleep(0.5)  # the server's keepalive ping (ping_interval_ms) and its pong
    ext = ClientPerMessageDeflateFactory(client_max_window_bits=9)
    with fw.ws(extensions=[ext], compression=None, max_size=None) as ws:
        assert ws.protocol.extensions
        for data in ("compressed " * 50, os.urandom(3000)):
            ws.send(data)
            assert ws.recv(timeout=10) == data
    with fw.ws("/pongs") as ws:  # conn.ping(), pong events (on_pong)
        ws.send("hi")
        assert {ws.recv(timeout=10), ws.recv(timeout=10)} == {"hi", "pong"}
        ws.close(1000)
    with fw.ws() as ws:
        ws.socket.sendall(client_frame(0x3, b"reserved opcode"))  # the server fails it (1002)
        with pytest.raises(websockets.exceptions.ConnectionClosedError):
            ws.recv(timeout=10)
    assert fw.get("/")[0] == 200 and fw.get("/nothing-here")[0] == 404
    assert fw.get("/echo")[0] == 400  # not an upgrade
    fw.stats()
    assert until(lambda: fw.stats()["connections"] == 0, 5)
    n, added, gone = slotkeys(fw)
    assert (added, gone) == ("-", "-") and n <= 47, (n, added, gone, fw.log())
