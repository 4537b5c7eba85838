"""Out of memory under the MicroPython unix port.

The firmware starts normally (ESP32-sized heap); then the test takes the heap away while
it runs: a server timer fills it with ballast until only a few hundred bytes are free
(tools/squeeze_main.py). Connections already open must go on being served; new ones
are answered 101 if there is memory for them, else a prebuilt 503, without the server
dying; once the memory is given back everything works again
and every resource is at its baseline.
"""
import time

import pytest

from conftest import FAST, assert_baseline
from fwrun import Firmware, until
from wspeer import (
    FrameReader,
    connect,
    echo_roundtrip,
    frame,
    parse_response,
    read_all,
    warm_slots,
    ws_open,
    ws_request,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
SLOTS = 4


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    f = Firmware(tmp_path_factory.mktemp("oom") / "fw",
                 server=dict(FAST, max_connections=SLOTS, ping_interval_ms=0),
                 squeeze=True).start()
    yield f
    f.stop()


@pytest.fixture
def base(fw):
    warm_slots(fw.port, SLOTS)  # every slot's reader task exists: a steady baseline
    b = fw.resources()
    yield b
    if fw.alive():
        try:
            fw.squeeze(None)
        except (RuntimeError, OSError):
            pass  # already given back by the test
    assert fw.alive(), fw.log()
    assert echo_roundtrip(fw.port, b"memory back") == b"memory back"
    assert_baseline(fw, b)


@pytest.mark.parametrize("leave_free", [1500, 400, 64])
def test_starved_heap_keeps_open_connections_and_refuses_new_ones(fw, base, leave_free):
    before = fw.stats()["closed"]
    olds = [ws_open(fw.port) for _ in range(SLOTS - 2)]
    fw.squeeze(leave_free)
    outcomes = []
    for i, s in enumerate(olds):
        r = FrameReader(s)
        s.sendall(frame(0x1, b"hi %d" % i))
        op, _, payload = r.next()
        if op == 0x8:
            outcomes.append(("closed", int.from_bytes(payload[:2], "big")))
        else:
            outcomes.append(("echo", payload))
    refused = []
    for _ in range(3):
        s = connect(fw.port)
        s.sendall(ws_request())
        refused.append(read_all(s, 3))
        s.close()
    assert fw.alive(), fw.log()
    fw.squeeze(None)
    for i, s in enumerate(olds):
        if outcomes[i][0] == "echo":
            s.sendall(frame(0x8, b"\x03\xe8"))
            assert FrameReader(s).close_code() == 1000
        s.close()
    # Every open connection went on echoing: the echo path allocates nothing.
    assert outcomes == [("echo", b"hi %d" % i) for i in range(len(olds))], outcomes
    # A new connection is answered 101 if there was memory for it, else a 503; never a
    # silent close. With 400 bytes or fewer left there is never room for a handshake.
    statuses = [parse_response(d)[0] if d else None for d in refused]
    assert set(statuses) <= {101, 503}, refused
    if leave_free <= 400:
        assert statuses == [503] * len(refused), "the squeeze did not starve the handshake"
    # Each 503 is counted as a memory close, and nothing else is.
    starved = statuses.count(503)
    counted = until(lambda: fw.stats()["closed"]["memory"] - before["memory"] == starved, 5)
    assert counted, (starved, fw.stats()["closed"], before)
    print("\nleave_free %d: open connections %s; new %s" % (leave_free, outcomes, statuses))


# Found by this test (fixed): when the opening handshake ran out of memory the connection
# was closed with no answer at all; now a prebuilt 503 goes out.
def test_handshake_out_of_memory_is_answered_503(fw, base):
    # Memory the server frees after the squeeze (garbage collected on the next failed
    # allocation) can let a handshake through: try a few times; never a silent close.
    fw.squeeze(64)
    answers = []
    for _ in range(5):
        s = connect(fw.port)
        s.sendall(ws_request())
        data = read_all(s, 3)
        s.close()
        answers.append(parse_response(data)[0] if data else None)
        if answers[-1] == 503:
            break
        time.sleep(0.15)  # the squeeze soaks up freed memory every 100 ms
    fw.squeeze(None)
    assert answers[-1] == 503 and set(answers) <= {101, 503}, answers
