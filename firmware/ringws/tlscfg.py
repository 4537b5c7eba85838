# The TLS settings (ringws/tls.py): their defaults and their checks, run once while the
# configuration loads (tls.check loads this module for that moment only).

DEFAULTS = {
    "tls_port": 0,  # 0: no TLS
    "tls_max": 1,  # TLS connections at once (WebSocket or HTTP), each with a slot of its own
    "tls_cert": "tls/cert.der",  # DER, as tools/build.py deploys them
    "tls_key": "tls/key.der",
    "tls_handshake_ms": 5000,  # from accept to the request's first byte
    # Accepted sockets that wait for their client's first bytes, unwrapped, at most: each
    # holds one of lwIP's sockets on a board (tools/boards.py counts them).
    "tls_waiting": 2,
    # Heap a handshake may need: checked (after a collection) before each one. Where
    # mbedTLS allocates on the Python heap this is its share, elsewhere a safety margin.
    "tls_min_free": 8192,
}


def check(cfg):
    """Fill and check the TLS settings of a server whose tls_port is set (config.py)."""
    from ringws.config import DEFAULTS as PLAIN

    for key in cfg:
        if key not in PLAIN and key not in DEFAULTS:
            raise ValueError("unknown server setting: %s" % key)
    for key, value in DEFAULTS.items():
        cfg.setdefault(key, value)
    for key in ("tls_port", "tls_max", "tls_handshake_ms", "tls_min_free", "tls_waiting"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError("server setting %s must be a non-negative integer" % key)
    for key in ("tls_max", "tls_waiting"):
        if cfg[key] < 1:
            raise ValueError("server setting %s must be at least 1 with a tls_port" % key)
    if cfg["tls_port"] == cfg["port"]:
        raise ValueError("server setting tls_port must differ from port")
