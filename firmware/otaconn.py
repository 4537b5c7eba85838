# The per-request part of the /ota route (ota.py has the protocol): the token check, the
# hello (and op=update's reset into update mode), and the dispatch of plan, put and
# commit to their modules. Loaded by a request to /ota, dropped when it is done.
import gc
import json
import os


def check(h, req):
    """The bearer token of ota.token, else 401."""
    from hashlib import sha256

    # Digests compared, not the tokens: the time taken tells nothing about the token.
    scheme, _, given = (req.header("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or sha256(given.strip().encode()).digest() != h.token:
        from ringws.handshake import HttpError

        raise HttpError(401, "wrong or missing bearer token", (("WWW-Authenticate", "Bearer"),))


def start(h, conn):
    q = conn.query
    op = q[3:].split("&")[0] if q[:3] == "op=" else ""
    if op in ("plan", "put", "commit") and h.lean and not h.job:
        gc.collect()
        h.job = __import__("ota" + op).Job(h, conn)
        h.idle = 0
        return
    if op not in ("hello", "update"):
        conn.close(1008, "op=%s: not now" % op[:10])
        forget()
        return
    import sys

    keys = q[q.find("&k=") + 3:].split(",") if "&k=" in q else ()
    cfg = h.srv.cfg
    conn.send(json.dumps({
        "t": "hi", "version": h.version, "update": h.last, "trial": not h.confirmed,
        # mpy-cross numbers the native archs: 2 x64, 10 xtensawin, 11 rv32imc...
        "arch": str((getattr(sys.implementation, "_mpy", 0) >> 10) & 15),
        "confirm_ms": h.confirm_ms, "mode": "update" if h.lean else "app",
        "server": {k: cfg.get(k) for k in keys}}), True)
    if op == "update" and h.confirmed:
        try:
            os.mkdir(h.dot[:-1])
        except OSError:
            pass  # there already
        with open(h.dot + "update", "w"):
            pass
        print("ota: reset into update mode")
        h.srv.add_timer(300, reset)
    forget()


def close(h):
    h.job.abort()
    h.job = None
    forget()


def forget():
    """An update's code leaves the heap until the next request."""
    import sys

    for name in ("otaconn", "otaplan", "otaput", "otacommit", "otacore", "otatrial",
                 "otastart"):
        sys.modules.pop(name, None)
    gc.collect()


def reset(now=None):
    import machine

    machine.reset()  # on the unix port without the virtual board's shim: AttributeError
