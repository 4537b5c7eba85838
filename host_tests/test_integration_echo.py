"""The firmware under the real MicroPython interpreter (unix port, 110 KiB heap), driven by
the `websockets` client and raw sockets: echo, ping, close codes, limits, concurrency."""
import asyncio
import os
import socket
import time

import pytest
import websockets
from fwrun import Firmware
from wspeer import read_frame, ws_open

from conftest import encode_frame

pytestmark = pytest.mark.timeout(120)
MASK = b"\x11\x22\x33\x44"


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    # (A long close timeout: a connection that ends, ends because of what the peer sent.)
    f = Firmware(tmp_path_factory.mktemp("echo") / "fw",
                 server={"ping_interval_ms": 0, "close_timeout_ms": 30000}).start()
    yield f
    f.stop()
    out = f.log(tail=None)
    assert "Traceback" not in out, out


def run(coro):
    return asyncio.run(coro)


def test_echo_every_kind_of_message(fw):
    async def go():
        async with websockets.connect(fw.ws_url(), max_size=None) as ws:
            for msg in ["hello", b"\x00\x01binary", "", b"", "κόσμε€𝄞" * 50, os.urandom(1000)]:
                await ws.send(msg)
                got = await asyncio.wait_for(ws.recv(), 10)
                assert type(got) is type(msg) and got == msg
            # fragmented by the client
            await ws.send(["frag", "mented ", "text"])
            assert await ws.recv() == "fragmented text"
            await ws.send([b"a" * 3000, b"b" * 3000])
            assert await ws.recv() == b"a" * 3000 + b"b" * 3000

    run(go())


@pytest.mark.parametrize("size", [65536, 3 * 1024 * 1024, 16 * 1024 * 1024])
def test_echo_large_messages_through_small_heap(fw, size):
    payload = os.urandom(size)
    base = fw.idle()

    async def go():
        # Uncompressed: a compressed message comes back in inflated pieces of at most 512
        # bytes, and websockets' recv() takes at most 4096 fragments (3 MiB would be 6,144;
        # test_pmd_firmware streams 16 MiB compressed with recv_streaming).
        async with websockets.connect(fw.ws_url(), max_size=None, compression=None) as ws:
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 60)
            assert got == payload

    run(go())
    st = fw.idle()
    # All of it went through the server, and nothing of it stayed: a message up to 150
    # times the heap was streamed, and the heap is back where it was.
    assert st["bytes_in"] - base["bytes_in"] >= size
    assert st["bytes_out"] - base["bytes_out"] >= size
    assert st["mem_alloc"] - base["mem_alloc"] < 2048, (base["mem_alloc"], st["mem_alloc"])
    assert st["closed"]["normal"] == base["closed"]["normal"] + 1


def test_large_text_is_validated_and_echoed(fw):
    text = "ü€😀" * 200000  # 2.6 MB of multi-byte UTF-8, split across reads

    async def go():
        async with websockets.connect(fw.ws_url(), max_size=None) as ws:
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 60) == text

    run(go())


def test_ping_gets_pong_with_payload(fw):
    s = ws_open(fw.port)
    s.sendall(encode_frame(0x9, b"are you there", mask=MASK))
    assert read_frame(s) == (True, 0xA, b"are you there")
    # an unsolicited pong is ignored, the connection goes on
    s.sendall(encode_frame(0xA, b"x", mask=MASK) + encode_frame(0x1, b"still", mask=MASK))
    assert read_frame(s) == (True, 0x1, b"still")
    s.close()


def test_ping_between_fragments(fw):
    s = ws_open(fw.port)
    s.sendall(
        encode_frame(0x1, b"one ", fin=False, mask=MASK)
        + encode_frame(0x9, b"p", mask=MASK)
        + encode_frame(0x0, b"two", fin=True, mask=MASK)
    )
    assert read_frame(s) == (True, 0xA, b"p")
    assert read_frame(s) == (True, 0x1, b"one two")
    s.close()


def close_payload(code, reason=b""):
    return code.to_bytes(2, "big") + reason


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_close_handshake_echoes_valid_code(fw, code):
    s = ws_open(fw.port)
    s.sendall(encode_frame(0x8, close_payload(code, b"bye"), mask=MASK))
    assert read_frame(s) == (True, 0x8, close_payload(code))
    assert s.recv(10) == b""  # and the server closes the TCP connection
    s.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        (encode_frame(0x8, close_payload(999), mask=MASK), 1002),
        (encode_frame(0x8, close_payload(1005), mask=MASK), 1002),
        (encode_frame(0x8, b"\x03", mask=MASK), 1002),
        (encode_frame(0x8, close_payload(1000, b"\xff"), mask=MASK), 1007),
        (encode_frame(0x1, b"unmasked"), 1002),
        (bytes([0xC1]) + encode_frame(0x1, b"rsv1", mask=MASK)[1:], 1002),
        (encode_frame(0x3, b"", mask=MASK), 1002),
        (encode_frame(0xB, b"", mask=MASK), 1002),
        (encode_frame(0x9, b"x" * 126, mask=MASK), 1002),
        (encode_frame(0x9, b"x", fin=False, mask=MASK), 1002),
        (encode_frame(0x0, b"orphan", mask=MASK), 1002),
        (encode_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", mask=MASK), 1007),
        (encode_frame(0x1, b"\xc0\xaf", mask=MASK), 1007),
        (encode_frame(0x1, b"\xf4\x90\x80\x80", mask=MASK), 1007),
    ],
    ids=[
        "close-999", "close-1005", "close-1-byte", "close-bad-utf8", "unmasked", "rsv1",
        "opcode-3", "opcode-11", "long-ping", "fragmented-ping", "orphan-continuation",
        "surrogate", "overlong", "above-10ffff",
    ],
)
def test_protocol_errors_close_with_the_right_code(fw, frame, code):
    s = ws_open(fw.port)
    s.sendall(frame + encode_frame(0x2, b"dropped after the violation", mask=MASK))
    fin, op, payload = read_frame(s)
    assert op == 0x8 and int.from_bytes(payload[:2], "big") == code, payload
    if frame[0] & 0x0F != 0x8:  # (a bad close was the peer's close: nothing more is awaited)
        s.sendall(encode_frame(0x8, payload[:2], mask=MASK))  # the client's answer
    s.settimeout(10)
    assert s.recv(10) == b""  # then the server closes TCP at once, not after close_timeout_ms
    s.close()


def test_invalid_utf8_fails_fast_before_the_frame_completes(fw):
    # A 1000-byte text frame whose first chunk already holds an invalid sequence: the
    # server must close with 1007 without waiting for the rest of the frame.
    s = ws_open(fw.port)
    payload = b"ok " + b"\xed\xa0\x80" + b"x" * 994
    frame = encode_frame(0x1, payload, mask=MASK)
    s.sendall(frame[:20])
    s.settimeout(3)
    fin, op, data = read_frame(s)
    assert op == 0x8 and int.from_bytes(data[:2], "big") == 1007
    s.close()


def test_invalid_utf8_across_fragments(fw):
    s = ws_open(fw.port)
    # 0xF4 0x90 splits across two fragments: invalid (above U+10FFFF) only together.
    s.sendall(encode_frame(0x1, b"abc\xf4", fin=False, mask=MASK))
    time.sleep(0.05)
    s.sendall(encode_frame(0x0, b"\x90\x80\x80", fin=True, mask=MASK))
    fin, op, data = read_frame(s)
    assert op == 0x8 and int.from_bytes(data[:2], "big") == 1007
    s.close()


def test_byte_at_a_time_equals_all_at_once(fw):
    stream = (
        encode_frame(0x2, b"\x00" * 300, mask=MASK)
        + encode_frame(0x1, "é".encode() * 10, fin=False, mask=MASK)
        + encode_frame(0x9, b"pp", mask=MASK)
        + encode_frame(0x0, "ü".encode() * 10, mask=MASK)
    )
    results = []
    for chunk in (len(stream), 1, 7):
        s = ws_open(fw.port)
        for i in range(0, len(stream), chunk):
            s.sendall(stream[i : i + chunk])
            if chunk == 1 and i % 50 == 0:
                time.sleep(0.001)
        results.append([read_frame(s) for _ in range(3)])
        s.close()
    assert results[0] == results[1] == results[2]
    assert results[0][0] == (True, 0x2, b"\x00" * 300)
    assert results[0][1] == (True, 0xA, b"pp")
    assert results[0][2] == (True, 0x1, "é".encode() * 10 + "ü".encode() * 10)


def test_server_sends_one_frame_per_small_message_and_uses_nodelay(fw):
    # Round trips of 1 KiB must not pay a 40 ms delayed-ACK each (Nagle). The median of
    # 200: a loaded machine stalls some of them, a Nagle stall would be in every one.
    async def go():
        async with websockets.connect(fw.ws_url()) as ws:
            took = []
            for _ in range(200):
                t0 = time.monotonic()
                await ws.send(b"x" * 1024)
                await ws.recv()
                took.append(time.monotonic() - t0)
            return sorted(took)

    took = run(go())
    assert took[len(took) // 2] < 0.04 / 2, "round trips stall: median %.3f s, slowest " \
        "%.3f s" % (took[len(took) // 2], took[-1])


def test_echo_negotiates_no_subprotocol_and_plain_http_gets_404(fw):
    # /echo supports none: an offer is answered without Sec-WebSocket-Protocol, which
    # the websockets client checks. (Negotiation itself: test_integration_routes.py.)
    async def go():
        async with websockets.connect(fw.ws_url(), subprotocols=["chat", "superchat"]) as ws:
            await ws.send("plain")
            return ws.subprotocol, await asyncio.wait_for(ws.recv(), 10)

    assert run(go()) == (None, "plain")
    assert fw.stats()["slots_total"] == 8
    with socket.create_connection(("127.0.0.1", fw.port)) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404")
