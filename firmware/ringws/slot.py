# Slot: one preallocated connection. All of a server's slots are made at start-up; a
# connection borrows one and gives it back at teardown. Nothing per connection is sized
# at run time.
#
# Who writes a connection's fields (tasks: the slot's reader, its writer, housekeeping, the
# accept loop; "app": a handler or timer calling Conn, from whichever task runs it):
#   phase       accept (_start: HTTP), reader (answer_or_open: WS or ANSWER), _teardown
#               (FREE, from any task); gen: _start and _teardown
#   state, close_code/_reason, flags' protocol bits (FAILED, ...: protocol.py)   the
#               protocol only (the reader's parsing, or close() through Server._close from
#               any task); the runtime reads them
#   flags       one int of bits (protocol.py's and these below; reset() clears them all)
#     PAUSED      the reader only (connection.pause)
#     BATCHING    the reader only: set while it dispatches a batch, so sends wait for its
#                 one write at the end of the batch
#     BROKEN      flush() (any task writing outside the reader's batch); read by the
#                 reader, the writer task and housekeeping, which end the connection
#     WANT_DRAIN  set by a refused send or want_writable() (app) and pause(); cleared by
#                 drain() when on_writable fires
#   conn        accept (_start: the peer's address, until the upgrade), the reader (request:
#               the Conn for the WebSocket), _teardown; read as a Conn only in phase WS
#   writer      the writer task (started by flush or end_of_batch, clears itself); pause()
#               and _teardown cancel it
#   cause       whoever decides the end first (reader, Server._close, flush); _teardown
#   t_phase     what the phase's timeout measures: HTTP, the request's start (accept, request);
#               WS open, the outstanding keepalive ping's (housekeeping sends it; the reader
#               clears it at the pong: PONG_SEEN or a pong event), 0 if none; WS closing, the
#               close's start (Server._close, or the reader at the peer's close or an error)
#   last_rx     the reader (reads)
#   srv         startstop.build, once: the server (a live Conn reaches it through its slot)
#   stuck_at    housekeeping starts the clock; progress (writer, pause, http.send) resets
# Protocol's fields (protocol.py) are written by the protocol only: the runtime reads them
# and reports through its methods (received, sent_span, upgrade, move_input, send_ping; the
# seam is in protocol.py's header); the ring's head moves by ring.consume() as bytes go out.
# Every field is set when the slot is made (new_slot): one set later would grow each slot's
# attribute table (host_tests/test_core_slot_fields.py checks it).
from ringws.compat import const
from ringws.protocol import Protocol

# Private const()s, like every copy of them in the modules that use them (host_tests/
# test_core_frames.py checks that they agree): a public const() would be a module global with
# an interned name, kept for good (the slots' class keeps this module's globals alive).
# Slot phases
_FREE = const(0)
_HTTP = const(1)  # reading or answering an HTTP request (maybe a handshake)
_WS = const(2)  # WebSocket open or closing
_ANSWER = const(3)  # sending the answer to an HTTP request

# The bits of flags: the protocol's (protocol.py), then the runtime's.
_IN_FRAME = const(1)
_STREAMING = const(2)
_FAILED = const(4)
_OUT_FRAG = const(8)
_PONG_SEEN = const(16)
_PONG_EVENTS = const(32)
_PIECES = const(64)  # can_stream (protocol.STREAM_PIECES or STREAM_WHOLE)
_WHOLE = const(128)  # can_stream STREAM_WHOLE
_WANT_DRAIN = const(0x100)
_PAUSED = const(0x200)
_BATCHING = const(0x400)  # the reader is dispatching: sends wait for its one flush
_BROKEN = const(0x800)  # a send failed: the connection is gone


class Slot(Protocol):
    """A preallocated connection: the protocol state and buffers plus the runtime's
    bookkeeping, in one object (each object costs an attribute table on MicroPython).
    new_slot() makes one. No method is defined here: a function keeps its module's globals,
    so one on the class would keep this start-up code in the heap as long as the slots."""

    pool = None  # the free list it returns to: the server's (None) or the TLS slots' (tls.py)
    # The fields new_slot sets (annotations only: no code, no heap on MicroPython).
    block: memoryview
    gen: int
    srv: object
    phase: int
    sock: object
    conn: object
    handler: object
    reader: object
    writer: object
    cause: object
    t_phase: int
    last_rx: int
    stuck_at: int
    pollent: object


def new_slot(index, cfg, arena):
    """Slot `index` of the arena, with every field set (Protocol's, then these)."""
    from ringws.config import slot_bytes  # start-up only (see launch.forget)

    mv = memoryview(arena)
    a = index * slot_bytes(cfg)
    b = a + cfg["recv_buf"]
    c = b + cfg["send_ring"]
    s = Slot(mv[a:b], mv[b:c], mv[c : c + cfg["max_message"]])
    # All three buffers in one view: an HTTP request head may use the whole slot
    # (nothing else is in use before the response), so the header limit is the slot
    # size, not recv_buf.
    s.block = mv[a : c + cfg["max_message"]]
    s.gen = 0
    s.srv = None  # the server it belongs to (startstop.build)
    s.phase = _FREE
    s.sock = None
    s.conn = None  # (the peer's address until the upgrade)
    s.handler = None
    s.reader = None  # the slot's reader task, kept from connection to connection
    s.writer = None
    s.cause = None
    s.t_phase = 0  # (see the table above)
    s.last_rx = 0
    s.stuck_at = 0
    # The socket's entry in asyncio's poller, kept for every later wait (compat._park).
    s.pollent = None
    return s


def allocate_slots(cfg, deflate=True):
    """(slots, shared receive buffer or None), with all buffers in one block (the arena). main.py calls this before
    importing the rest of the firmware, while the heap is still one piece: allocated
    later, between loaded modules, the same bytes may not be found contiguous."""
    from ringws.config import slot_bytes

    n = cfg["max_connections"] + cfg.get("tls_max", 0)  # (TLS slots last: see tls.py)
    lend = cfg["shared_recv"]
    arena = bytearray(slot_bytes(cfg) * n + lend)
    slots = [new_slot(i, cfg, arena) for i in range(n)]
    if deflate and cfg["inflaters"]:  # permessage-deflate's start-up part (launch.py: see there)
        __import__("ringws.compat_inflate").compat_inflate.start(cfg, True)
    # The shared receive buffer sits at the end of the arena (see Server._borrow).
    return slots, (memoryview(arena)[-lend:] if lend else None)
