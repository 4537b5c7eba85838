# wss and https: a second listener whose connections are TLS, within a budget. Loaded only
# when the server's settings name a tls_port: a server without TLS never imports it.
#
# A TLS connection borrows one of tls_max slots of its own (allocated at start-up beside the
# plain ones, returned to this pool by Server._teardown through slot.pool), so plain ws
# keeps every slot it had while TLS is saturated. Past the handshake the connection is an
# ordinary one: the slot's reader, ring, drain callback, pauses and teardown are the plain
# ones, reading and writing the SSL socket through compat's stream functions.
#
# The budget: an accepted socket waits, unwrapped, until its client sends something (up
# to tls_waiting at once); only then is it wrapped, which takes a free slot of the pool
# and tls_min_free bytes of heap (else a TLS alert and a closed socket, counted). So a
# client that connects and says nothing costs a socket, never an SSL context, and holds
# up nobody. The handshake ends with the first byte of the request (the 1-byte read drives
# it): late after tls_handshake_ms from accept, it is cut off. A handshake gone quiet (a
# browser's preconnect shakes hands and then sends no request) gives way to a client that
# is ready when no slot is free.
import asyncio
import errno
import select
import ssl

from ringws import compat
from ringws.compat import const, recv_into, send_from, sleep_ms, ticks_diff, ticks_ms, wait_readable
from ringws.connection import log_exc, received
from ringws.ring import RingBuffer

# idle: a silent client closed early to make room (a quiet handshake when no slot was
# free, the oldest waiting socket when the waiting list was full).
FAILURES = ("timeout", "closed", "protocol", "version", "not_tls", "memory", "idle")

_POLL_MS = const(10)  # how often they (and handshakes under way) are looked at
_POLLIN = select.POLLIN

# An entry, for an accepted socket until the request's first byte: [socket, peer address,
# accepted at, readable, last heard at, slot, SSL socket] (slot and SSL once wrapped).
_SOCK = const(0)
_REMOTE = const(1)
_T0 = const(2)
_READY = const(3)
_LAST = const(4)
_SLOT = const(5)
_SSL = const(6)

# A fatal alert, record version TLS 1.2: internal_error (80) for a refusal.
_ALERT_BUSY = b"\x15\x03\x03\x00\x02\x02\x50"

_NOT_TLS_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 56\r\nConnection: close\r\n\r\n400 Bad Request: this port speaks TLS (https:// wss://)\n"

# mbedTLS's codes for a client hello that offers only an old protocol version, and for
# input that is not a TLS record at all.
_BAD_VERSION = (-0x6E80, -0x7300)
_NOT_TLS = (-0x7200, -0x7080)


def check(cfg):
    """Fill and check the TLS settings of a server whose tls_port is set (config.py). The
    code is in tlscfg.py, loaded for that moment: a start-up's only use of it."""
    compat.use_once("tlscfg").check(cfg)


class TlsRing(RingBuffer):
    """A TLS connection's send ring. mbedTLS, told to wait (the socket is full), keeps the
    record it made and on the next write returns the length it is given: that write must
    ask for the same bytes. So the length first asked is kept until consume()."""

    asked = 0

    def readable(self):
        if not self.asked:
            self.asked = RingBuffer.readable(self)
        return self.asked

    def consume(self, n):
        self.asked = 0
        RingBuffer.consume(self, n)

    def clear(self):
        self.asked = 0
        RingBuffer.clear(self)


class Pool(list):
    """The free TLS slots. A slot comes back here from Server._teardown, which closed its
    SSL socket: after a TLS error that leaves the TCP socket open, so it is closed here."""

    def append(self, slot):
        raw = slot.raw
        if raw is not None:
            slot.raw = None
            _close(raw)
        super().append(slot)


class Tls:
    def __init__(self, srv):
        cfg = srv.cfg
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(_read(cfg["tls_cert"]), _read(cfg["tls_key"]))
        self.ctx = ctx
        n = cfg["tls_max"]
        self.slots = srv.slots[-n:]  # (slot.allocate_slots made them after the plain ones)
        self.free = Pool()
        for s in self.slots:
            s.raw = None
            s.pool = self.free
            self.free.append(s)
            s.ring = TlsRing(s.ring.buf)
            srv.free.remove(s)
        self.listener = None
        self.pollent = None
        self.task = None
        self.poller = None  # (made by start: it watches the listener and every entry)
        self.first = bytearray(1)
        self.waiting = []  # entries of accepted sockets not yet wrapped, oldest first
        self.shaking = []  # entries of the handshakes under way, each with its slot
        self.handshakes = 0
        self.handshake_ms = 0  # the last one's
        self.refused = {"busy": 0, "memory": 0}
        self.failed = {}
        for cause in FAILURES:
            self.failed[cause] = 0
        self.cfg_ms = cfg["tls_handshake_ms"]
        self.quiet_ms = self.cfg_ms // 5
        self.wait_max = cfg["tls_waiting"]

    def start(self, srv):
        # (its listener made by startstop.start, with the plain port's)
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(self.listener, _POLLIN)
        self.task = asyncio.create_task(accept_loop(srv, self))
        return self.task

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        # What waits is closed now: the loop, cancelled, does nothing more.
        for e in self.waiting:
            _drop(self, e)
        for e in self.shaking:
            _drop(self, e)
            self.free.append(e[_SLOT])
        self.waiting = []
        self.shaking = []
        if self.listener is not None:
            compat.drop_entry(self)
            _close(self.listener)
            self.listener = None
        self.poller = None

    def stats(self, srv, out):
        busy = len(self.slots) - len(self.free)
        out["slots_total"] -= len(self.slots)
        ws = 0
        for s in self.slots:
            if s.phase == 2:  # WS
                ws += 1
        out["http_active"] -= len(self.free)
        out["tls"] = {
            "port": srv.cfg["tls_port"],
            "max": len(self.slots),
            "active": busy,
            "connections": ws,
            "waiting": len(self.waiting),
            "handshakes": self.handshakes,
            "handshake_ms": self.handshake_ms,
            "refused": self.refused,
            "failed": self.failed,
        }


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _close(sock):
    if sock is None:
        return
    try:
        sock.close()
    except Exception:
        pass


def _drop(t, e):
    """Close an entry's sockets, off the poller first. Once: the entry forgets them."""
    sock = e[_SOCK]
    if sock is None:
        return
    e[_SOCK] = None
    try:
        t.poller.unregister(sock)
    except Exception:
        pass
    _close(e[_SSL])  # (closing the SSL socket after an error leaves the TCP one open)
    e[_SSL] = None
    _close(sock)


async def accept_loop(srv, t):
    # One task for the listener and for every socket between accept and the request's
    # first byte. With none of those it sleeps on the listener; otherwise it looks at them
    # all every _POLL_MS: an asyncio task waits on one socket only, and a task per client
    # would be an allocation per accept.
    pause = False
    while True:
        if pause:
            await sleep_ms(50)
        elif t.waiting or t.shaking:
            await sleep_ms(_POLL_MS)
        else:
            await wait_readable(t.listener, t)
        try:
            pause = step(srv, t, ticks_ms())
        except Exception as e:  # never the end of the TLS listener
            log_exc("tls", e)
            pause = True


def step(srv, t, now):
    """One look at every socket. True if accept() failed (the loop then pauses)."""
    listen = False
    for obj, _ in t.poller.ipoll(0):
        if obj is t.listener:
            listen = True
        for entries in (t.waiting, t.shaking):
            for e in entries:
                if e[_SOCK] is obj:
                    e[_READY] = True
    pause = accept_one(srv, t, now) if listen else False
    for entries in (t.waiting, t.shaking):
        # Past tls_handshake_ms since accept without the request's first byte: cut off.
        i = 0
        while i < len(entries):
            if ticks_diff(now, entries[i][_T0]) > t.cfg_ms:
                fail(t, entries.pop(i), "timeout")
            else:
                i += 1
    while True:
        for e in t.waiting:
            if e[_READY]:
                break
        else:
            break
        if not begin(srv, t, e, now):
            break  # (no slot yet: the others wait as well)
    hs = t.shaking
    i = 0
    while i < len(hs):
        if hs[i][_READY] and shake(srv, t, hs[i], now):
            del hs[i]  # served or failed
        else:
            i += 1
    return pause


def accept_one(srv, t, now):
    try:
        sock, remote = t.listener.accept()
    except OSError as e:
        if compat.errno_of(e) == errno.EAGAIN:  # (a spurious wake-up)
            return False
        srv.accept_errors += 1
        return True
    except MemoryError:
        srv.accept_errors += 1
        return True
    try:
        sock.setblocking(False)
        compat.set_nodelay(sock)
    except OSError:
        pass
    w = t.waiting
    if len(w) >= t.wait_max:
        # Full: the oldest makes room (a client that means it sends its hello at once).
        fail(t, w.pop(0), "idle")
    try:
        w.append([sock, remote, now, False, now, None, None])
        t.poller.register(sock, _POLLIN)
    except MemoryError:
        if w and w[-1][_SOCK] is sock:
            w.pop()
        _close(sock)
        srv.accept_errors += 1
        return True
    return False


def begin(srv, t, e, now):
    """A waiting client spoke (its hello, most likely): wrap it and start its handshake,
    or refuse it. False if it must wait for a slot held by a handshake under way."""
    if not t.free and t.shaking:
        # The handshake quiet the longest gives way, once it has been quiet for a while:
        # a client that has shaken hands and sends no request (a browser's preconnect).
        # (One that spoke since the last look is not quiet.)
        q = None
        for h in t.shaking:
            if not h[_READY] and (q is None or ticks_diff(h[_LAST], q[_LAST]) < 0):
                q = h
        if q is None or ticks_diff(now, q[_LAST]) < t.quiet_ms:
            return False
        t.shaking.remove(q)
        fail(t, q, "idle")
    t.waiting.remove(e)
    sock = e[_SOCK]
    cause = "busy" if not t.free else None
    if cause is None and compat.mem_free() < srv.cfg["tls_min_free"]:
        compat.collect()
        if compat.mem_free() < srv.cfg["tls_min_free"]:
            cause = "memory"
    if cause is not None:
        t.refused[cause] += 1
        # The hello read first: closing with it unread would reset the connection, and
        # the client could lose the alert.
        try:
            for _ in range(40):
                if not recv_into(sock, srv.scratch, len(srv.scratch)):
                    break
            send_from(sock, _ALERT_BUSY, 0, len(_ALERT_BUSY))
        except Exception:
            pass
        _drop(t, e)
        return True
    e[_SLOT] = t.free.pop()
    t.shaking.append(e)
    try:
        e[_SSL] = t.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except MemoryError:
        cause = "memory"
    except OSError as ex:
        cause = _cause(ex)
    if cause is not None:
        t.shaking.pop()
        fail(t, e, cause)
    return True


def fail(t, e, cause):
    t.failed[cause] += 1
    _drop(t, e)
    if e[_SLOT] is not None:
        t.free.append(e[_SLOT])


def shake(srv, t, e, now):
    """Drive a handshake with what its client sent (the 1-byte read does it). True once
    it ended: the slot serves the connection, or it failed (counted, closed)."""
    e[_READY] = False
    e[_LAST] = now
    ss = e[_SSL]
    try:
        n = recv_into(ss, t.first, 1)
        if n is None:
            return False
        if n == 0:
            raise OSError(errno.ECONNRESET)
    except MemoryError:
        fail(t, e, "memory")
        return True
    except OSError as ex:
        cause = _cause(ex)
        if cause == "not_tls":  # plain HTTP, most likely: say where to go
            try:
                send_from(e[_SOCK], _NOT_TLS_400, 0, len(_NOT_TLS_400))
            except Exception:
                pass
        fail(t, e, cause)
        return True
    slot = e[_SLOT]
    sock = e[_SOCK]
    try:
        t.poller.unregister(sock)
        srv._start(slot, ss, e[_REMOTE])
    except MemoryError:  # not even the slot's reader task fits
        slot.phase = 0  # (FREE)
        slot.sock = None
        fail(t, e, "memory")
        return True
    t.handshakes += 1
    t.handshake_ms = ticks_diff(now, e[_T0])
    slot.raw = sock  # what its tasks wait on (compat._park)
    slot.block[0] = t.first[0]  # the request's first byte, read by the handshake
    received(slot, 1)
    srv.bytes_in += 1
    return True


def _cause(e):
    code = compat.errno_of(e)
    if code in _BAD_VERSION:
        return "version"
    if code in _NOT_TLS:
        return "not_tls"
    if code in (errno.ECONNRESET, errno.ENOTCONN, errno.EBADF, 32):
        return "closed"
    return "protocol"
