# wss and https: a second listener whose connections are TLS, within a budget. Loaded only
# when the server's settings name a tls_port: a server without TLS never imports it.
#
# A TLS connection borrows one of tls_max slots of its own (allocated at start-up beside the
# plain ones, returned to this pool by Server._teardown through slot.pool), so plain ws
# keeps every slot it had while TLS is saturated. Past the handshake the connection is an
# ordinary one: the slot's reader, ring, drain callback, pauses and teardown are the plain
# ones, reading and writing the SSL socket through compat's stream functions.
#
# The budget: one handshake at a time (the accept loop runs it before it accepts again), a
# free slot of the pool and tls_min_free bytes of heap before each one; otherwise the client
# gets a TLS alert and a closed socket, counted. A handshake ends with the first byte of the
# request (the 1-byte read drives it): late after tls_handshake_ms, it is cut off.
import asyncio
import errno
import ssl

from ringws import compat
from ringws.compat import recv_into, send_from, sleep_ms, ticks_diff, ticks_ms, wait_readable
from ringws.connection import log_exc, received
from ringws.ring import RingBuffer

DEFAULTS = {
    "tls_port": 0,  # 0: no TLS
    "tls_max": 1,  # TLS connections at once (WebSocket or HTTP), each with a slot of its own
    "tls_cert": "tls/cert.der",  # DER, as tools/build.py deploys them
    "tls_key": "tls/key.der",
    "tls_handshake_ms": 5000,  # from accept to the request's first byte
    # Heap a handshake may need: checked (after a collection) before each one. Where
    # mbedTLS allocates on the Python heap this is its share, elsewhere a safety margin.
    "tls_min_free": 8192,
}

FAILURES = ("timeout", "closed", "protocol", "version", "not_tls", "memory")

# A fatal alert, record version TLS 1.2: internal_error (80) for a refusal.
_ALERT_BUSY = b"\x15\x03\x03\x00\x02\x02\x50"

_NOT_TLS_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 56\r\nConnection: close\r\n\r\n400 Bad Request: this port speaks TLS (https:// wss://)\n"

# mbedTLS's codes for a client hello that offers only an old protocol version, and for
# input that is not a TLS record at all.
_BAD_VERSION = (-0x6E80, -0x7300)
_NOT_TLS = (-0x7200, -0x7080)


def check(cfg):
    """Fill and check the TLS settings of a server whose tls_port is set (config.py)."""
    from ringws.config import DEFAULTS as PLAIN

    for key in cfg:
        if key not in PLAIN and key not in DEFAULTS:
            raise ValueError("unknown server setting: %s" % key)
    for key, value in DEFAULTS.items():
        cfg.setdefault(key, value)
    for key in ("tls_port", "tls_max", "tls_handshake_ms", "tls_min_free"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("server setting %s must be a non-negative integer" % key)
    if cfg["tls_max"] < 1:
        raise ValueError("server setting tls_max must be at least 1 with a tls_port")
    if cfg["tls_port"] == cfg["port"]:
        raise ValueError("server setting tls_port must differ from port")


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
        self.first = bytearray(1)
        self.shaking = None  # (socket, started) of the handshake under way
        self.handshakes = 0
        self.handshake_ms = 0  # the last one's
        self.refused = {"busy": 0, "memory": 0}
        self.failed = {}
        for cause in FAILURES:
            self.failed[cause] = 0
        self.cfg_ms = cfg["tls_handshake_ms"]
        srv.add_timer(cfg["tick_ms"], self.tick)

    def start(self, srv):
        # (its listener made by startstop.start, with the plain port's)
        self.task = asyncio.create_task(accept_loop(srv, self))
        return self.task

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.listener is not None:
            compat.drop_entry(self)
            _close(self.listener)
            self.listener = None

    def tick(self, now):
        # A handshake past its deadline: cancel the accept loop's wait (it counts the
        # timeout and goes on).
        h = self.shaking
        if h is not None and ticks_diff(now, h[1]) > self.cfg_ms and self.task is not None:
            self.shaking = None
            self.task.cancel()

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


async def accept_loop(srv, t):
    lsock = t.listener
    while True:
        try:
            await wait_readable(lsock, t)
            sock, remote = lsock.accept()
        except asyncio.CancelledError:
            if t.task is None:
                raise  # stop()
            continue  # a late cancel from tick(): nothing to time now
        except OSError as e:
            if compat.errno_of(e) != errno.EAGAIN:  # (EAGAIN: a spurious wake-up)
                srv.accept_errors += 1
                await sleep_ms(50)
            continue
        except MemoryError:
            srv.accept_errors += 1
            await sleep_ms(50)
            continue
        try:
            await serve_one(srv, t, sock, remote)
        except asyncio.CancelledError:
            _close(sock)
            if t.task is None:
                raise
        except Exception as e:  # never the end of the TLS listener
            _close(sock)
            log_exc("tls", e)
        t.shaking = None


async def serve_one(srv, t, sock, remote):
    try:
        sock.setblocking(False)
        compat.set_nodelay(sock)
    except OSError:
        pass
    cause = admit(srv, t)
    if cause is not None:
        t.refused[cause] += 1
        await refuse(srv, sock)
        return
    slot = t.free.pop()
    try:
        cause = await handshake(srv, t, slot, sock, remote)
    except asyncio.CancelledError:
        if t.task is None:
            t.free.append(slot)
            raise
        cause = "timeout"  # tick() found it late
    if cause is not None:
        t.failed[cause] += 1
        t.free.append(slot)


def admit(srv, t):
    """None if a handshake may start now, else why not."""
    if not t.free:
        return "busy"
    if compat.mem_free() < srv.cfg["tls_min_free"]:
        compat.collect()
        if compat.mem_free() < srv.cfg["tls_min_free"]:
            return "memory"
    return None


async def refuse(srv, sock):
    # A moment for the client's hello first: closing with it unread would reset the
    # connection, and the client could lose the alert.
    try:
        for _ in range(5):
            if recv_into(sock, srv.scratch, len(srv.scratch)) is not None:
                break
            await sleep_ms(20)
        send_from(sock, _ALERT_BUSY, 0, len(_ALERT_BUSY))
    except Exception:
        pass
    _close(sock)


async def handshake(srv, t, slot, sock, remote):
    """Wrap and shake hands; on success the slot serves the connection. Returns None or
    the cause of the failure (the socket is then closed)."""
    t.shaking = (sock, ticks_ms())
    ss = None
    try:
        ss = t.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        while True:
            n = recv_into(ss, t.first, 1)
            if n:
                break
            if n == 0:
                raise OSError(errno.ECONNRESET)
            await wait_readable(sock)  # (the server's flight fits the socket: no write wait)
    except MemoryError:
        cause = "memory"
    except OSError as e:
        cause = _cause(e)
        if cause == "not_tls":  # plain HTTP, most likely: say where to go
            try:
                send_from(sock, _NOT_TLS_400, 0, len(_NOT_TLS_400))
            except Exception:
                pass
    except BaseException:
        _close(ss)
        _close(sock)
        raise
    else:
        cause = None
    if cause is not None:
        _close(ss)
        _close(sock)  # (closing the SSL socket after an error leaves it open)
        return cause
    t.handshakes += 1
    t.handshake_ms = ticks_diff(ticks_ms(), t.shaking[1])
    try:
        srv._start(slot, ss, remote)
    except MemoryError:  # not even the slot's reader task fits
        slot.phase = 0  # (FREE)
        slot.sock = None
        _close(ss)
        _close(sock)
        return "memory"
    slot.raw = sock  # what its tasks wait on (compat._park)
    slot.block[0] = t.first[0]  # the request's first byte, read by the handshake
    received(slot, 1)
    srv.bytes_in += 1
    return None


def _cause(e):
    code = compat.errno_of(e)
    if code in _BAD_VERSION:
        return "version"
    if code in _NOT_TLS:
        return "not_tls"
    if code in (errno.ECONNRESET, errno.ENOTCONN, errno.EBADF, 32):
        return "closed"
    return "protocol"
