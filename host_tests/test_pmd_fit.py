"""permessage-deflate (inflaters 1, as every board file) under the MicroPython unix port with
make sim's 9 slots: what start-up prints is what the heap loses, and a full board of
`websockets` clients (which offer the extension by default) open, compressed, and echo at
once while /stats answers. The first offer loads the code where the heap keeps room for
the slots still free and for /stats (pmdgate.offer); the rest share its inflater."""
import asyncio
import json
import re

import pytest
import websockets
from fwrun import Firmware

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
SIM = {"max_connections": 9, "ping_interval_ms": 0, "inflaters": 1}  # (9 slots, as make sim)


def started(tmp_path, name, **server):
    f = Firmware(tmp_path / name, server=dict(SIM, **server)).start()
    log = f.log()
    f.stop()
    free = int(re.search(r"heap free (\d+) alloc \d+ after start-up", log).group(1))
    taken = re.search(r"permessage-deflate: .* (\d+) B taken at start-up", log)
    return free, taken and int(taken.group(1))


def test_start_up_heap_drops_by_no_more_than_the_figure_printed(tmp_path):
    off, none = started(tmp_path, "off", inflaters=0)
    on, taken = started(tmp_path, "on")
    assert none is None and taken is not None
    # All that deflate takes at start-up (names, /stats' figures; its buffers come with its
    # code at an offer that fits), not a part of it.
    assert 0 < off - on <= taken <= off - on + 512, (off, on, taken)


async def clients(fw, n, rounds):
    """n clients at once, each sending `rounds` messages; /stats polled meanwhile.
    Returns (whether each negotiated the extension, the /stats polls' mem_free)."""
    loop = asyncio.get_running_loop()
    polls = []
    done = asyncio.Event()

    async def client(i):
        async with websockets.connect(fw.ws_url(), max_size=None) as ws:  # (offers it)
            for k in range(rounds):
                msg = ("sensor %d value %d " % (i, k)) * (1 + k % 40)
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), 30) == msg
            return bool(ws.protocol.extensions)

    async def poll():
        while not done.is_set():
            # (fw.get, not fw.stats, which retries a 503: every poll must be answered)
            status, _, body = await loop.run_in_executor(None, fw.get, "/stats")
            polls.append(json.loads(body)["mem_free"] if status == 200 else status)
            await asyncio.sleep(0.05)

    poller = asyncio.create_task(poll())
    try:
        got = await asyncio.gather(*(client(i) for i in range(n)))
    finally:
        done.set()
        await poller
    return got, polls


@pytest.mark.parametrize("heap", ["110k", "192k"])
def test_clients_offering_compression_open_and_echo_at_once(tmp_path, heap):
    fw = Firmware(tmp_path / "fw", heap=heap, server=SIM).start()
    try:
        got, polls = asyncio.run(asyncio.wait_for(clients(fw, 8, 60), 180))  # (8: a full board)
        st = fw.idle()
        d = st["deflate"]
        assert polls and all(m > 1000 for m in polls), polls  # /stats answered all along (no 503)
        assert all(got) and d["declined"] == 0 and d["loads"] == 1 and d["code"] > 0
        assert st["closed"]["memory"] == 0 and st["connections"] == 0
    finally:
        fw.stop()
    log = fw.log(tail=None)
    assert "Traceback" not in log and "out of memory" not in log, log
