# A connection's tasks: its reader (request head, HTTP answer or upgrade, then the
# WebSocket loop: parse, dispatch to the handler, and at the end of each batch write what
# the handlers queued and read more), and writing with backpressure.
#
# Writing: write_out() is the only place a frame is written to a socket (the span relayed
# in the receive buffer first, then the ring). Writes go straight to the socket, without a
# task, until it pushes back; only then a writer task waits for writability. drain() holds
# the drain threshold: on_writable fires once the ring is half empty.
#
# One reader task per slot serves one connection after another (it parks in between),
# and its one coroutine holds the whole loop: a coroutine per step would keep another
# generator frame (about 200 B on the unix port) alive per open connection. The steps
# are plain functions, within 11 words of frame where they run per batch. Every way a
# connection ends runs Server._teardown in reader()'s finally. The handler's call is
# inline (per message); its False means it cannot take the data now: backpressure.
# Module-level functions over (srv, slot), not methods: a method lookup on the server
# first misses in its nearly full instance table.
import asyncio
import errno
import sys

from ringws import compat, handshake
from ringws.compat import const, park, recv_into, send_from, sleep_ms, ticks_diff, ticks_ms, wait_readable, wait_writable
from ringws.frames import CLOSE_INTERNAL
from ringws.kernels import move
from ringws.protocol import Protocol

# The protocol's and the slot's constants as private const()s: MicroPython inlines a
# const() only inside its own module. host_tests/test_core_frames.py checks that they agree.
_EV_NONE = const(0)
_EV_MESSAGE = const(1)
_EV_FRAGMENT = const(2)
_EV_CLOSE = const(3)
_EV_BLOCKED = const(5)
_EV_PONG = const(6)
_CLOSED = const(2)
_OPEN = const(0)
_FAILED = const(4)  # flags' bits (protocol.py, slot.py)
_PONG_SEEN = const(16)
_WANT_DRAIN = const(0x100)
_PAUSED = const(0x200)
_BATCHING = const(0x400)
_BROKEN = const(0x800)
_FREE = const(0)
_HTTP = const(1)
_WS = const(2)
_ANSWER = const(3)

# What end_of_batch() asks the loop to do next.
_GO_ON = const(0)  # parse what was read
_AGAIN = const(1)  # parse again: the shared buffer was kept for a cut frame
_WAIT = const(2)  # wait until the socket is readable
_PAUSE = const(3)  # wait until the ring drains
_DONE = const(4)  # the connection is over

# Builtins as module globals: a builtin is looked up in the module's globals first, and
# that miss probes the whole table at every call.
len = len
isinstance = isinstance
# The protocol's per-message methods as functions: a method call on a slot first misses in
# its full table.
consume = Protocol.consume
next_event = Protocol.next_event
received = Protocol.received
recv_window = Protocol.recv_window
sent_span = Protocol.sent_span

# Prebuilt, so that answering needs no allocation when the heap has just run out.
FULL_503 = b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 55\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable: all connection slots are busy\n'
OOM_503 = b'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 46\r\nRetry-After: 1\r\nConnection: close\r\n\r\n503 Service Unavailable: out of memory, retry\n'


async def reader(srv, slot):
    # Its frame stays on the heap as long as the slot's task: few locals (ev holds what
    # read_head found, then the handler, then each event) and one exception handler, no
    # finally (each handler and each local is room in that frame). Every end comes to a
    # teardown here (an HTTP answer's, the WebSocket's) or in failure() or abort().
    while True:
        if slot.phase == _FREE:
            ev = None  # the last connection's handler: not kept while parked
            while slot.phase == _FREE:
                await park()
        gen = slot.gen
        cause = "peer_reset"
        try:
            while (ev := read_head(srv, slot)) is None:
                await wait_readable(slot.sock, slot)
            ev = answer_or_open(srv, slot, ev)
            if slot.phase != _WS:
                if ev is not None:
                    cause = "http"
                    await ev
                srv._teardown(slot, slot.cause or cause, gen)
                continue
            kept = False  # the shared buffer was kept at the last dry read
            if hasattr(ev, "pause"): await pause(srv, slot)  # ringws.aio: its handler starts
            while True:
                ev = next_event(slot)
                if ev == _EV_NONE:
                    ev = end_of_batch(srv, slot, kept)
                    if ev == _WAIT:
                        slot.flags &= ~_BATCHING
                        await wait_readable(slot.sock, slot)
                        slot.flags |= _BATCHING
                    elif ev == _PAUSE:
                        await pause(srv, slot)
                    elif ev == _DONE:
                        break
                    kept = ev == _AGAIN or (kept and ev == _WAIT)
                elif ev == _EV_MESSAGE or ev == _EV_FRAGMENT:
                    if ev != _EV_MESSAGE:
                        ev = slot.handler.on_fragment(slot.conn, slot.ev_data, slot.ev_text,
                                                      slot.ev_first, slot.ev_last)
                    elif slot.handler._ringws_msg:
                        ev = slot.handler.on_message(slot.conn, slot.ev_data, slot.ev_text)
                    if ev is False:
                        await pause(srv, slot)
                        continue
                    if slot.ev_last:
                        srv.messages_in += 1
                    consume(slot)
                elif ev == _EV_BLOCKED:
                    await pause(srv, slot)
                else:
                    closing(slot, ev)
            cause = slot.cause or "peer_reset"
        except BaseException as ev:  # CancelledError and KeyboardInterrupt too: see failure
            cause = failure(srv, slot, ev, cause, gen)
            if cause == "app_error" or (cause == "memory" and slot.phase == _WS):
                await abort(srv, slot, gen, cause)
        srv._teardown(slot, slot.cause or cause, gen)


def closing(slot, ev):
    # EV_CLOSE (the peer's close) or EV_ERROR (the peer broke the protocol); or EV_PONG.
    if ev == _EV_PONG:
        pong(slot)
    elif ev == _EV_CLOSE:
        if not slot.cause or not slot.t_phase:  # the peer's close (ours: Server._close set both)
            slot.t_phase = ticks_ms()
        if not slot.cause:
            slot.cause = "normal"
    else:
        slot.cause = "protocol"
        slot.t_phase = ticks_ms()


def end_of_batch(srv, slot, kept):
    """Nothing more to parse: write everything the handlers queued in one go, fire the
    drain callback, then read more. Returns what the loop does next (_GO_ON, ...)."""
    if slot.flags & _PONG_SEEN and slot.t_phase and slot.state == _OPEN:
        slot.t_phase = 0  # our keepalive ping was answered
    if slot.ring.used or slot.tx_end:
        # (write_out, not flush: an error goes up to the reader, which ends the
        # connection with the same cause.)
        if slot.writer is None and write_out(srv, slot) and not slot.flags & _PAUSED:
            slot.writer = asyncio.create_task(writer(srv, slot, slot.gen))
        if slot.flags & _WANT_DRAIN:
            drain(srv, slot)
    if slot.flags & _BROKEN:
        return _DONE
    if slot.tx_end:
        # A relayed span the socket has not taken yet: reading now could overwrite it.
        return _PAUSE
    if slot.state == _CLOSED and not slot.flags & _FAILED and not slot.ring.used:
        return _DONE  # close handshake done and our last frame is out
    return read_more(srv, slot, kept)


def read_more(srv, slot, kept):
    # The shared receive buffer is lent to a connection about to read (what is left in
    # its own buffer, a partial frame, moves along), and given back when its reads run
    # dry. Under backpressure the reader keeps it.
    if srv.shared_owner is None and srv.shared is not None:
        slot.move_input(srv.shared)
        srv.shared_owner = slot
    off = recv_window(slot)
    n = recv_into(slot.sock, slot.rbuf if off == 0 else slot.rbuf[off:], len(slot.rbuf) - off)
    if n is None:
        if slot.rbuf is not srv.shared:
            return _WAIT
        # What is left unparsed fits the own buffer but for a frame the last read cut
        # (the parser hands over everything else: see Protocol.own_rbuf).
        if slot.rlen - slot.rpos <= len(slot.own_rbuf):
            slot.move_input(slot.own_rbuf)
            srv.shared_owner = None
            return _WAIT
        # Kept: that frame waits in it for its rest, and the socket has none now. Parse
        # again (once): the frame, moved to the front, goes out piece by piece, and the
        # buffer can go back.
        return _WAIT if kept else _AGAIN
    if n == 0:
        return _DONE  # EOF: the cause is decided by the state we were in
    received(slot, n)
    srv.bytes_in += n
    slot.last_rx = ticks_ms()
    return _GO_ON


def failure(srv, slot, e, cause, gen):
    """The cause for an exception that ends the connection (cause: the reader's until
    then); reports it. A BaseException goes on up: Ctrl-C (main.py's shutdown() then says
    1001 to all) without a teardown, a cancellation (or a coroutine closed) after it."""
    try:
        if not isinstance(e, Exception):
            if isinstance(e, KeyboardInterrupt):
                gen = None  # (so the teardown below skips)
        elif isinstance(e, MemoryError):
            if slot.phase == _HTTP:
                try:  # first, while nothing else has taken the little memory there is
                    send_from(slot.sock, OOM_503, 0, len(OOM_503))
                except Exception:
                    pass
            try:
                print("ringws: out of memory on a connection")
            except MemoryError:
                pass
            return "memory"
        elif isinstance(e, OSError):
            if compat.errno_of(e) not in RESET_ERRNOS:
                print("ringws: socket error", e)
            return slot.cause or "peer_reset"
        else:
            log_exc("connection", e)
            return "app_error"
    except BaseException:  # (printing it may fail too: the teardown still comes)
        pass
    srv._teardown(slot, slot.cause or cause, gen)
    raise e


async def abort(srv, slot, gen, cause):
    # Close with 1011 and give the close frame a moment to leave. (The reader tears down
    # after it; if this is cancelled or fails, here.)
    try:
        srv._close(slot, CLOSE_INTERNAL, "out of memory" if cause == "memory" else "internal error", cause)
        flush(srv, slot)
        start = ticks_ms()
        while slot.gen == gen and slot.writer is not None and ticks_diff(ticks_ms(), start) < 200:
            await sleep_ms(10)
    except BaseException:
        srv._teardown(slot, slot.cause or cause, gen)
        raise


# -- the request head: an HTTP answer or the upgrade ------------------------------------


def read_head(srv, slot):
    """Read what the socket has of the request head into slot.block, counted in slot.rlen
    (the whole slot is free before the response: receive buffer, ring and message
    buffer). Returns where the head ends, None when the socket has no more now, 0 at EOF,
    or an HttpError (431) when it does not fit."""
    rbuf = slot.block
    got = slot.rlen
    while True:
        if got == len(rbuf):
            return handshake.HttpError(431, compat.why("faults", 22, got))  # request head larger than %d bytes
        n = recv_into(slot.sock, rbuf if got == 0 else rbuf[got:], len(rbuf) - got)
        if not n:
            return n  # None: nothing now; 0: EOF
        srv.bytes_in += n
        end = handshake.find_end(rbuf, got, got + n)
        got += n
        received(slot, n)
        if end >= 0:
            return end


def answer_or_open(srv, slot, head):
    """What read_head found (head) decides: None (EOF, or the prebuilt 503 sent), the
    coroutine that sends an HTTP answer (after reading a request body, if any: then the
    ANSWER phase, timed by progress), or the handler of the WebSocket now open."""
    if head == 0:
        return None  # EOF: peer_reset
    end = head
    if not isinstance(head, handshake.HttpError):
        head = request(srv, slot, end)
    if head is FULL_503:
        slot.cause = "http"
        send_from(slot.sock, FULL_503, 0, len(FULL_503))
        return None
    if isinstance(head, handshake.HttpError):
        slot.cause = "http"  # an error answered: "http" whatever follows
    elif not isinstance(head, handshake.Request):
        slot.phase = _WS
        slot.last_rx = ticks_ms()
        slot.t_phase = 0  # open: no close handshake to time yet (see Slot.t_phase)
        slot.flags |= _BATCHING  # the 101 response leaves with the first flush
        fn = getattr(head, "on_open", None)
        if fn is not None:
            fn(slot.conn)
        return head
    # The coroutine that sends the answer (the request itself is not kept while it goes
    # out). http is imported here: the HTTP side is not on the WebSocket path.
    from ringws import http

    if isinstance(head, handshake.HttpError):
        slot.phase = _ANSWER
        return http.send(write_out, srv, slot, [http.error_response(head)])
    route = srv.http_routes.get(head.path)
    if route is not None and route[1] != ("GET",):
        from ringws import body  # (loaded with the route: see Server.http)

        return body.answer(write_out, srv, slot, head, end, route[1])
    return http.answer(write_out, srv, slot, head)


def add_http(srv, path, func, methods=("GET",)):
    """Server.http: func(srv, req) -> (status, content type, body) answers path for these
    methods (HEAD is answered with GET). A route that takes more loads body.py now."""
    srv.http_routes[path] = (func, methods)
    if methods != ("GET",):
        __import__("ringws.body")


def request(srv, slot, end):
    """Decide on the request head in slot.block[:end] (slot.rlen bytes read). Returns the
    handler of an accepted upgrade, with the 101 in the ring; otherwise what to answer:
    an HttpError, FULL_503, or the Request for the HTTP side."""
    srv.http_requests += 1
    slot.t_phase = ticks_ms()
    try:
        req = handshake.parse_request(slot.block, end)
        handler = srv.routes.get(req.path)
        if srv.access_check is not None:
            srv.access_check(req, handler is not None)  # raises HttpError 401/403
        if handler is not None:
            accept = handshake.validate_upgrade(req)
        elif handshake.is_upgrade(req):
            raise handshake.HttpError(404, compat.why("faults", 24, req.path))  # no WebSocket endpoint at %s
    except handshake.HttpError as err:
        return err
    if handler is None:
        return req
    # WebSockets may hold every slot but one, so that a short HTTP request (/stats, the
    # page) is still served on a full board. (One slot: no such rule. TLS slots, a pool
    # of their own, are not counted: see tls.py.)
    n = 1
    m = 0
    for s in srv.slots:
        if s.pool is None:
            m += 1
            if s.phase == _WS:
                n += 1
    if slot.pool is None and n >= m > 1:
        srv.rejected_full += 1
        return FULL_503  # prebuilt: nothing to build on a full board
    # Bytes after the request head are the client's first frames: they move to the receive
    # buffer, as if read now, before the 101 goes into the ring they may lie in.
    early = slot.rlen - end
    if early > len(slot.rbuf):
        return handshake.HttpError(400, compat.why("faults", 23))  # too much data sent before the handshake completed
    move(0, end, early, slot.rbuf, slot.block)
    ext = zin = None  # permessage-deflate (pmd.py), where the server has inflaters
    if (srv.cfg["inflaters"] and req.header("sec-websocket-extensions")
            and getattr(handler, "compression", True)):  # (a route may turn it off)
        # (m - n: slots free once this one opens; pmdgate.py: loaded by compat_inflate.start)
        zin, ext = __import__("ringws.pmdgate").pmdgate.offer(srv, m - n, req, handler)
    slot.upgrade(handler._ringws_stream, hasattr(handler, "on_pong"), zin if ext else None)
    received(slot, early)
    sub = handshake.select_subprotocol(req, getattr(handler, "subprotocols", ()))
    head = handshake.response_101(accept, sub)
    slot.ring.write(head if ext is None else head[:-2] + ext)
    # (slot.conn: the peer's address until now; a handler's Conn: ringws.aio's handle)
    slot.conn = getattr(handler, "Conn", srv.Conn)(srv, slot, req, sub, slot.conn)
    slot.handler = handler
    return handler


# -- ping and pong ----------------------------------------------------------------------
# conn.ping() puts a tag before the app's payload: b"rw" and the time it was queued
# (ticks_ms, 30 bits, in 4 bytes). The pong echoes it (RFC 6455 5.5.3), so the round trip
# needs no state per connection, and a late pong still gives its own ping's figure.


def ping(conn, payload=b""):
    """Conn.ping: queue a ping, or nothing when the ring has no room for it beside the
    control reserve (False; on_writable is then armed, as after a refused send)."""
    s = conn._slot
    if len(payload) > 119:
        raise ValueError("ping payload > 119 bytes")
    payload = b"rw" + ticks_ms().to_bytes(4, "big") + payload
    if s is None or s.writable() < len(payload) or not s.send_ping(payload):
        if s is not None:
            s.flags |= _WANT_DRAIN
        return False
    if not s.flags & _BATCHING:
        flush(s.srv, s)
    return True


def pong(slot):
    # EV_PONG (only for a handler with on_pong): any pong answers the keepalive's ping;
    # one that carries conn.ping()'s tag gets on_pong. Others (unsolicited) are dropped.
    if slot.state == _OPEN:
        slot.t_phase = 0  # (while closing it times the close)
    d = slot.ev_data
    if len(d) >= 6 and d[0] == 114 and d[1] == 119:
        d = ticks_diff(ticks_ms(), int.from_bytes(d[2:6], "big"))
        if d >= 0:
            slot.handler.on_pong(slot.conn, d)
    consume(slot)


# -- writing and backpressure ----------------------------------------------------------

# errno numbers differ between the unix port and the ESP32: compare by name. MicroPython's
# errno module has no EPIPE, which a write to a peer that has gone raises on Linux; it is
# 32 there and in lwIP's errno.h alike.
RESET_ERRNOS = (errno.ECONNRESET, errno.ECONNABORTED, getattr(errno, "ENOTCONN", -1),
                getattr(errno, "ETIMEDOUT", -1), errno.EBADF, getattr(errno, "EPIPE", 32))


def write_out(srv, slot):
    """Write what the socket takes now; True if it pushed back with data left. Errors go
    to the caller. (No try here: 11 words of frame, so MicroPython runs it on the C
    stack; a larger frame is allocated on the heap at every call.)"""
    while slot.tx_end:  # a relayed span goes before anything queued after it
        n = send_from(slot.sock, slot.rbuf, slot.tx_off, slot.tx_end - slot.tx_off)
        if n is None:
            return True
        sent_span(slot, n)
        srv.bytes_out += n
    ring = slot.ring
    while ring.used:
        n = send_from(slot.sock, ring.buf, ring.head, ring.readable())
        if n is None:
            return True
        ring.consume(n)
        srv.bytes_out += n
    return False


def flush(srv, slot, task=True):
    """Send what is queued now, for callers that are not the connection's reader: an
    error marks the connection broken (its reader or housekeeping ends it). If the
    socket pushes back, a writer task finishes it (unless task is False, or the reader is
    paused: then the reader is the writer). True if it pushed back."""
    if task and slot.writer is not None:
        return True  # the writer task waits for the socket: it writes what is queued
    try:
        if not write_out(srv, slot):
            return False
    except OSError as e:
        slot.flags |= _BROKEN
        if compat.errno_of(e) not in RESET_ERRNOS:
            print("ringws: send error", e)
        return False
    except MemoryError:
        slot.flags |= _BROKEN
        slot.cause = "memory"
        print("ringws: out of memory while sending")
        return False
    if task and not slot.flags & _PAUSED:
        slot.writer = asyncio.create_task(writer(srv, slot, slot.gen))
    return True


def drain(srv, slot):
    """on_writable, if it was asked for (callers test WANT_DRAIN first: this frame
    is too large for the C stack) and the ring is at least half empty."""
    if slot.ring.free() >= slot.ring.size // 2 and slot.conn is not None:
        slot.flags &= ~_WANT_DRAIN
        fn = getattr(slot.handler, "on_writable", None)
        if fn is not None:
            try:
                fn(slot.conn)
            except Exception as e:
                log_exc("on_writable", e)
                srv._close(slot, CLOSE_INTERNAL, "internal error", "app_error")


async def writer(srv, slot, gen):
    # The connection's writer task, while the socket pushes back.
    try:
        while True:
            await wait_writable(slot.sock, slot)
            if slot.gen != gen:
                return
            slot.stuck_at = 0  # progress (see server.check_stuck)
            pushed_back = flush(srv, slot, False)
            if slot.flags & _BROKEN:
                srv._teardown(slot, slot.cause or "peer_reset", gen)
                return
            if slot.flags & _WANT_DRAIN:
                drain(srv, slot)  # may queue more: the loop goes on while data is left
            if slot.gen != gen:
                return
            if pushed_back or slot.ring.used or slot.tx_end:
                continue
            if slot.state == _CLOSED and not slot.flags & _FAILED:
                # Close handshake complete and our last frame is out: the server closes
                # the TCP connection first (RFC 6455 7.1.1).
                srv._teardown(slot, slot.cause or "normal", gen)
            return
    finally:
        if slot.writer is asyncio.current_task():
            slot.writer = None


async def pause(srv, slot):
    """Stop reading until the ring drains: TCP flow control then reaches the peer. While
    paused the reader is the socket's writer (a writer task, if any, is retired): one
    task per connection even under backpressure."""
    slot.flags |= _WANT_DRAIN
    if slot.writer is not None:
        slot.writer.cancel()
        slot.writer = None
    w = getattr(slot.handler, "pause", None)
    if w is not None:  # ringws.aio: its handler's wait, run by this task, or None
        w = w(slot.conn)
        if w is not None:
            await w
            return
    if not slot.ring.used and not slot.tx_end:
        await sleep_ms(5)  # nothing to drain: the handler refused for its own reasons
        return
    slot.flags |= _PAUSED
    try:
        while True:
            flush(srv, slot, False)
            if slot.flags & _BROKEN:
                raise OSError(errno.ECONNRESET)
            if not slot.ring.used and not slot.tx_end:
                drain(srv, slot)  # (WANT_DRAIN is set)
                return
            slot.flags &= ~_BATCHING
            await wait_writable(slot.sock, slot)
            slot.flags |= _BATCHING
            slot.stuck_at = 0  # progress (see server.check_stuck)
    finally:
        slot.flags &= ~_PAUSED


def log_exc(where, e):
    print("ringws: error in %s:" % where, repr(e))
    compat.print_exception(e)
