"""`make bench` end to end on a tiny budget: real servers under MicroPython, real sockets.

Checks behaviour, not speed: the harness runs every peer target, each really echoes, the
report and JSON are written and carry figures for every target.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "tools", "bench")
sys.path.insert(0, BENCH)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    p = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--tiny",
                        "--out", str(out)], capture_output=True, text=True, timeout=150,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    with open(out / "report.json") as f:
        res = json.load(f)
    return out, res, p.stdout


@pytest.mark.timeout(180)
def test_report_files_and_markdown(tiny_run):
    out, res, stdout = tiny_run
    for name in ("report.md", "report.json", "headline.md"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert md == stdout.rstrip("\n") + "\n" or md.strip() == stdout.strip()
    assert "## Echo throughput" in md and "## CPython" in md
    assert "| target |" in (out / "headline.md").read_text()


@pytest.mark.timeout(180)
def test_every_peer_target_echoed_with_figures(tiny_run):
    _out, res, _ = tiny_run
    peers = ("microdot", "chumicro", "raw-tcp")
    cell = res["throughput"]["16 B, 1 conn x 1 in flight"]
    for name in peers:
        assert cell[name]["msg_s"] > 0, (name, cell[name])
        assert cell[name]["p50_ms"] is not None and cell[name]["p99_ms"] >= cell[name]["p50_ms"]
        assert 0 < cell[name]["client_cpu"]
        info = res["targets"][name]
        assert info["idle_heap"]["base"] > 0
        assert info["churn"]["cycles"] == res["config"]["churn"]
    # ringws itself, under the bench's instrumentation at the ESP32-sized heap: it echoes,
    # and its memory rows carry figures rather than recorded failures. (How many
    # connections fit is a figure, not checked here: the integration tests check 8.)
    assert cell["ringws"]["msg_s"] > 0 and not cell["ringws"]["errors"], cell["ringws"]
    info = res["targets"]["ringws"]
    assert info["idle_heap"]["base"] > 0 and info["idle_heap"]["per_conn"]["1"] > 0, info
    assert (info["alloc"].get("frame_sent") or {}).get("bytes_per_frame") == 0, info["alloc"]
    assert info["capacity"][res["config"]["heap"]]["clients"] > 0, info["capacity"]
    assert info["churn"]["cycles"] == res["config"]["churn"] and info["churn"]["failed"] == 0
    assert info["never_reader"]["alive"], info["never_reader"]
    # The same build with a shared receive buffer (the S3/C6 sizing) echoes too.
    shared = res["throughput"]["1024 B, 1 conn x 16 in flight"]["ringws-shared"]
    assert shared["msg_s"] > 0 and not shared["errors"], shared
    assert "shared_recv=4096" in res["targets"]["ringws-shared"]["note"]


def test_a_failed_measurement_is_recorded_not_fatal():
    import client
    import run

    def no_answer():
        raise client.CtlError("control port: 'mem' got no answer (reply b'')")

    assert run.guarded(no_answer) == {
        "error": "CtlError: control port: 'mem' got no answer (reply b'')"}
    assert run.guarded(lambda a, b: a + b, 2, 3) == 5


@pytest.mark.timeout(180)
def test_cpython_frames_section_parses_the_same_frames(tiny_run):
    _out, res, _ = tiny_run
    rows = res["cpython_frames"]["rows"]
    assert [r["size"] for r in rows] == [16, 1024, 65536]
    assert all(r["wsproto"]["frames_s"] > 0 for r in rows)


def test_frame_counter_counts_fragmented_and_split_messages():
    import client

    # Two messages: one in three fragments, one whole; fed one byte at a time.
    frames = (b"\x02\x03abc" + b"\x00\x02de" + b"\x80\x7e\x00\x80" + b"x" * 128
              + b"\x82\x01z" + b"\x89\x00")
    c = client.FrameCounter()
    assert sum(c.feed(frames[i:i + 1]) for i in range(len(frames))) == 2
    c = client.FrameCounter()
    assert c.feed(frames) == 2 and not c.closed
    assert c.feed(b"\x88\x02\x03\xe8") == 0 and c.closed


def test_masked_frame_round_trips_through_wsproto():
    from wsproto.frame_protocol import FrameProtocol

    import client

    for size in (0, 125, 126, 70000):
        frame, payload = client.masked_frame(size)
        fp = FrameProtocol(client=False, extensions=[])
        fp.receive_bytes(frame)
        (f,) = list(fp.received_frames())
        assert bytes(f.payload) == payload
