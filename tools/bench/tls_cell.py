"""The TLS cell of make bench: ringws's echo over wss against ws on the same firmware, the
handshake time, and what TLS costs in memory (ringws/tls.py).

    .venv/bin/python tools/bench/tls_cell.py [--heap 192k] [--seconds 1]

One firmware (the host board, TLS on with a throwaway certificate from tools/cert.py) under
the unix port. Echo: one `websockets` client, one message in flight, ws and wss measured
in turns. Memory: MicroPython heap free after start-up with TLS off and on, /stats
mem_free with the TLS slots idle and all in use (per connection: the Python heap's share),
and the process's resident memory over the same span (mbedTLS's record buffers and
handshake state: malloc outside the MicroPython heap on the unix port, the IDF heap on an
ESP32).
"""
import argparse
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tools/

import cert  # noqa: E402
from fwrun import Firmware  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def echo_rate(connect, size, seconds):
    msg = b"x" * size
    with connect() as ws:
        for _ in range(20):  # warm-up
            ws.send(msg)
            ws.recv()
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ws.send(msg)
            ws.recv()
            n += 1
        return n / (time.perf_counter() - t0)


def start_heap(fw):
    m = re.search(r"heap free (\d+)", fw.log(since_start=True))
    return int(m.group(1)) if m else None


def bench(heap="192k", seconds=1.0, repeats=3, handshakes=20):
    from websockets.sync.client import connect

    tmp = tempfile.mkdtemp(prefix="ringws-tlsbench-")
    certs = os.path.join(tmp, "certs")
    cert.make("host", ["127.0.0.1"], certs)
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "host.pem"))
    out = {"heap": heap}
    plain = Firmware(os.path.join(tmp, "plain", "fw"), heap=heap).start()
    try:
        out["start_heap_free_tls_off"] = start_heap(plain)
    finally:
        plain.stop()
    fw = Firmware(os.path.join(tmp, "tls", "fw"), heap=heap, certs=certs).start()
    try:
        out["start_heap_free_tls_on"] = start_heap(fw)
        ws_url = "ws://127.0.0.1:%d/echo" % fw.port
        wss_url = "wss://127.0.0.1:%d/echo" % fw.tls_port
        for size in (16, 1024):
            rates = {"ws": [], "wss": []}
            for _ in range(repeats):
                rates["ws"].append(echo_rate(lambda: connect(ws_url), size, seconds))
                rates["wss"].append(echo_rate(lambda: connect(wss_url, ssl=ctx), size, seconds))
            out["echo_%d" % size] = {k: statistics.median(v) for k, v in rates.items()}
        times = []
        for _ in range(handshakes):
            t0 = time.perf_counter()
            with connect(wss_url, ssl=ctx) as ws:
                times.append((time.perf_counter() - t0) * 1000)
                ws.send("x")
                ws.recv()
        st = fw.stats()
        out["open_ms_median"] = statistics.median(times)  # TCP + TLS + upgrade, client side
        out["handshake_ms_server"] = st["tls"]["handshake_ms"]
        limit = st["tls"]["max"]
        idle_free, idle_rss = st["mem_free"], rss_kb(fw.proc.pid)
        conns = [connect(wss_url, ssl=ctx) for _ in range(limit)]
        try:
            for c in conns:
                c.send("x")
                c.recv()
            busy = fw.stats()
            busy_rss = rss_kb(fw.proc.pid)
        finally:
            for c in conns:
                c.close()
        out["tls_max"] = limit
        out["python_heap_per_conn"] = (idle_free - busy["mem_free"]) / limit
        out["rss_kb_per_conn"] = (busy_rss - idle_rss) / limit
    finally:
        fw.stop()
    return out


def cell(heap, **kw):
    """bench() for run.py: a failure is a result, recorded with its reason."""
    try:
        return bench(heap, **kw)
    except Exception as e:  # (the rest of the bench goes on)
        return {"error": "%s: %s" % (type(e).__name__, e)}


def render(r):
    if not r or "echo_16" not in r:
        return "\n## wss\n\nnot measured: %r\n" % (r,)
    lines = ["\n## wss against ws (ringws/tls.py, unix port at %s)\n" % r["heap"],
             "| | ws | wss | wss/ws |", "|---|---|---|---|"]
    for size in (16, 1024):
        e = r["echo_%d" % size]
        lines.append("| echo %d B, 1 in flight (msg/s) | %.0f | %.0f | %.2fx |"
                     % (size, e["ws"], e["wss"], e["wss"] / e["ws"]))
    lines.append("")
    lines.append("- open (TCP + TLS + upgrade, client side): %.1f ms median; server's "
                 "handshake (accept to the request's first byte): %d ms"
                 % (r["open_ms_median"], r["handshake_ms_server"]))
    lines.append("- heap free after start-up: %d B TLS off, %d B TLS on (%d slots of its own)"
                 % (r["start_heap_free_tls_off"], r["start_heap_free_tls_on"], r["tls_max"]))
    lines.append("- per open TLS connection: %.0f B of MicroPython heap, %.0f KiB resident "
                 "outside it (mbedTLS)" % (r["python_heap_per_conn"], r["rss_kb_per_conn"]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heap", default="192k")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    r = bench(args.heap, args.seconds, args.repeats)
    print(json.dumps(r, indent=1))
    print(render(r))


if __name__ == "__main__":
    main()
