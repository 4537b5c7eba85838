# Server settings when config.json or its server section is unusable. Loaded only then,
# so a board with a good config pays nothing for it.
from ringws.config import server_config

# Small enough for the smallest board's heap (an ESP32's 110 KiB) beside the WiFi code, so
# a board with a broken config still comes up (in access-point mode) and says why.
SAFE_SIZING = {"max_connections": 4, "recv_buf": 278, "send_ring": 776, "max_message": 64,
               "shared_recv": 1024}


def settings(cfg):
    """Safe server settings, keeping host and port if they pass; says why in cfg."""
    safe = dict(SAFE_SIZING)
    server = cfg.get("server")
    if isinstance(server, dict):
        for key in ("host", "port"):
            if key in server:
                safe[key] = server[key]
    try:
        scfg = server_config(safe)
    except (ValueError, TypeError):
        scfg = server_config(SAFE_SIZING)
    problem = "%s; safe sizing (%d slots)" % (cfg["config_error"], scfg["max_connections"])
    print("ringws:", problem)
    cfg["config_error"] = problem
    return scfg


def app(cfg, name, exc):
    """The default app, when the one config.json names is missing, broken or has no
    install(): the board stays reachable and says why (printed, and in /stats board.reason
    through config_error; on a board that also means access-point mode, as for any
    config error)."""
    import sys

    if name == "app":
        raise exc
    if name in sys.modules and isinstance(exc, AttributeError):
        why = "has no install(srv, cfg, board)"
    else:
        why = "cannot be imported: %r" % (exc,)
    problem = "app %r %s; serving the default app" % (name, why)
    print("ringws:", problem)
    old = cfg.get("config_error")
    cfg["config_error"] = old + "; " + problem if old else problem
    if not isinstance(cfg.get("app"), dict):
        cfg["app"] = {}
    __import__("app")
    return sys.modules["app"]
