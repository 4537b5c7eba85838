"""permessage-deflate against the firmware under the MicroPython unix port at 110 KiB,
with the real `websockets` client compressing (its client_max_window_bits from 9 to 15,
context takeover or not, 16 B to 128 KiB, many messages in a row, 16 MiB streamed through
/echo), in the spirit of the conformance suite's 12.* and 13.* cases."""
import asyncio
import hashlib
import os
import random

import pytest
import websockets
from fwrun import Firmware
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

pytestmark = pytest.mark.timeout(300)

# 5 slots: one connection at a time is all these cases need (make sim's 9-slot board with
# every slot compressing is test_pmd_fit's).
SERVER = {"inflaters": 1, "max_connections": 5, "ping_interval_ms": 0}
SIZES = (16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("pmd") / "fw", server=SERVER).start()
    yield f
    f.stop()
    out = f.log(tail=None)
    assert "Traceback" not in out and "out of memory" not in out, out


def payloads(rng, size):
    """Text (JSON-like, compressible), binary noise, binary runs: what 12.* mixes."""
    words = ["sensor", "value", "ok", "\u00e9t\u00e9", "\u2713", "21.5", "id", "null"]
    text = " ".join(rng.choice(words) for _ in range(size // 3 + 1)).encode()[:size]
    while text and text[-1] & 0xC0 == 0x80 or text and text[-1] >= 0xC0:
        text = text[:-1]  # (not cut inside a character)
    return [text.decode(), rng.randbytes(size), bytes([rng.randrange(4)]) * size]


@pytest.mark.parametrize("bits", [None, 9, 12, 15])
@pytest.mark.parametrize("takeover", [False, True])
def test_websockets_client_compressing_gets_every_payload_back(fw, bits, takeover):
    rng = random.Random(bits or 0)
    ext = ClientPerMessageDeflateFactory(client_max_window_bits=bits if bits else True,
                                         client_no_context_takeover=takeover)
    with fw.ws(extensions=[ext], compression=None, max_size=None) as ws:
        pmd = ws.protocol.extensions
        assert len(pmd) == 1 and pmd[0].local_max_window_bits == 9 and pmd[0].local_no_context_takeover
        for size in SIZES:
            for data in payloads(rng, size):
                ws.send(data)
                assert ws.recv(timeout=30) == data, size
        for _ in range(200):  # many in a row
            data = payloads(rng, rng.randrange(16, 2048))[0]
            ws.send(data)
            assert ws.recv(timeout=30) == data
        ws.send(["frag", "mented ", "\u2713"])  # a fragmented compressed message
        assert ws.recv(timeout=30) == "fragmented \u2713"
    assert fw.stats()["closed"]["normal"] >= 1


def test_a_client_that_cannot_cap_its_window_gets_no_compression(fw):
    ext = ClientPerMessageDeflateFactory(client_max_window_bits=None)  # offers none
    with fw.ws(extensions=[ext], compression=None) as ws:
        assert ws.protocol.extensions == []
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


@pytest.mark.slow
def test_16_mib_streams_through_echo_compressed(fw):
    chunk = b"0123456789abcdef" * 4096 + os.urandom(64 * 1024)  # half of it noise
    data = chunk * (16 * 1024 * 1024 // len(chunk))
    ext = ClientPerMessageDeflateFactory(client_max_window_bits=9)

    async def go():
        # asyncio: the sync client holds its lock through a whole send, so it cannot read
        # the echo coming back meanwhile (it stalls once the sockets' buffers are full).
        async with websockets.connect(fw.ws_url(), extensions=[ext], compression=None,
                                      max_size=None) as ws:
            sending = asyncio.create_task(ws.send(data))
            h = hashlib.sha256()
            n = 0
            # Streamed: the echo's inflated pieces are more fragments than recv() accepts.
            async for piece in ws.recv_streaming():
                h.update(piece)
                n += len(piece)
            await sending
            return n, h.digest()

    assert asyncio.run(asyncio.wait_for(go(), 120)) == (len(data), hashlib.sha256(data).digest())
    assert fw.stats()["closed"]["memory"] == 0
