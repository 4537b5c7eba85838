# The server's start and its end, each run once: building a Server (its fields, the slots,
# TLS), starting to serve (the listener, the accept loop and housekeeping) and the
# graceful shutdown. Loaded for each and dropped after it (compat.use_once): none of this
# code is in the heap while the server runs. (Server.shutdown closes every socket itself
# if there is no room to load it.)
import asyncio
import socket

from ringws.compat import const, drop_entry, sleep_ms, ticks_diff, ticks_ms, wake
from ringws.server import close_quietly, housekeeping

_CLOSE_GOING_AWAY = const(1001)  # frames.CLOSE_GOING_AWAY
_BATCHING = const(0x400)  # flags' bits (slot.py)
_FREE = const(0)  # slot phases (slot.py)
_WS = const(2)

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


def build(srv, config, platform, slots):
    """Server.__init__: settings, the slots (made now unless launch.start made them
    first), the counters."""
    from ringws.config import server_config, slot_bytes  # (start-up code too)

    cfg = server_config(config)
    srv.cfg = cfg
    srv.platform = platform
    srv.routes = {}
    srv.http_routes = {}
    srv.static_routes = []
    srv.timers = []
    # access_check(req, is_websocket): raise handshake.HttpError to refuse a request.
    srv.access_check = None
    # The whole memory budget is taken once, here or by launch.start before the rest
    # of the firmware is imported.
    if slots is None:
        from ringws.slot import allocate_slots

        slots = allocate_slots(cfg)
    srv.slots, srv.shared = slots
    for s in srv.slots:
        s.srv = srv  # (a live Conn reaches its server through its slot)
    srv.pollent = None  # the listener's poller entry, kept between accepts
    srv.shared_owner = None  # the slot the shared receive buffer is lent to
    srv.free = list(srv.slots)
    srv.scratch = bytearray(64)  # for draining requests we refuse with 503
    srv.started = ticks_ms()
    srv.listener = None
    srv._tasks = []
    srv._rejecting = 0
    srv._gc_due = False
    srv._done = None  # the task in serve(), once it runs
    srv.bytes_in = srv.bytes_out = srv.messages_in = srv.messages_out = 0
    srv.dropped = srv.accept_errors = srv.rejected_full = srv.http_requests = 0
    srv._stats = {}  # (Server.stats)
    srv.closed = {}
    for cause in CLOSE_CAUSES:
        srv.closed[cause] = 0
    srv.slot_size = slot_bytes(cfg)  # (launch.start prints the budget)
    if cfg.get("tls_port"):
        srv.tls = __import__("ringws.tls").tls.Tls(srv)
    srv.stats(False)  # its dict made now, with the rest of the start-up budget


def listening(host, port, backlog):
    """A listening socket on host:port, not blocking (the plain port's and the TLS one's)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(socket.getaddrinfo(host, port)[0][-1])
    s.listen(backlog)
    s.setblocking(False)
    return s


def start(srv, sock):
    """Server.serve, up to its wait: the listener (sock, or one made here), the tasks."""
    cfg = srv.cfg
    if sock is None:
        sock = srv.listener
    if sock is None:
        sock = listening(cfg["host"], cfg["port"], 4)
    sock.setblocking(False)
    srv.listener = sock
    print("ringws: listening on %s:%d" % (cfg["host"], cfg["port"]))
    tls = srv.tls
    if tls is not None:
        if tls.listener is None:
            tls.listener = listening(cfg["host"], cfg["tls_port"], 2)
            print("ringws: tls on %s:%d (%d connections)" % (cfg["host"], cfg["tls_port"], len(tls.slots)))
        tls.start(srv)
    srv._tasks = [
        asyncio.create_task(srv._accept_loop()),
        asyncio.create_task(housekeeping(srv)),
    ]


async def stop(srv, tasks, timeout_ms):
    """Server.shutdown: 1001 to every WebSocket, a bounded wait, then force. tasks: the
    accept loop, then housekeeping."""
    print("ringws: closing every connection")
    if timeout_ms is None:
        timeout_ms = srv.cfg["shutdown_timeout_ms"]
    tasks[0].cancel()
    if srv.listener is not None:
        drop_entry(srv)
        close_quietly(srv.listener)
        srv.listener = None
    if srv.tls is not None:
        srv.tls.stop()
    for s in srv.slots:
        if s.phase == _WS:
            s.flags &= ~_BATCHING  # out now, even from a reader Ctrl-C stopped mid-batch
            srv._close(s, _CLOSE_GOING_AWAY, "server shutdown", "shutdown")
        elif s.phase != _FREE:
            srv._teardown(s, "shutdown", s.gen)
    start = ticks_ms()
    while any(s.phase != _FREE for s in srv.slots) and ticks_diff(ticks_ms(), start) < timeout_ms:
        await sleep_ms(10)
    srv._end_all(tasks)
    await sleep_ms(0)  # let cancelled tasks run their finally blocks
    wake(srv._done)  # serve() returns
