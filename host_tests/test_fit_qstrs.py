"""Interned names (qstrs) stay within the pools made at start-up.

MicroPython never frees an interned name, and its table grows by pools of twice the last
one's size: on the unix port the pools made by start-up hold 620 names, and the next one
takes about 7 KB in one piece, which a 110 KiB heap cut up by connections does not have.
Every module loaded later (the answer to /stats, a static file, an error's text,
permessage-deflate, the dashboard) interns its names at its first use, so a name added
anywhere is a step towards a MemoryError on a board that has run for days and meets a
rare path for the first time. This test runs every lazily loaded path of make sim's
firmware (9 slots, compression on, the default app) and checks the table keeps room for
an application's own names."""
import asyncio
import os
import re
import socket

import pytest
import websockets
from fwrun import Firmware

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLS = 620  # names the pools start-up makes hold (unix port; the next pool: ~7 KB)
APP_ROOM = 60  # kept for an application's names


def counts(fw):
    fw.get("/qstrs")
    return [int(n) for n in re.findall(r"n_qstr=(\d+)", fw.log(tail=None))]


def raw(fw, data):
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=5)
    s.sendall(data)
    try:
        return s.recv(200)
    finally:
        s.close()


async def sockets(fw):
    async with websockets.connect(fw.ws_url("/echo"), max_size=None) as ws:  # (offers deflate)
        assert ws.protocol.extensions  # compression taken: pmd.py and its inflater loaded
        for msg in ("sensor 1 value 2 " * 40, "x" * 5000, b"\x00" * 300):
            await ws.send(msg)
            assert await ws.recv() == msg
        await ws.ping()
    async with websockets.connect(fw.ws_url("/ws")) as ws:  # the dashboard
        await asyncio.wait_for(ws.recv(), 5)
    async with websockets.connect(fw.ws_url("/echo"), compression=None) as ws:
        await ws.send("x")
        await ws.recv()
        ws.transport.write(b"\x8f\x80\x00\x00\x00\x00")  # opcode 15: a protocol error (1002)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


def test_every_lazy_path_leaves_room_in_the_start_up_pools(tmp_path):
    fw = Firmware(tmp_path / "fw", server={"max_connections": 9},
                  entry=os.path.join(ROOT, "host_tests", "qstr_main.py")).start()
    try:
        start = counts(fw)[-1]
        status, head, _ = fw.get("/")
        assert status == 200
        etag = head.get("etag")
        assert fw.get("/", {"If-None-Match": etag})[0] == 304
        assert fw.get("/nope")[0] == 404
        assert fw.get("/stats", method="POST")[0] in (404, 405)
        assert fw.stats()["deflate"]["inflaters"] == 1
        assert raw(fw, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 4")
        assert raw(fw, b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Version: 13\r\n\r\n").startswith(b"HTTP/1.1 4")
        assert raw(fw, b"BAD\r\n\r\n").startswith(b"HTTP/1.1 4")
        asyncio.run(asyncio.wait_for(sockets(fw), 30))
        st = fw.stats()
        assert st["deflate"]["loads"] == 1 and st["closed"]["protocol"] >= 1
        end = counts(fw)[-1]
    finally:
        fw.stop()
    print("interned names: %d after start-up, %d after every path" % (start, end))
    assert start < end <= POOLS - APP_ROOM, (start, end)
