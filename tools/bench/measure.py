"""Memory, churn and capacity measurements against one running target (targets.Server)."""
import socket
import struct
import time

import client
from targets import Server

ECHO_16 = client.masked_frame(16)[0]


def mem(srv):
    return client.ctl(srv.ctl_port, "mem")


def idle_heap(srv, counts=(1, 4, 8)):
    """Live heap (after gc.collect) with 0 and n idle connections; bytes per connection."""
    t = srv.target
    base = mem(srv)["alloc"]
    out = {"base": base, "per_conn": {}}
    for n in counts:
        conns = []
        try:
            conns = client.open_conns(srv.port, t.path, n, len(ECHO_16))
            # One echo each, so every connection is fully set up, not just accepted.
            client.run_load(srv.port, t.path, 16, 1, n, 5, warmup=0, max_messages=n,
                            conns=conns, latency=False)
            a = mem(srv)["alloc"]
            out["per_conn"][n] = (a - base) / n
        except (OSError, client.HandshakeError) as e:
            out["per_conn"][n] = None
            out.setdefault("errors", []).append("%d conns: %s" % (n, e))
        finally:
            client.close_conns(conns, t.path)
        time.sleep(0.05)
    return out


def alloc_per_message(srv, size, n1, n2):
    """Bytes allocated inside the server per echoed message, collector paused.

    Two runs of n1 and n2 messages on one open connection; the slope removes the fixed
    cost of the control commands themselves. (Errors are the caller's: run.guarded.)
    """
    t = srv.target
    conns = []
    try:
        conns = client.open_conns(srv.port, t.path, 1, len(client.masked_frame(size)[0]))
        # Warm up: first messages may allocate lazily (buffers, caches).
        client.run_load(srv.port, t.path, size, 1, 1, 5, warmup=0, max_messages=5,
                        conns=conns, latency=False)
        # A server may collect once after a connection ends, and gc.disable() does not
        # stop an explicit gc.collect(): ringws does it at its next 100 ms tick after
        # the previous measurement's connection closed. Landing in the first window, it
        # freed about 540 B there and put 2.7 B on every message of the slope.
        time.sleep(0.3)
        deltas = []
        for n in (n1, n2):
            client.ctl(srv.ctl_port, "off")
            r = client.run_load(srv.port, t.path, size, 1, 1, 10, warmup=0, max_messages=n,
                                conns=conns, latency=False)
            d = client.ctl(srv.ctl_port, "on")["delta"]
            if r["total"] < n:
                return {"error": "echoed %d of %d (%s)" % (r["total"], n,
                                                            "; ".join(r["errors"][:1]))}
            deltas.append(d)
        return {"bytes_per_msg": (deltas[1] - deltas[0]) / (n2 - n1), "deltas": deltas,
                "n": [n1, n2]}
    finally:
        client.close_conns(conns, t.path)


def alloc_per_frame_sent(srv, n1=10, n2=40):
    """Bytes allocated per frame sent through the server's own send path (conn.send),
    collector paused. Needs a target-specific control command: only ringws has one
    (servers/ringws_bench_main.py); the peers' send paths cannot be driven from outside
    without changing them. Slope between n1 and n2 frames, so fixed costs cancel."""
    t = srv.target
    conns = client.open_conns(srv.port, t.path, 1, 18)
    try:
        runs = []
        for n in (n1, n2):
            r = client.ctl(srv.ctl_port, "sendn %d" % n)
            got = 0
            c = conns[0]
            c.sock.settimeout(2)
            while got < r["sent"]:  # read them, so the next run starts with an empty ring
                data = c.sock.recv(65536)
                if not data:
                    break
                got += c.counter.feed(data)
            if got < r["sent"]:
                return {"error": "sent %d frames, %d arrived" % (r["sent"], got)}
            runs.append(r)
        if runs[1]["sent"] == runs[0]["sent"]:
            return {"error": "the ring took no more frames in the larger run"}
        return {"bytes_per_frame": (runs[1]["delta"] - runs[0]["delta"])
                / (runs[1]["sent"] - runs[0]["sent"]), "runs": runs}
    finally:
        client.close_conns(conns, t.path)


def alloc_idle(srv, seconds=1.0):
    """Bytes allocated per second by an idle server with the collector paused.
    The control port's own off/on round trip allocates 100-300 B, not the same each
    time: the larger of two calibrations is subtracted, and the window is long enough
    (1 s) that what is left is the server's. (Errors are the caller's: run.guarded.)"""
    client.ctl(srv.ctl_port, "off")
    time.sleep(seconds)
    d = client.ctl(srv.ctl_port, "on")["delta"]
    d0 = 0
    for _ in range(2):
        client.ctl(srv.ctl_port, "off")
        d0 = max(d0, client.ctl(srv.ctl_port, "on")["delta"])
    return max(0, d - d0) / seconds


def never_reader(srv, seconds, interval=0.25, size=1024):
    """One client sends 1 KiB messages as fast as TCP lets it and never reads."""
    t = srv.target
    frame = client.masked_frame(size)[0]
    burst = frame * 16
    try:
        s, _rest = client.connect(srv.port, t.path)
    except (OSError, client.HandshakeError) as e:
        return {"series": [], "client_sent_bytes": 0, "alive": srv.alive(),
                "error": "connect: %s" % e}
    s.setblocking(False)
    sent = 0
    pending = burst
    series = []
    t0 = time.monotonic()
    next_sample = t0
    err = None
    while True:
        now = time.monotonic()
        if now - t0 > seconds:
            break
        if now >= next_sample:
            try:
                series.append((round(now - t0, 2), mem(srv)["alloc"]))
            except (OSError, ValueError) as e:
                err = "control port: %s" % e
                break
            next_sample += interval
        try:
            # A partial send keeps its remainder: starting a new burst mid-frame would
            # corrupt the stream (the server rightly fails the connection with 1002 and
            # then drains its input, which looks like "accepting" hundreds of MB).
            n = s.send(pending)
            sent += n
            pending = pending[n:] or burst
        except BlockingIOError:
            time.sleep(0.01)
        except OSError as e:
            err = "send: %s" % e
            break
    stats = http_stats(srv) if t.name.startswith("ringws") else None
    _rst(s)
    allocs = [a for _, a in series]
    out = {"series": series, "client_sent_bytes": sent, "alive": srv.alive(), "error": err,
           "stats": stats}
    if allocs:
        out.update(first=allocs[0], max=max(allocs), last=allocs[-1],
                   growth=allocs[-1] - allocs[0])
    return out


def http_stats(srv):
    """ringws's own /stats (JSON), or None."""
    import json

    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data.partition(b"\r\n\r\n")[2])
    except (OSError, ValueError):
        return None


def _rst(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def churn(srv, cycles):
    """Connect (and upgrade), then close: even cycles cleanly, odd cycles with a TCP RST."""
    t = srv.target
    time.sleep(0.1)
    before = mem(srv)["alloc"]
    fds0 = srv.fds()
    fails = 0
    reasons = {}
    t0 = time.monotonic()
    for i in range(cycles):
        try:
            s, rest = client.connect(srv.port, t.path, timeout=3)
        except (OSError, client.HandshakeError) as e:
            fails += 1
            reasons[str(e)[:60]] = reasons.get(str(e)[:60], 0) + 1
            if not srv.alive():
                break
            continue
        if i & 1:
            _rst(s)
            continue
        try:
            if t.path is None:
                s.sendall(ECHO_16)
                s.recv(64)
            else:
                # Clean close: our close frame, wait for the server's, then FIN.
                s.sendall(b"\x88\x80" + client.MASK)
                s.settimeout(1)
                c = client.FrameCounter()
                while not c.closed:
                    d = s.recv(4096)
                    if not d:
                        break
                    c.feed(rest + d)
                    rest = b""
        except OSError:
            pass
        s.close()
    secs = time.monotonic() - t0
    # Let the server finish its teardowns (close timeouts, lazy reaping).
    deadline = time.monotonic() + 3
    fds = srv.fds()
    while fds0 is not None and fds is not None and fds > fds0 and time.monotonic() < deadline:
        time.sleep(0.1)
        fds = srv.fds()
    out = {"cycles": cycles, "failed": fails, "reasons": reasons, "seconds": secs,
           "alive": srv.alive()}
    if srv.alive():
        after = mem(srv)["alloc"]
        out.update(heap_before=before, heap_after=after, leaked_heap=after - before,
                   fds_before=fds0, fds_after=fds, leaked_fds=(fds - fds0)
                   if fds is not None and fds0 is not None else None)
    return out


def capacity(srv, cap, timeout=3.0):
    """Add clients step by step; every client echoes one message per step.

    Returns the most clients that all echoed, and why the next step failed.
    """
    t = srv.target
    conns = []
    good = 0
    reason = "reached the bench's cap of %d" % cap
    n = 0
    while n < cap:
        n = n + 1 if n < 16 else n + 4 if n < 64 else n + 16
        n = min(n, cap)
        try:
            conns += client.open_conns(srv.port, t.path, n - len(conns), len(ECHO_16))
        except (OSError, client.HandshakeError) as e:
            reason = "connection %d: %s" % (len(conns) + 1, e)
            break
        for c in conns:
            c.sock.setblocking(True)
        r = client.run_load(srv.port, t.path, 16, 1, len(conns), timeout, warmup=0,
                            max_messages=len(conns), conns=conns, latency=False)
        if r["total"] < len(conns) or r["errors"]:
            reason = "%d clients: %d echoed (%s)" % (len(conns), r["total"],
                                                     "; ".join(r["errors"][:1]) or "timeout")
            break
        if not srv.alive():
            reason = "server died at %d clients" % len(conns)
            break
        good = len(conns)
    client.close_conns(conns, t.path)
    if not srv.alive():
        reason += " | server exited: " + srv.tail(1)
    return {"clients": good, "limit": reason}


def start(target, heap, max_connections=None, tag="", ctl=True):
    """A started Server, or (None, reason)."""
    srv = Server(target, heap, max_connections, tag, ctl)
    if not srv.ok:
        reason = srv.tail(2) or "did not open its ports"
        srv.stop()
        return None, reason
    return srv, None
