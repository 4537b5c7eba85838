# The asyncio runtime's public side and a connection's life: the Server (routes, timers,
# broadcast, /stats, serve, shutdown), the accept loop, the start and the one end of every
# connection (_teardown), and the housekeeping task that times them all.
# The other rooms:
#   startstop.py   the server's own start and end (building it, the listener, shutdown),
#                  loaded for each and dropped after
#   connection.py  a connection's tasks: its reader (request head, HTTP answer or
#                  upgrade, the WebSocket loop) and the one write path with backpressure
#   slot.py        the preallocated connection, and which task owns each of its fields
#
# Each connection borrows a preallocated Slot (receive buffer, send ring, assembly buffer)
# and returns it in _teardown(), the only place a connection ends: its socket is closed
# there, once; its tasks are cancelled, on_close is called once, the slot is freed.
import asyncio
import errno
import socket  # (for the annotations)

from ringws import compat
from ringws.compat import const, drop_entry, recv_into, send_from, sleep_ms, ticks_diff, ticks_ms, park, use_once, wait_readable, wake
from ringws.frames import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY
from ringws.protocol import Protocol
from ringws.connection import FULL_503, OOM_503, add_http, drain, flush, log_exc, ping, reader

# The protocol's and the slot's constants as private const()s: MicroPython inlines a
# const() only inside its own module. host_tests/test_core_frames.py checks that they agree.
_OPEN = const(0)
_CLOSED = const(2)
_NO_STREAM = const(0)
_STREAM_PIECES = const(1)
_STREAM_WHOLE = const(2)
_WANT_DRAIN = const(0x100)  # flags' bits (slot.py)
_BATCHING = const(0x400)
_BROKEN = const(0x800)
_FREE = const(0)
_HTTP = const(1)
_WS = const(2)
_ANSWER = const(3)

COUNTERS = ("bytes_in", "bytes_out", "messages_in", "messages_out", "dropped", "closed",
            "rejected_full", "accept_errors", "http_requests")

# Prebuilt, so that answering needs no allocation when the heap has just run out.
_TIMEOUT_408 = b'HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 71\r\nConnection: close\r\n\r\n408 Request Timeout: request not complete within the handshake timeout\n'

# Builtins as module globals: a builtin is looked up in the module's globals first, and
# that miss probes the whole table at every call.
len = len
isinstance = isinstance
relay = Protocol.relay  # (functions: a method call on a slot first misses in its table)
send = Protocol.send


class Conn:
    """The application's handle on one WebSocket connection.

    A fresh object per connection: a handle kept after on_close is inert (sends return
    False) and can never reach the next connection that borrows the same slot.
    """

    # Defaults at class level, stored in the instance only when they differ: each
    # attribute an instance holds is an entry in its own table.
    data = None  # the application's
    dropped = 0
    query = ""
    subprotocol = None
    ping = ping  # ping(payload=b"") -> True/False; its pong: handler.on_pong(conn, rtt_ms)

    def __init__(self, server, slot, req, subprotocol, remote):
        # (The server is the slot's, s.srv, reached only while the handle is live: four
        # fields keep a plain handle's table at its smallest size but one.)
        self._slot = slot
        self.id = server.http_requests  # (counts every request: unique)
        self.path = req.path
        self.remote = remote
        if req.query:
            self.query = req.query
        if subprotocol is not None:
            self.subprotocol = subprotocol

    @property
    def open(self):
        s = self._slot
        return s is not None and s.state == _OPEN

    def send(self, data, text=False):
        s = self._slot
        if s is None:
            return False
        if isinstance(data, str):
            data = data.encode()
            text = True
        if send(s, data, text):
            srv = s.srv
            srv.messages_out += 1
            if not s.flags & _BATCHING:  # (the reader flushes a batch once)
                flush(srv, s)
            return True
        s.flags |= _WANT_DRAIN
        return False

    def send_fragment(self, data, text, first, last):
        s = self._slot
        if s is None:
            return False
        if s.send_fragment(data, text, first, last):
            if last:
                s.srv.messages_out += 1
            if not s.flags & _BATCHING:
                flush(s.srv, s)
            return True
        s.flags |= _WANT_DRAIN
        return False

    def relay(self, data):
        """Inside on_fragment: send this piece with the framing it arrived in (see
        Protocol.relay). Returns False when the ring has no room (arms on_writable)."""
        s = self._slot
        if s is None:
            return False
        if relay(s, data):
            srv = s.srv
            if s.ev_last and not s.out_left:
                srv.messages_out += 1
            if not s.flags & _BATCHING:
                flush(srv, s)
            return True
        s.flags |= _WANT_DRAIN
        return False

    def want_writable(self):
        s = self._slot
        if s is not None:
            s.flags |= _WANT_DRAIN  # the housekeeping tick fires on_writable if there is room

    def writable(self):
        s = self._slot
        return 0 if s is None else s.writable()

    def close(self, code=1000, reason=""):
        s = self._slot
        if s is not None:
            s.srv._close(s, code, reason, "normal")


class Server:
    Conn = Conn  # (for the reader, which makes a connection's handle)
    tls = None  # the TLS listener and its slots (ringws/tls.py), with a tls_port only
    # The fields startstop.build sets (annotations only: no code, no heap on MicroPython).
    cfg: dict
    platform = None  # (board.py on a board: status(), feed())
    routes: dict
    http_routes: dict
    static_routes: list
    timers: list
    access_check: object  # access_check(req, is_websocket) raises HttpError to refuse
    slots: list
    shared: object  # the shared receive buffer (a memoryview) or None
    pollent: object
    shared_owner: object
    free: list
    scratch: bytearray
    started: int
    listener: socket.socket  # (or None before serve() and after shutdown())
    _tasks: list
    _rejecting: int
    _gc_due: bool
    _done: object
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    dropped: int
    accept_errors: int
    rejected_full: int
    http_requests: int
    _stats: dict
    closed: dict
    slot_size: int

    def __init__(self, config=None, platform=None, slots=None):
        # Start-up code, loaded for this and dropped (startstop.build sets every field).
        use_once("startstop").build(self, config, platform, slots)

    def route(self, path, handler):
        self.routes[path] = handler
        handler._ringws_msg = hasattr(handler, "on_message")
        handler._ringws_stream = _NO_STREAM
        if hasattr(handler, "on_fragment"):
            handler._ringws_stream = _STREAM_WHOLE if getattr(handler, "whole_frames", False) else _STREAM_PIECES

    http = add_http  # http(path, func, methods=("GET",)): see connection.add_http

    def static(self, prefix, directory):
        self.static_routes.append((prefix, directory))

    def add_timer(self, period_ms, callback):
        self.timers.append([period_ms, callback, ticks_ms()])

    def count_drop(self, n=1):
        self.dropped += n

    def broadcast(self, data, text=False, path=None):
        """Queue data for every open connection (of path); skip and count full rings."""
        if isinstance(data, str):
            data = data.encode()
            text = True
        sent = 0
        for s in self.slots:
            c = s.conn
            if s.phase != _WS or s.state != _OPEN or (path is not None and c.path != path):
                continue
            if s.send(data, text):
                sent += 1
                self.messages_out += 1
                if not s.flags & _BATCHING:
                    flush(self, s)
            else:  # (a ring that stays full is closed by check_stuck)
                self.dropped += 1
                c.dropped += 1
        return sent

    def stats(self, collect=True):
        """The server's figures in the same dict at every call, made at start-up: a heap cut
        up by traffic may have no block for a new one. Copy it to keep a snapshot."""
        if collect:
            compat.collect()
        out = self._stats
        busy = len(self.slots) - len(self.free)
        ws = 0
        for s in self.slots:
            if s.phase == _WS:
                ws += 1
        out["mem_free"] = compat.mem_free()
        out["mem_alloc"] = compat.mem_alloc()
        out["connections"] = ws
        out["http_active"] = busy - ws
        out["slots_total"] = len(self.slots)
        out["slots_free"] = len(self.free)
        out["slot_bytes"] = self.slot_size
        for k in COUNTERS:
            out[k] = getattr(self, k)
        out["uptime_ms"] = ticks_diff(ticks_ms(), self.started)
        if self.platform is not None:
            try:
                out["board"] = self.platform.status()
            except MemoryError:
                pass  # the last status stays
            except Exception as e:  # a platform problem must not break /stats
                out["board"] = {"error": repr(e)}
        if self.tls is not None:
            self.tls.stats(self, out)
        if self.cfg["inflaters"]:
            out["deflate"] = getattr(__import__("ringws"), "inflaters", (0, 0, None))[2]  # (made last)
        return out

    async def serve(self, sock=None):
        """Accept and serve until shutdown(). sock: an already listening socket (tests)."""
        use_once("startstop").start(self, sock)
        # Parked until shutdown() wakes it: an asyncio.Event would load asyncio's event
        # module (about 1.3 KB of heap) for this one wait.
        self._done = asyncio.current_task()
        await park()

    async def shutdown(self, timeout_ms=None):
        """Close every connection with 1001, wait a bounded time, then force."""
        tasks = self._tasks  # (the accept loop, then housekeeping)
        if tasks:
            self._tasks = []
            compat.collect()  # (the code loads now: into a collected heap)
            try:
                await use_once("startstop").stop(self, tasks, timeout_ms)
            except MemoryError:  # no room for that code: every connection ends now, no 1001
                drop_entry(self)
                close_quietly(self.listener)
                if self.tls is not None:
                    self.tls.stop()
                self._end_all(tasks)
                wake(self._done)

    def _end_all(self, tasks):
        # Shutdown's last step: every connection ends now, every task stops.
        for s in self.slots:
            if s.phase != _FREE:
                self._teardown(s, "shutdown", s.gen)  # (cancels its tasks)
            if s.reader is not None:  # parked for a next connection
                s.reader.cancel()
                s.reader = None
        for t in tasks:
            t.cancel()

    async def _accept_loop(self):
        lsock = self.listener
        while True:  # (until shutdown cancels it)
            await wait_readable(lsock, self)
            try:
                sock, remote = lsock.accept()
            except OSError as e:
                # EAGAIN (spurious wake-up), EMFILE, ECONNABORTED...: never ends the loop.
                if compat.errno_of(e) != errno.EAGAIN:
                    self.accept_errors += 1
                    await sleep_ms(50)
                continue
            except MemoryError:
                # Not even the socket object fits: memory comes back as connections end.
                self.accept_errors += 1
                self.closed["memory"] += 1
                await sleep_ms(50)
                continue
            try:
                sock.setblocking(False)
                compat.set_nodelay(sock)
            except OSError:
                pass
            try:
                if not self.free:
                    self._refuse(sock)
                    continue
                slot = self.free.pop()
                try:
                    self._start(slot, sock, remote)
                except MemoryError:
                    # Not even the reader task fits: the slot back, the prebuilt 503.
                    slot.phase = _FREE
                    slot.sock = None
                    self.free.append(slot)
                    raise
            except MemoryError:
                self.closed["memory"] += 1
                try:
                    send_from(sock, OOM_503, 0, len(OOM_503))
                except Exception:
                    pass
                close_quietly(sock)

    def _refuse(self, sock):
        # No slot: answer 503 without borrowing one. A few refusals at a time may wait a
        # moment for the request (closing with unread data would reset the connection and
        # could lose the 503); beyond that the socket is closed at once.
        self.rejected_full += 1
        if self._rejecting >= self.cfg["max_rejecting"]:
            close_quietly(sock)
            return
        self._rejecting += 1
        try:
            asyncio.create_task(self._refuse_task(sock))
        except MemoryError:
            self._rejecting -= 1
            raise

    async def _refuse_task(self, sock):
        # Up to 200 ms for the request, asked every 20 ms: a socket about to be closed
        # never goes on the poller, and no wait_for task is made for it.
        try:
            for _ in range(10):
                if recv_into(sock, self.scratch, len(self.scratch)) is not None:
                    break
                await sleep_ms(20)
        except Exception:  # reset: answer anyway
            pass
        try:
            send_from(sock, FULL_503, 0, len(FULL_503))
        except Exception:
            pass
        finally:
            close_quietly(sock)
            self._rejecting -= 1

    def _start(self, slot, sock, remote):
        slot.gen += 1
        slot.phase = _HTTP
        slot.sock = sock
        slot.cause = None
        slot.t_phase = ticks_ms()
        slot.last_rx = slot.t_phase
        slot.stuck_at = 0
        slot.reset()  # (flags too)
        slot.conn = remote  # until the upgrade makes the Conn
        # The slot's reader task serves one connection after another (see connection.py):
        # a task per connection would be a large allocation at every accept, and a finished
        # task can stay reachable through MicroPython's task queue. A slot gets its task at
        # its first connection, a new one only after a teardown cancelled the last one.
        if slot.reader is None:
            slot.reader = asyncio.create_task(reader(self, slot))
        else:
            wake(slot.reader)

    def _close(self, slot, code, reason, cause):
        """Start a server-side close: close frame now, teardown when answered or late."""
        if slot.phase != _WS:
            if slot.phase != _FREE:
                self._teardown(slot, cause, slot.gen)
            return
        if slot.close(code, reason):
            slot.cause = cause
            slot.t_phase = ticks_ms()
            if not slot.flags & _BATCHING:
                flush(self, slot)
        elif slot.state == _CLOSED and not slot.cause:
            slot.cause = cause

    def _teardown(self, slot, cause, gen):
        """The one way a connection ends. Idempotent per connection (gen)."""
        if slot.gen != gen or slot.phase == _FREE:
            return
        slot.gen += 1
        phase = slot.phase
        slot.phase = _FREE
        cur = asyncio.current_task()
        for task in (slot.reader, slot.writer):
            if task is not None and task is not cur:
                task.cancel()
        if slot.reader is not cur:
            slot.reader = None  # cancelled: the next connection gets a new one
        # (else the reader itself is ending its connection: it parks for the next one)
        slot.writer = None
        drop_entry(slot)
        close_quietly(slot.sock)
        slot.sock = None
        conn = slot.conn if phase == _WS else None  # (else the peer's address, or None)
        handler = slot.handler
        slot.conn = None
        slot.handler = None
        proto = slot
        code = proto.close_code
        reason = proto.close_reason
        if cause == "peer_reset" or (proto.state == _OPEN and phase == _WS):
            code = CLOSE_ABNORMAL
            reason = ""
        if self.shared_owner is slot:
            self.shared_owner = None
        proto.reset()
        self.closed[cause] = self.closed.get(cause, 0) + 1
        (self.free if slot.pool is None else slot.pool).append(slot)
        if conn is not None:
            conn._slot = None
            fn = getattr(handler, "on_close", None)
            if fn is not None:
                try:
                    fn(conn, code, reason)
                except Exception as e:
                    log_exc("on_close", e)
        if self.cfg["gc_collect"]:
            self._gc_due = True


def close_quietly(sock):
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


# -- timers: one task for every connection's deadlines, the application's timers, the
# watchdog and the collection after teardowns; it never waits on a socket.

async def housekeeping(srv):
    tick = srv.cfg["tick_ms"]
    while True:
        await sleep_ms(tick)
        try:
            tick_once(srv, ticks_ms())
        except Exception as e:
            log_exc("housekeeping", e)


def tick_once(srv, now):
    cfg = srv.cfg
    for s in srv.slots:
        phase = s.phase
        if phase == _HTTP:
            if ticks_diff(now, s.t_phase) > cfg["handshake_timeout_ms"]:
                # The request head is late. Best effort and prebuilt: the 408 goes
                # out if the socket takes it now.
                try:
                    send_from(s.sock, _TIMEOUT_408, 0, len(_TIMEOUT_408))
                except OSError:
                    pass
                srv._teardown(s, "handshake_timeout", s.gen)
        elif phase == _WS:
            _check_ws(srv, s, now, cfg)
        elif phase == _ANSWER:
            check_stuck(srv, s, now, cfg["stuck_timeout_ms"])
    for timer in srv.timers:
        if ticks_diff(now, timer[2]) >= timer[0]:
            timer[2] = now
            try:
                timer[1](now)
            except Exception as e:
                log_exc("timer", e)
    feed = getattr(srv.platform, "feed", None)
    if feed is not None:
        feed()
    if srv._gc_due:
        srv._gc_due = False
        compat.collect()


def _check_ws(srv, s, now, cfg):
    if s.flags & _BROKEN:
        srv._teardown(s, s.cause or "peer_reset", s.gen)
        return
    if s.flags & _WANT_DRAIN and s.writer is None and not s.flags & _BATCHING:
        flush(srv, s)  # want_writable() with room already: fire on_writable now
        drain(srv, s)
    if s.state != _OPEN:
        if s.t_phase and ticks_diff(now, s.t_phase) > cfg["close_timeout_ms"]:
            cause = s.cause if s.cause and s.cause != "normal" else "close_timeout"
            srv._teardown(s, cause, s.gen)
        return
    if check_stuck(srv, s, now, cfg["stuck_timeout_ms"]):
        return
    quiet = ticks_diff(now, s.last_rx)
    idle = cfg["idle_timeout_ms"]
    if idle and quiet > idle:
        srv._close(s, CLOSE_GOING_AWAY, "idle timeout", "idle_timeout")
        return
    if s.t_phase:  # (open: the keepalive ping's time)
        if ticks_diff(now, s.t_phase) > cfg["pong_timeout_ms"]:
            srv._close(s, CLOSE_INTERNAL, "keepalive ping timeout", "ping_timeout")
    elif cfg["ping_interval_ms"] and quiet > cfg["ping_interval_ms"]:
        if s.send_ping(b"ringws"):
            s.t_phase = now or 1
            if not s.flags & _BATCHING:
                flush(srv, s)


def check_stuck(srv, s, now, limit):
    """Output waiting and not one byte taken by the socket for `limit` ms, whoever queued
    it: a WebSocket is closed with 1008, an HTTP answer ended. A wait for writability that
    ends (writer, pause, http.send) sets stuck_at back to 0; the first tick that finds
    output waiting after that starts the clock. True if the connection was closed."""
    if not limit or not (s.ring.used or s.tx_end):
        s.stuck_at = 0
        return False
    if not s.stuck_at:
        s.stuck_at = now or 1
        return False
    if ticks_diff(now, s.stuck_at) <= limit:
        return False
    if s.phase == _WS:
        srv._close(s, CLOSE_POLICY, "too slow", "too_slow")
    else:  # an HTTP answer: no frame to say why
        srv._teardown(s, "too_slow", s.gen)
    return True
