# Server settings: defaults, merging and checks. Memory is budgeted here, at start-up.

DEFAULTS = {
    "host": "0.0.0.0",
    "port": 80,
    "max_connections": 8,
    "recv_buf": 1536,
    "send_ring": 2048,
    "max_message": 1024,
    # One receive buffer lent to whichever connection is reading (0: none). Reads of
    # many frames at once, and large frames relayed in one piece, without each slot
    # paying for a large buffer. Off by default: on a 110 KiB heap its bytes are worth
    # more as room for connections (the board files turn it on where heap allows).
    "shared_recv": 0,
    "handshake_timeout_ms": 5000,
    "idle_timeout_ms": 0,
    "ping_interval_ms": 20000,
    "pong_timeout_ms": 10000,
    "close_timeout_ms": 2000,
    "shutdown_timeout_ms": 2000,
    "stuck_timeout_ms": 10000,
    "tick_ms": 100,
    "max_rejecting": 2,
    "gc_collect": True,
    "static_chunk": 512,
    # permessage-deflate (RFC 7692, ringws/pmd.py): inflaters made at start-up (0: declined,
    # its code never loads); the client's window is capped at inflate_bits
    # (client_max_window_bits, 9..15: zlib cannot make 8; 15 also accepts clients that
    # cannot be capped, 32 KiB per message). Checked where the pool is made (pmd.start).
    "inflaters": 0,
    "inflate_bits": 9,
    # Heap kept, per WebSocket the free slots may still open, before pmd.py's code is loaded
    # for an offer (or kept: unused, it leaves); short of it the offer is declined (counted
    # in /stats deflate). A callback echo's connection took 635 B on x64 (README); a route
    # whose connections take more says so (heap_per_connection, pmdgate.py).
    "deflate_reserve": 768,
    # What pmd.py and its inflaters take when they load, until a load measures it (x64:
    # 7,424 B, code and buffers): no load is tried where they would not fit.
    "deflate_code": 7680,
}


def server_config(overrides):
    cfg = dict(DEFAULTS)
    overrides = overrides or {}
    tls = overrides.get("tls_port")
    for key, value in overrides.items():
        if key not in DEFAULTS and not tls:
            raise ValueError("unknown server setting: %s" % key)
        cfg[key] = value
    if tls:  # TLS settings: checked by ringws.tls, which only a server with TLS loads
        __import__("ringws.tls").tls.check(cfg)
    check(cfg)
    return cfg


def check(cfg):
    for key, value in cfg.items():
        if isinstance(DEFAULTS.get(key), int) and not isinstance(value, bool):
            if not isinstance(value, int) or value < 0:
                raise ValueError("server setting %s must be a non-negative integer" % key)
    if cfg["max_connections"] < 1:
        raise ValueError("server setting max_connections must be at least 1")
    if cfg["recv_buf"] < 278:
        raise ValueError("server setting recv_buf must be at least 278 bytes")
    if cfg["shared_recv"] and cfg["shared_recv"] < cfg["recv_buf"]:
        raise ValueError("server setting shared_recv must be 0 or at least recv_buf")
    # A message delivered whole must be echoable as one frame, beside the control reserve.
    need = max(cfg["recv_buf"], cfg["max_message"]) + 10 + 254
    if cfg["send_ring"] < need:
        raise ValueError(
            "server setting send_ring must be at least %d (recv_buf/max_message + frame "
            "header + control reserve)" % need
        )


def slot_bytes(cfg):
    """Buffer bytes one slot owns."""
    return cfg["recv_buf"] + cfg["send_ring"] + cfg["max_message"]
