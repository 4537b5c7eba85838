#!/usr/bin/env python3
"""Soak: a bounded multi-minute mixed load on the firmware under the unix port (`make soak`).

    tools/soak.py [--seconds 180] [--heap 110k] [--slots 8] [--sample 5]

Runs at once: echo clients with the real `websockets` client (messages small and larger
than the slot, so both the whole and the streamed paths run), churn (clean closes, resets,
half-closed sockets, silent connects, HTTP), slowloris requests, clients that stop reading,
and /stats readers. Every --sample seconds it prints the heap (mem_alloc after
gc.collect()), free slots and open fds of the server process; at the end it waits for the
load to drain and checks that mem_alloc, fds and slots are back at the baseline.
Exits 1 on a leak, a dead server or a failed echo.
"""
import argparse
import os
import socket
import sys
import threading
import time

import churnmix as churn_mix
import fwrun
import wspeer


def echo_client(port, stop, counts, errors):
    from websockets.sync.client import connect

    i = 0
    while not stop.is_set():
        try:
            with connect("ws://127.0.0.1:%d/echo" % port, open_timeout=5,
                         max_size=None) as ws:
                for _ in range(50):
                    if stop.is_set():
                        break
                    i += 1
                    size = (16, 300, 5000)[i % 3]  # 5000 > slot: streamed as fragments
                    payload = os.urandom(size)
                    ws.send(payload)
                    if ws.recv(10) != payload:
                        errors.append("echo mismatch at message %d" % i)
                    counts["echo"] += 1
        except Exception as e:
            # A 503 under full load is correct behaviour, not an error.
            if "503" in str(e):
                counts["refused"] += 1
                time.sleep(0.2)
            else:
                errors.append("echo client: %r" % e)
                time.sleep(0.2)


def churner(port, stop, counts, errors):
    i = 0
    while not stop.is_set():
        kind = churn_mix.KINDS[i % len(churn_mix.KINDS)]
        i += 1
        try:
            r = kind(port)
            counts["churn_" + r] = counts.get("churn_" + r, 0) + 1
        except (OSError, EOFError, AssertionError) as e:
            counts["churn_error"] = counts.get("churn_error", 0) + 1
            if len(errors) < 20 and "refused" not in repr(e):
                errors.append("churn %s: %r" % (kind.__name__, e))
        time.sleep(0.002)


def hostile(port, stop, counts):
    """Slowloris and clients that stop reading, one at a time."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if i % 2:
                s = wspeer.connect(port)
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
                wspeer.read_all(s, 8)  # until the 408
                s.close()
                counts["slowloris"] += 1
            else:
                s = wspeer.ws_open(port)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(0.5)
                try:
                    for _ in range(20000):
                        s.sendall(wspeer.frame(0x2, b"q" * 500))
                except OSError:
                    pass
                wspeer.reset(s)
                counts["non_reader"] += 1
        except (OSError, ConnectionError):
            time.sleep(0.1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--heap", default=fwrun.HEAP)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--sample", type=float, default=5)
    ap.add_argument("--echo-clients", type=int, default=3)
    ap.add_argument("--churners", type=int, default=2)
    args = ap.parse_args(argv)

    fw = fwrun.Firmware(heap=args.heap,
                     server={"max_connections": args.slots, "handshake_timeout_ms": 2000,
                             "ping_interval_ms": 1000, "pong_timeout_ms": 1000}).start()
    ok = True
    try:
        wspeer.echo_roundtrip(fw.port)
        base = fw.resources()
        print("soak: %d s, heap %s, %d slots; baseline %s" % (args.seconds, args.heap,
                                                              args.slots, base))
        stop = threading.Event()
        counts = {"echo": 0, "refused": 0, "slowloris": 0, "non_reader": 0}
        errors = []
        threads = [threading.Thread(target=echo_client, args=(fw.port, stop, counts, errors))
                   for _ in range(args.echo_clients)]
        threads += [threading.Thread(target=churner, args=(fw.port, stop, counts, errors))
                    for _ in range(args.churners)]
        threads.append(threading.Thread(target=hostile, args=(fw.port, stop, counts)))
        for t in threads:
            t.daemon = True
            t.start()
        t0 = time.monotonic()
        print("%7s %9s %9s %6s %5s %5s %8s" % ("t (s)", "mem_alloc", "mem_free", "slots",
                                               "conns", "fds", "echoes"))
        curve = []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(args.sample)
            if not fw.alive():
                print("soak: the server died:\n" + fw.log())
                ok = False
                break
            try:
                st = fw.stats()
            except (OSError, AssertionError, ValueError) as e:
                print("  (stats refused under load: %r)" % (e,))
                continue
            row = (time.monotonic() - t0, st["mem_alloc"], st["mem_free"], st["slots_free"],
                   st["connections"], fw.fds(), counts["echo"])
            curve.append(row)
            print("%7.0f %9d %9d %6d %5d %5d %8d" % row, flush=True)
        stop.set()
        for t in threads:
            t.join(15)
        if fw.alive():
            after = fw.resources()  # waits (until) for the load to drain
            st = fw.stats()
            print("after drain: %s" % after)
            print("closed by cause: %s" % {k: v for k, v in st["closed"].items() if v})
            print("load: %s" % counts)
            for key in ("slots_free", "connections", "http_active", "fds"):
                if after[key] != base[key]:
                    print("LEAK: %s %s -> %s" % (key, base[key], after[key]))
                    ok = False
            growth = after["mem_alloc"] - base["mem_alloc"]
            print("mem_alloc growth over the run: %+d bytes" % growth)
            if growth > 4096:
                print("LEAK: mem_alloc grew by %d bytes" % growth)
                ok = False
            if curve:
                peak = max(r[1] for r in curve)
                print("peak mem_alloc under load: %d (baseline %d)" % (peak, base["mem_alloc"]))
            if wspeer.echo_roundtrip(fw.port, b"after soak") != b"after soak":
                ok = False
        else:
            ok = False
        if errors:
            print("errors (%d): %s" % (len(errors), errors[:10]))
            ok = False
    finally:
        fw.stop()
    print("server log: %s" % fw.log_path)
    print("soak: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
