# The asyncio runtime: listener, slot pool, per-connection reader and writer tasks, one
# housekeeping task for every timer, and the single teardown path.
#
# Each connection borrows a preallocated Slot (receive buffer, send ring, assembly buffer)
# and returns it in _teardown(), which is the only place a connection ends: the socket is
# closed once, its tasks are cancelled, on_close is called once, the slot is freed.
import asyncio
import errno
import socket

from ringws import compat, handshake
from ringws.compat import (
    const,
    drop_entry,
    park,
    recv_into,
    send_from,
    sleep_ms,
    ticks_diff,
    ticks_ms,
    wait_for_ms,
    wait_readable,
    wait_writable,
    wake,
)
from ringws.kernels import move
from ringws.frames import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY
from ringws.protocol import consume, next_event, recv_window, relay, send

# The protocol's and the slot's constants, repeated as private const()s: MicroPython
# inlines a const() only inside its own module, and an imported name is a global looked
# up at every use (the reader loop compares events per message).
# host_tests/test_core_frames.py checks that they agree.
_EV_NONE = const(0)
_EV_MESSAGE = const(1)
_EV_FRAGMENT = const(2)
_EV_CLOSE = const(3)
_EV_ERROR = const(4)
_EV_BLOCKED = const(5)
_OPEN = const(0)
_CLOSED = const(2)
_NO_STREAM = const(0)
_STREAM_PIECES = const(1)
_STREAM_WHOLE = const(2)
_FREE = const(0)
_HTTP = const(1)
_WS = const(2)
_ANSWER = const(3)

# errno numbers differ between the unix port and the ESP32: compare by name. MicroPython's
# errno module has no EPIPE, which a write to a peer that has gone raises on Linux; it is
# 32 there and in lwIP's errno.h alike.
_RESET_ERRNOS = tuple(
    getattr(errno, name)
    for name in ("ECONNRESET", "ECONNABORTED", "ENOTCONN", "ETIMEDOUT", "EBADF")
    if hasattr(errno, name)
) + (getattr(errno, "EPIPE", 32),)

CLOSE_CAUSES = (
    "normal",  # close handshake completed (either side started it)
    "peer_reset",  # TCP reset or EOF without a close handshake
    "protocol",  # the peer broke RFC 6455 (1002, 1007, 1009)
    "handshake_timeout",
    "idle_timeout",
    "ping_timeout",
    "close_timeout",
    "too_slow",
    "memory",
    "app_error",
    "shutdown",
    "http",  # an HTTP request answered (page, /stats, an error status)
)

# Builtins as module globals. MicroPython looks a builtin up in the module's globals
# first, and that miss probes the whole, nearly full table on every call; a global hit
# is cheap (and cached in the bytecode on ports that enable it).
len = len
isinstance = isinstance


# Prebuilt, so that answering needs no allocation when the heap has just run out.
_TIMEOUT_408 = b'HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 71\r\nConnection: close\r\n\r\n408 Request Timeout: request not complete within the handshake timeout\n'
_FULL_503 = b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 55\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable: all connection slots are busy\n'
_OOM_503 = b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable: out of memory, retry\n'


class Conn:
    """The application's handle on one WebSocket connection.

    A fresh object per connection: a handle kept after on_close is inert (sends return
    False) and can never reach the next connection that borrows the same slot.
    """

    # Defaults at class level, stored in the instance only when they differ: each
    # attribute an instance holds is an entry in its own table, which MicroPython grows
    # 2, 4, 6, 8, 10 (16 B an entry on x86-64, 8 on the ESP32).
    data = None  # the application's
    dropped = 0
    query = ""
    subprotocol = None

    def __init__(self, server, slot, req, subprotocol, remote):
        self._server = server
        self._slot = slot
        self.id = server._next_id
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
            srv = self._server
            srv.messages_out += 1
            if not s.batching:  # Server._sent, inline: per message (about 700 instructions)
                srv._push(s)
            return True
        s.want_drain = True
        return False

    def send_fragment(self, data, text, first, last):
        s = self._slot
        if s is None:
            return False
        if s.send_fragment(data, text, first, last):
            if last:
                self._server.messages_out += 1
            self._server._sent(s)
            return True
        s.want_drain = True
        return False

    def relay(self, data):
        """Inside on_fragment: send this piece with the framing it arrived in (see
        Protocol.relay). Returns False when the ring has no room (arms on_writable)."""
        s = self._slot
        if s is None:
            return False
        if relay(s, data):
            srv = self._server
            if s.ev_last and not s.out_left:
                srv.messages_out += 1
            if not s.batching:  # Server._sent, inline (see send)
                srv._push(s)
            return True
        s.want_drain = True
        return False

    def want_writable(self):
        s = self._slot
        if s is not None:
            s.want_drain = True  # the housekeeping tick fires on_writable if there is room

    def writable(self):
        s = self._slot
        return 0 if s is None else s.writable()

    def close(self, code=1000, reason=""):
        s = self._slot
        if s is not None:
            self._server._close(s, code, reason, "normal")


class Server:
    def __init__(self, config=None, platform=None, slots=None):
        # Imported here, not at the top: ringws.config is start-up code that main.py
        # drops from the heap once the server is built (launch.forget).
        from ringws.config import server_config, slot_bytes

        cfg = server_config(config)
        self.cfg = cfg
        self.platform = platform
        self.routes = {}
        self.http_routes = {}
        self.static_routes = []
        self.timers = []
        # access_check(req, is_websocket): raise handshake.HttpError to refuse a request.
        self.access_check = None
        # The whole memory budget is taken once, here or (on the board) by main.py before
        # the rest of the firmware is imported.
        if slots is None:
            from ringws.slot import allocate_slots  # start-up code, like config

            slots = allocate_slots(cfg)
        self.slots, self.shared = slots
        self.pollent = None  # the listener's poller entry, kept between accepts
        self.shared_owner = None  # the slot the shared receive buffer is lent to
        self.free = list(self.slots)
        self.scratch = bytearray(64)  # for draining requests we refuse with 503
        self._next_id = 0
        self.started = ticks_ms()
        self.listener = None
        self.running = False
        self._tasks = []
        self._rejecting = 0
        self._gc_due = False
        self._done = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0
        self.accept_errors = 0
        self.rejected_full = 0
        self.http_requests = 0
        self.closed = {}
        for cause in CLOSE_CAUSES:
            self.closed[cause] = 0
        self.slot_size = slot_bytes(cfg)  # (launch.start prints the budget)

    # -- application API ------------------------------------------------------------

    def route(self, path, handler):
        self.routes[path] = handler
        handler._ringws_msg = hasattr(handler, "on_message")
        handler._ringws_stream = _NO_STREAM
        if hasattr(handler, "on_fragment"):
            handler._ringws_stream = _STREAM_WHOLE if getattr(handler, "whole_frames", False) else _STREAM_PIECES

    def set_access(self, check):
        """check(req, is_websocket) raises handshake.HttpError to refuse a request."""
        self.access_check = check

    def http(self, path, func):
        self.http_routes[path] = func

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
            if c is None or s.state != _OPEN or (path is not None and c.path != path):
                continue
            if s.send(data, text):
                sent += 1
                self.messages_out += 1
                self._sent(s)
            else:  # (a ring that stays full is closed by housekeeping: _check_stuck)
                self.dropped += 1
                c.dropped += 1
        return sent

    def stats(self):
        compat.collect()
        busy = len(self.slots) - len(self.free)
        ws = 0
        for s in self.slots:
            if s.phase == _WS:
                ws += 1
        out = {
            "mem_free": compat.mem_free(),
            "mem_alloc": compat.mem_alloc(),
            "connections": ws,
            "http_active": busy - ws,
            "slots_total": len(self.slots),
            "slots_free": len(self.free),
            "slot_bytes": self.slot_size,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "dropped": self.dropped,
            "closed": self.closed,
            "rejected_full": self.rejected_full,
            "accept_errors": self.accept_errors,
            "http_requests": self.http_requests,
            "uptime_ms": ticks_diff(ticks_ms(), self.started),
        }
        if self.platform is not None:
            try:
                out["board"] = self.platform.status()
            except Exception as e:  # a platform problem must not break /stats
                out["board"] = {"error": repr(e)}
        return out

    # -- lifecycle ----------------------------------------------------------------------

    def listen(self):
        cfg = self.cfg
        addr = socket.getaddrinfo(cfg["host"], cfg["port"])[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(4)
        s.setblocking(False)
        self.listener = s
        return s

    async def serve(self, sock=None):
        """Accept and serve until shutdown(). sock: an already listening socket (tests)."""
        if sock is not None:
            sock.setblocking(False)
            self.listener = sock
        elif self.listener is None:
            self.listen()
        self._done = compat.new_event()
        self.running = True
        print("ringws: listening on %s:%d" % (self.cfg["host"], self.cfg["port"]))
        self._tasks = [
            asyncio.create_task(self._accept_loop()),
            asyncio.create_task(self._housekeeping()),
        ]
        await self._done.wait()

    async def shutdown(self, timeout_ms=None):
        """Close every connection with 1001, wait a bounded time, then force."""
        if not self.running:
            return
        self.running = False
        if timeout_ms is None:
            timeout_ms = self.cfg["shutdown_timeout_ms"]
        accept = self._tasks[0] if self._tasks else None
        if accept is not None:
            accept.cancel()
        self._close_listener()
        for s in self.slots:
            if s.phase == _WS:
                s.batching = False  # out now, even from a reader Ctrl-C stopped mid-batch
                self._close(s, CLOSE_GOING_AWAY, "server shutdown", "shutdown")
            elif s.phase != _FREE:
                self._teardown(s, "shutdown", s.gen)
        start = ticks_ms()
        while len(self.free) < len(self.slots) and ticks_diff(ticks_ms(), start) < timeout_ms:
            await sleep_ms(10)
        for s in self.slots:
            if s.phase != _FREE:
                self._teardown(s, "shutdown", s.gen)  # (cancels its tasks)
            elif s.reader is not None:  # parked for a next connection
                s.reader.cancel()
                s.reader = None
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        await sleep_ms(0)  # let cancelled tasks run their finally blocks
        if self._done is not None:
            self._done.set()

    def _close_listener(self):
        if self.listener is not None:
            drop_entry(self)
            try:
                self.listener.close()
            except OSError:
                pass
            self.listener = None

    # -- accepting ------------------------------------------------------------------------

    async def _accept_loop(self):
        lsock = self.listener
        while self.running:
            await wait_readable(lsock, self)
            try:
                sock, remote = lsock.accept()
            except OSError as e:
                # EAGAIN after a spurious wake-up, or EMFILE/ENFILE/ECONNABORTED: count,
                # breathe, go on. A failed accept never ends the loop.
                if compat.errno_of(e) != errno.EAGAIN:
                    self.accept_errors += 1
                    await sleep_ms(50)
                continue
            except MemoryError:
                # Not even the socket object fits. (Unless the interpreter had already
                # accepted it: then that connection is lost inside accept().) The loop
                # must go on: memory comes back as connections end.
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
                    # Not even the reader task fits: give the slot back, say 503 with
                    # the prebuilt answer, keep accepting.
                    slot.phase = _FREE
                    slot.sock = None
                    self.free.append(slot)
                    raise
            except MemoryError:
                self.closed["memory"] += 1
                try:
                    send_from(sock, _OOM_503, 0, len(_OOM_503))
                except Exception:
                    pass
                _close_quietly(sock)

    def _refuse(self, sock):
        # No slot: answer 503 without borrowing one. A few refusals at a time may wait a
        # moment for the request (closing with unread data would reset the connection and
        # could lose the 503); beyond that the socket is closed at once.
        self.rejected_full += 1
        if self._rejecting >= self.cfg["max_rejecting"]:
            _close_quietly(sock)
            return
        self._rejecting += 1
        try:
            asyncio.create_task(self._refuse_task(sock))
        except MemoryError:
            self._rejecting -= 1
            raise

    async def _refuse_task(self, sock):
        try:
            await wait_for_ms(_readable(sock), 200)
            recv_into(sock, self.scratch, len(self.scratch))
        except Exception:  # timeout, reset: answer anyway
            pass
        try:
            send_from(sock, _FULL_503, 0, len(_FULL_503))
        except Exception:
            pass
        finally:
            _close_quietly(sock)
            self._rejecting -= 1

    def _start(self, slot, sock, remote):
        slot.gen += 1
        slot.phase = _HTTP
        slot.sock = sock
        slot.cause = None
        slot.want_drain = False
        slot.paused = False
        slot.t_phase = ticks_ms()
        slot.last_rx = slot.t_phase
        slot.ping_at = 0
        slot.stuck_at = 0
        slot.batching = False
        slot.broken = False
        slot.reset()
        slot.remote = remote
        # The slot's reader task serves one connection after another: it parks when its
        # connection ends (see _reader). A task and its coroutine (about 400 B on the
        # unix port) per connection would be a large allocation at every accept, and a
        # finished task can stay reachable long after: MicroPython's task queue leaves a
        # popped task pointing at the tasks that were below it (pairing-heap child
        # pointers), and a long-parked task keeps them, and their frames, alive.
        # A slot gets its task at its first connection (not at start-up: at 110k the
        # dashboard's first page load could not spare the 3.3 KB), and a new one only
        # after a teardown from another task cancelled the last one.
        if slot.reader is None:
            slot.reader = asyncio.create_task(self._reader(slot))
        else:
            wake(slot.reader)

    # -- the connection's tasks ---------------------------------------------------------

    async def _reader(self, slot):
        # One connection after another on this slot (see _start). A connection's end,
        # whatever its cause, runs _teardown in the finally below; the task then parks
        # until _start hands it the slot's next connection. It ends only when cancelled:
        # by a teardown from another task (a writer's error, a timeout) while it waits,
        # or at shutdown.
        while True:
            if slot.phase == _FREE:
                sock = handler = None  # the last connection's: not kept while parked
                while slot.phase == _FREE:
                    await park()
            gen = slot.gen
            cause = "peer_reset"
            try:
                # The request head: read by a plain method, in this task. A coroutine of
                # its own would be one more generator frame per connection in the
                # handshake, when a reconnecting fleet has them all there at once.
                # `handler` holds each thing the head turns into (its end, an HttpError,
                # a Request, the handler): every local is a word of this frame.
                sock = slot.sock
                while True:
                    handler = self._read_head(slot)
                    if handler is not None:
                        break
                    await wait_readable(sock, slot)
                if handler == 0:
                    continue  # EOF: peer_reset (the finally ends the connection)
                if not isinstance(handler, handshake.HttpError):
                    handler = self._request(slot, handler)
                # An answer over HTTP: its coroutine takes the place of the request (or
                # the error) in `handler`, so that the request is not kept while the
                # answer goes out. (It is passed first for the same reason: see
                # _respond_http.)
                if handler is _FULL_503:
                    slot.cause = "http"
                    send_from(sock, _FULL_503, 0, len(_FULL_503))
                    continue
                if isinstance(handler, (handshake.HttpError, handshake.Request)):
                    if isinstance(handler, handshake.HttpError):
                        slot.cause = "http"  # an error answered: "http" whatever follows
                    cause = "http"
                    handler = _respond_http(handler, self, slot)
                    slot.phase = _ANSWER  # the 408 deadline is over: _check_stuck times it
                    await handler
                    continue
                self._open(slot, handler)
                # The read loop, inline: a coroutine of its own would keep a second
                # generator frame (about 200 B on the unix port) alive for every open
                # connection.
                ring = slot.ring
                shared = self.shared
                kept = False  # the shared buffer was kept at the last dry read (see below)
                while True:
                    ev = next_event(slot)
                    if ev == _EV_NONE:
                        if slot.pong_seen:  # the parser has seen our keepalive answered
                            slot.pong_seen = False
                            slot.ping_at = 0
                        # End of a batch: one write for everything the handlers queued
                        # (Server._flush without _write_some's try: a write error goes
                        # up to this task's handlers, which end the connection with the
                        # same cause). Inline, like the dispatch below: per batch.
                        if ring.used or slot.tx_end:
                            if (slot.writer is None and _write_loops(self, slot)
                                    and not slot.paused):
                                slot.writer = asyncio.create_task(self._writer(slot, slot.gen))
                            if slot.want_drain and ring.free() >= ring.size // 2:
                                self._drained(slot)
                        if slot.broken:
                            break
                        if slot.tx_end:
                            # A relayed span the socket has not taken yet: reading now
                            # could overwrite it. Wait until it is out (TCP flow control
                            # meanwhile).
                            await self._pause(slot)
                            continue
                        if slot.state == _CLOSED:
                            if not slot.failed and not ring.used:
                                break  # close handshake done and our last frame is out
                            slot.discard_input()
                        if self.shared_owner is None and shared is not None:
                            self._borrow(slot)
                        off = recv_window(slot)
                        rbuf = slot.rbuf
                        n = recv_into(sock, rbuf if off == 0 else rbuf[off:],
                                      len(rbuf) - off)
                        if n is None:
                            if rbuf is shared:
                                self._give_back(slot)
                                if self.shared_owner is slot and not kept:
                                    # Kept: a frame the last read cut waits in it for its
                                    # rest (Protocol.next_event), and the socket has none
                                    # now. Parse again: the frame, moved to the front, goes
                                    # out piece by piece, and the buffer can go back.
                                    kept = True
                                    continue
                            slot.batching = False
                            await wait_readable(sock, slot)
                            slot.batching = True
                            continue
                        if n == 0:
                            break  # EOF: cause decided by the state we were in
                        kept = False
                        slot.rlen += n  # what recv_window gave out now holds data
                        self.bytes_in += n
                        slot.last_rx = ticks_ms()
                        continue
                    if ev == _EV_MESSAGE or ev == _EV_FRAGMENT:
                        # The handler's call (inline: per message). Method calls, not
                        # getattr(): a bound method would be allocated per message.
                        # What it returns goes in `ev` (one word of frame fewer); False
                        # means it cannot take the data now: backpressure.
                        if ev != _EV_MESSAGE:
                            ev = slot.handler.on_fragment(slot.conn, slot.ev_data, slot.ev_text,
                                                          slot.ev_first, slot.ev_last)
                        elif slot.handler._ringws_msg:
                            ev = slot.handler.on_message(slot.conn, slot.ev_data, slot.ev_text)
                        else:
                            ev = None
                        if ev is False:
                            await self._pause(slot)
                            continue
                        if slot.ev_last:
                            self.messages_in += 1
                        consume(slot)
                    elif ev == _EV_BLOCKED:
                        await self._pause(slot)
                    elif ev == _EV_CLOSE:
                        if not slot.cause:
                            slot.cause = "normal"
                        slot.t_phase = slot.t_phase or ticks_ms()
                    elif ev == _EV_ERROR:
                        slot.cause = "protocol"
                        slot.t_phase = ticks_ms()
                cause = slot.cause or "peer_reset"
            except asyncio.CancelledError:
                raise
            except KeyboardInterrupt:
                # Ctrl-C landed in this task: main.py runs shutdown(), which closes this
                # connection with 1001 like the others (gen: the teardown below skips).
                gen = None
                raise
            except MemoryError:
                cause = "memory"
                if slot.phase == _HTTP:
                    try:  # first, while nothing else has taken the little memory there is
                        send_from(slot.sock, _OOM_503, 0, len(_OOM_503))
                    except Exception:
                        pass
                _note_oom()
                if slot.phase == _WS:
                    await self._abort(slot, gen, "out of memory", "memory")
            except OSError as e:
                cause = slot.cause or "peer_reset"
                if compat.errno_of(e) not in _RESET_ERRNOS:
                    print("ringws: socket error", e)
            except Exception as e:
                cause = "app_error"
                _log_exc("connection", e)
                await self._abort(slot, gen, "internal error", "app_error")
            finally:
                self._teardown(slot, slot.cause or cause, gen)

    async def _abort(self, slot, gen, reason, cause):
        # Close with 1011 and give the close frame a moment to leave.
        self._close(slot, CLOSE_INTERNAL, reason, cause)
        self._flush(slot)
        start = ticks_ms()
        while slot.gen == gen and slot.writer is not None and ticks_diff(ticks_ms(), start) < 200:
            await sleep_ms(10)

    def _borrow(self, slot):
        # Lend the shared receive buffer to a connection about to read; what is left in
        # its own buffer (a partial frame) moves along.
        slot.move_input(self.shared)
        self.shared_owner = slot

    def _give_back(self, slot):
        # When its reads run dry. What is left unparsed then always fits the own buffer:
        # the parser hands over everything but a partial frame that is at most recv_buf
        # (see Protocol.own_rbuf). Under backpressure the reader keeps the buffer instead.
        if slot.rlen - slot.rpos > len(slot.own_rbuf):
            return  # (not expected; keeping the buffer is always safe)
        slot.move_input(slot.own_rbuf)
        self.shared_owner = None

    async def _pause(self, slot):
        # Stop reading until the ring drains: TCP flow control then reaches the peer.
        # While paused the reader is the socket's writer (a writer task, if any, is
        # retired): one task per connection even under backpressure, and no event.
        slot.want_drain = True
        ring = slot.ring
        if slot.writer is not None:
            slot.writer.cancel()
            slot.writer = None
        if not ring.used and not slot.tx_end:
            await sleep_ms(5)  # nothing to drain: the handler refused for its own reasons
            return
        slot.paused = True
        try:
            while True:
                self._write_some(slot)
                if slot.broken:
                    raise OSError(errno.ECONNRESET)
                if not ring.used and not slot.tx_end:  # (earlier could spin on a large refusal)
                    self._drained(slot)
                    return
                slot.batching = False
                await wait_writable(slot.sock, slot)
                slot.batching = True
                slot.stuck_at = 0  # progress (see _check_stuck)
        finally:
            slot.paused = False

    # -- writing ----------------------------------------------------------------------
    # Writes go straight from the ring to the socket, without a task, until the socket
    # pushes back; only then a writer task waits for writability. An idle or quiet
    # connection therefore costs one task (its reader), and an echo costs one write()
    # per batch of messages read.

    def _sent(self, slot):
        if not slot.batching:
            self._push(slot)

    def _write_some(self, slot):
        """Write what the socket takes now. True if it pushed back with data left."""
        try:
            return _write_loops(self, slot)
        except OSError as e:
            slot.broken = True
            if compat.errno_of(e) not in _RESET_ERRNOS:
                print("ringws: send error", e)
        except MemoryError:
            slot.broken = True
            slot.cause = "memory"
            print("ringws: out of memory while sending")
        return False

    def _push(self, slot):
        if slot.writer is None and self._write_some(slot) and not slot.paused:
            slot.writer = asyncio.create_task(self._writer(slot, slot.gen))

    def _flush(self, slot):
        # _push, then the drain callback; only from tasks, never inside a handler's send.
        self._push(slot)
        if slot.want_drain and slot.ring.free() >= slot.ring.size // 2:
            self._drained(slot)

    async def _writer(self, slot, gen):
        ring = slot.ring
        try:
            while True:
                await wait_writable(slot.sock, slot)
                if slot.gen != gen:
                    return
                slot.stuck_at = 0  # progress (see _check_stuck)
                pushed_back = self._write_some(slot)
                if slot.broken:
                    self._teardown(slot, slot.cause or "peer_reset", gen)
                    return
                if slot.want_drain and ring.free() >= ring.size // 2:
                    self._drained(slot)  # may queue more: the loop goes on while data is left
                if slot.gen != gen:
                    return
                if pushed_back or ring.used or slot.tx_end:
                    continue
                if slot.state == _CLOSED and not slot.failed:
                    # Close handshake complete and our last frame is out: the server
                    # closes the TCP connection first (RFC 6455 7.1.1).
                    self._teardown(slot, slot.cause or "normal", gen)
                return
        finally:
            if slot.writer is asyncio.current_task():
                slot.writer = None

    def _drained(self, slot):
        # (Callers test slot.want_drain first: this frame is too large for the C stack, so
        # every call would allocate it on the heap; see _write_loops.)
        if slot.want_drain and slot.conn is not None:
            slot.want_drain = False
            slot.stuck_at = 0
            fn = getattr(slot.handler, "on_writable", None)
            if fn is not None:
                try:
                    fn(slot.conn)
                except Exception as e:
                    _log_exc("on_writable", e)
                    self._close(slot, CLOSE_INTERNAL, "internal error", "app_error")

    # -- HTTP and the opening handshake -------------------------------------------------

    def _read_head(self, slot):
        """Read what the socket has of the request head into slot.block, counted in
        slot.rlen (the whole slot is free before the response: receive buffer, ring and
        message buffer). Returns where the head ends, None when the socket has no more
        now, 0 at EOF, or an HttpError (431) when it does not fit."""
        rbuf = slot.block
        got = slot.rlen
        while True:
            if got == len(rbuf):
                return handshake.HttpError(431, "request head larger than %d bytes" % got)
            n = recv_into(slot.sock, rbuf if got == 0 else rbuf[got:], len(rbuf) - got)
            if not n:
                return n  # None: nothing now; 0: EOF
            self.bytes_in += n
            end = handshake.find_end(rbuf, got, got + n)
            got += n
            slot.rlen = got
            if end >= 0:
                return end

    def _request(self, slot, end):
        """Decide on the request head in slot.block[:end] (slot.rlen bytes read). Returns
        the handler of an accepted upgrade, with the 101 in the ring; otherwise what to
        answer: an HttpError, or the Request for the HTTP side."""
        got = slot.rlen
        self.http_requests += 1
        slot.t_phase = ticks_ms()  # the answer gets its own handshake_timeout window
        rbuf = slot.block
        try:
            req = handshake.parse_request(rbuf, end)
            handler = self.routes.get(req.path)
            if self.access_check is not None:
                self.access_check(req, handler is not None)  # raises HttpError 401/403
            if handler is not None:
                accept = handshake.validate_upgrade(req)
                # WebSockets may hold every slot but one, so that a short HTTP request
                # (/stats, the page) is still served on a full board.
                n = 1
                for s in self.slots:
                    if s.phase == _WS:
                        n += 1
                if n >= len(self.slots) > 1:
                    self.rejected_full += 1
                    return _FULL_503  # prebuilt: nothing to build on a full board
            elif handshake.is_upgrade(req):
                raise handshake.HttpError(404, "no WebSocket endpoint at " + req.path)
        except handshake.HttpError as err:
            return err
        if handler is None:
            return req
        # Bytes after the request head are the client's first frames: keep them, moved
        # to the receive buffer before the 101 goes into the ring they may lie in.
        early = got - end
        if early > len(slot.rbuf):
            return handshake.HttpError(400, "too much data sent before the handshake completed")
        move(0, end, early, slot.rbuf, rbuf)
        slot.rpos = 0
        slot.rlen = early
        sub = handshake.select_subprotocol(req, getattr(handler, "subprotocols", ()))
        slot.ring.write(handshake.response_101(accept, sub))
        slot.can_stream = handler._ringws_stream
        self._next_id += 1
        slot.conn = Conn(self, slot, req, sub, slot.remote)
        slot.handler = handler
        return handler

    def write_ring(self, slot):
        """HTTP phase: write what the slot's ring holds. True if the socket pushed back
        before all of it was out."""
        return _write_loops(self, slot)

    def _open(self, slot, handler):
        slot.phase = _WS
        slot.last_rx = ticks_ms()
        slot.t_phase = 0  # open: no close handshake to time yet (see Slot.t_phase)
        slot.batching = True  # the 101 response leaves with the first flush
        fn = getattr(handler, "on_open", None)
        if fn is not None:
            fn(slot.conn)

    # -- closing --------------------------------------------------------------------------

    def _close(self, slot, code, reason, cause):
        """Start a server-side close: close frame now, teardown when answered or late."""
        if slot.phase != _WS:
            if slot.phase != _FREE:
                self._teardown(slot, cause, slot.gen)
            return
        if slot.close(code, reason):
            slot.cause = cause
            slot.t_phase = ticks_ms()
            self._sent(slot)
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
        slot.remote = None
        drop_entry(slot)
        _close_quietly(slot.sock)
        slot.sock = None
        conn = slot.conn
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
        self.free.append(slot)
        if conn is not None:
            conn._slot = None
            fn = getattr(handler, "on_close", None)
            if fn is not None:
                try:
                    fn(conn, code, reason)
                except Exception as e:
                    _log_exc("on_close", e)
        if self.cfg["gc_collect"]:
            self._gc_due = True

    # -- timers -----------------------------------------------------------------------------

    async def _housekeeping(self):
        cfg = self.cfg
        tick = cfg["tick_ms"]
        while True:
            await sleep_ms(tick)
            try:
                self._tick(ticks_ms())
            except Exception as e:
                _log_exc("housekeeping", e)

    def _tick(self, now):
        cfg = self.cfg
        for s in self.slots:
            phase = s.phase
            if phase == _HTTP:
                if ticks_diff(now, s.t_phase) > cfg["handshake_timeout_ms"]:
                    self._timeout_http(s)
            elif phase == _WS:
                self._check_ws(s, now, cfg)
            elif phase == _ANSWER:
                self._check_stuck(s, now, cfg["stuck_timeout_ms"])
        for timer in self.timers:
            if ticks_diff(now, timer[2]) >= timer[0]:
                timer[2] = now
                try:
                    timer[1](now)
                except Exception as e:
                    _log_exc("timer", e)
        if self.platform is not None:
            feed = getattr(self.platform, "feed", None)
            if feed is not None:
                feed()
        if self._gc_due:
            self._gc_due = False
            compat.collect()

    def _timeout_http(self, slot):
        # Best effort and prebuilt: the 408 goes out if the socket takes it now; the
        # housekeeping task never waits and allocates nothing for it.
        try:
            send_from(slot.sock, _TIMEOUT_408, 0, len(_TIMEOUT_408))
        except OSError:
            pass
        self._teardown(slot, "handshake_timeout", slot.gen)

    def _check_ws(self, s, now, cfg):
        if s.broken:
            self._teardown(s, s.cause or "peer_reset", s.gen)
            return
        if s.want_drain and s.writer is None and not s.batching:
            self._flush(s)  # want_writable() with room already: fire on_writable now
        state = s.state
        if state != _OPEN:
            if s.t_phase and ticks_diff(now, s.t_phase) > cfg["close_timeout_ms"]:
                cause = s.cause if s.cause and s.cause != "normal" else "close_timeout"
                self._teardown(s, cause, s.gen)
            return
        if self._check_stuck(s, now, cfg["stuck_timeout_ms"]):
            return
        quiet = ticks_diff(now, s.last_rx)
        idle = cfg["idle_timeout_ms"]
        if idle and quiet > idle:
            self._close(s, CLOSE_GOING_AWAY, "idle timeout", "idle_timeout")
            return
        interval = cfg["ping_interval_ms"]
        if s.ping_at:
            if ticks_diff(now, s.ping_at) > cfg["pong_timeout_ms"]:
                self._close(s, CLOSE_INTERNAL, "keepalive ping timeout", "ping_timeout")
        elif interval and quiet > interval:
            if s.send_ping(b"ringws"):
                s.ping_at = now or 1
                self._sent(s)


    def _check_stuck(self, s, now, limit):
        # Output waiting and not one byte taken by the socket for `limit` ms, whoever
        # queued it. Progress (a wait for writability that ended: _writer, _pause,
        # http.send) sets stuck_at back to 0; the first tick that finds output waiting
        # after that starts the clock. True if the connection was closed.
        if not limit or not (s.ring.used or s.tx_end):
            s.stuck_at = 0
            return False
        if not s.stuck_at:
            s.stuck_at = now or 1
            return False
        if ticks_diff(now, s.stuck_at) <= limit:
            return False
        if s.phase == _WS:
            self._close(s, CLOSE_POLICY, "too slow", "too_slow")
        else:  # an HTTP answer: no frame to say why
            self._teardown(s, "too_slow", s.gen)
        return True


def _write_loops(srv, slot):
    # Server._write_some's loops, without its try: 11 words of frame, none on the heap
    # (MicroPython allocates a larger frame on the heap for every call).
    while slot.tx_end:  # a relayed span goes before anything queued after it
        n = send_from(slot.sock, slot.rbuf, slot.tx_off, slot.tx_end - slot.tx_off)
        if n is None:
            return True
        slot.tx_off += n
        srv.bytes_out += n
        if slot.tx_off == slot.tx_end:
            slot.tx_off = slot.tx_end = 0
    ring = slot.ring
    while ring.used:
        n = send_from(slot.sock, ring.buf, ring.head, ring.readable())
        if n is None:
            return True
        ring.consume(n)
        srv.bytes_out += n
    return False


def _respond_http(req, srv, slot):
    # The coroutine that sends the answer to req (a Request or an HttpError), for the
    # reader to await: the answer is decided by a plain call, and one coroutine sends it.
    # req comes first: an argument stays in its place on the caller's value stack after
    # the call, and a generator's frame is scanned whole by the collector, so a request
    # passed last was kept alive (about 600 B) until the answer was out. The reader's
    # `await` overwrites the first places.
    from ringws import http  # lazy: the HTTP side is not on the WebSocket path

    if isinstance(req, handshake.HttpError):
        return http.send(srv, slot, [http.error_response(req)])
    pieces, path = http.respond(srv, req)
    return http.send(srv, slot, pieces, path)


async def _readable(sock):
    # wait_readable() as a coroutine of its own, for wait_for_ms (which runs it as a
    # task: compat's wait_* park the task that calls them).
    await wait_readable(sock)


def _note_oom():
    try:
        print("ringws: out of memory on a connection")
    except MemoryError:
        pass


def _close_quietly(sock):
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def _log_exc(where, e):
    print("ringws: error in %s:" % where, repr(e))
    compat.print_exception(e)
