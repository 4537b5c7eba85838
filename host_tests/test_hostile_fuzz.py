"""Fuzzing in CI: a small Hypothesis budget over the same targets `make fuzz` runs long
(tools/fuzz.py): the handshake parser fed random, mutated and chunked request heads, and
the frame decoder fed random, mutated and chunked client streams, with backpressure.
No exception escapes; every refusal is a documented HTTP status or a close code with the
close frame queued; nothing is delivered after a failure."""
import os
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fuzz  # noqa: E402

EXAMPLES = int(os.environ.get("RINGWS_FUZZ_EXAMPLES", "1000"))
TESTS = fuzz.make_tests(EXAMPLES)


def test_fuzz_runs_on_the_host_boards_slot():
    import boards

    srv = boards.load("host")["server"]
    assert (fuzz.RECV, fuzz.RING, fuzz.MBUF) == (srv["recv_buf"], srv["send_ring"],
                                                 srv["max_message"])
    assert fuzz.HEAD == fuzz.RECV + fuzz.RING + fuzz.MBUF


def run_campaign(name):
    """One of tools/fuzz.py's campaigns; it must have run EXAMPLES examples at least."""
    before = fuzz.stats[name]
    TESTS[name]()
    assert fuzz.stats[name] - before >= EXAMPLES


@pytest.mark.slow
def test_fuzz_handshake_parser():
    run_campaign("handshake")
    # The campaign reached both sides: accepted upgrades and refusals.
    assert fuzz.stats["statuses"].get(101) and fuzz.stats["statuses"].get(400)


@pytest.mark.slow
def test_fuzz_frame_decoder():
    run_campaign("frames")
    ev = fuzz.stats["events"]
    assert ev.get(fuzz.EV_MESSAGE) and ev.get(fuzz.EV_ERROR)


@pytest.mark.slow
def test_fuzz_permessage_deflate():
    run_campaign("deflate")
    ev = fuzz.stats["events"]
    assert ev.get(fuzz.EV_FRAGMENT) and fuzz.stats["close_codes"].get(1007)


def test_compressed_streams_inflate_exactly_or_fail_cleanly():
    text = "r\u00e9sum\u00e9 \u2713 ".encode() * 300
    msgs = [(True, text, 9, False, [5, 900]), (False, bytes(70000), 9, True, []),
            (False, b"", 9, False, [])]
    events = fuzz.run_deflate(msgs, [1, 7, 300], stream=True, refuse_every=3)
    assert events[-1][0] == fuzz.EV_MESSAGE or events[-1][3]
    events = fuzz.run_deflate(msgs, [64], stream=False)  # (64-byte message buffer)
    assert events[-1][:2] == (fuzz.EV_ERROR, 1009)
    blob = random.Random(1).randbytes(2048)  # (no repeats inside: the match is 2048 back)
    events = fuzz.run_deflate([(False, blob + blob, 15, False, [])], stream=True)  # window 15
    assert events[-1][:2] == (fuzz.EV_ERROR, 1007)


@pytest.mark.parametrize("data", [
    b"\x81\xff" + b"\xff" * 8 + b"abcd",  # 64-bit length with the top bit
    b"\x81\xfe\xff\xff" + b"abcd" + b"x" * 100,  # 64 KiB text frame, not streamable
    b"\x01\x81abcd\x02" + b"\x82\x80abcd",  # fragmented message, then a new one inside it
    b"\x88\x81abcd\x00",  # close with a 1-byte payload
    b"\x88\x82abcd" + bytes((0x03 ^ 0x61, 0xED ^ 0x62)),  # close code 1005 on the wire
    b"\x89\xfe\x00\x7e" + b"abcd" + b"x" * 126,  # ping of 126 bytes
])
def test_known_hostile_frames_fail_cleanly(data):
    events = fuzz.run_frames(data, [1, 2, 3, 5, 7])
    assert events and events[-1][0] == fuzz.EV_ERROR
    assert events[-1][1] in (1002, 1007, 1009)


def test_harness_reports_an_undocumented_status(monkeypatch):
    # The property can fail: a parser answering 418 is a finding.
    def teapot(buf, end):
        raise fuzz.HttpError(418, "teapot")

    monkeypatch.setattr(fuzz.handshake, "parse_request", teapot)
    with pytest.raises(fuzz.Finding):
        fuzz.run_handshake(fuzz.VALID_HEAD)


def test_harness_checks_the_close_frame_is_queued(monkeypatch):
    monkeypatch.setattr(fuzz.Protocol, "_queue_close", lambda self, code, reason: True)
    with pytest.raises(fuzz.Finding):
        fuzz.run_frames(b"\x81\x02ab")  # unmasked: fails, but no close frame queued
