# Start-up: config -> slot arena -> code -> platform -> server -> app.
# main.py calls start(), then forget(), prints the heap line and runs the event loop. The
# work lives here because main.py is compiled from source in RAM on every boot, while this
# module loads as .mpy (or frozen), and can leave the heap once the server is built.
import gc
import sys

# Tests and the bench set this before running main.py: called as after_install(srv, cfg)
# once the application is installed, before the loop starts.
after_install = None

# Needed only until the server is built (see drop() and forget()).
# (ringws.slot: the slots keep their class; the module and allocate_slots can go.)
START_ONLY = ("launch", "fallback", "netup", "otamode", "ringws.config", "ringws.slot")


def load_config():
    import json

    try:
        with open("config.json") as f:
            cfg = json.load(f)
        cfg.items()  # a JSON object, or AttributeError
        return cfg, None
    except Exception as e:  # missing or broken config must not brick the board
        return {}, "config.json unusable: %r" % (e,)


def server_settings(cfg):
    from ringws.config import server_config

    if not cfg.get("config_error"):
        try:
            return server_config(cfg.get("server"))
        except (ValueError, TypeError, AttributeError) as e:
            cfg["config_error"] = "server settings rejected (%s)" % e
    import fallback

    return fallback.settings(cfg)


def load_app(cfg):
    """The module config.json's "app" names ({"module": name, ...its settings}, or just the
    name; default: the app package); it must have install(srv, cfg, board)."""
    spec = cfg.get("app")
    name = (spec.get("module") if isinstance(spec, dict) else spec) or "app"
    try:
        __import__(name)
        return sys.modules[name].install and sys.modules[name]
    except Exception as e:  # reported, and the default app serves (fallback.py)
        import fallback

        return fallback.app(cfg, name, e)
    finally:
        gc.collect()


def drop(*names):
    """Let start-up-only modules leave the heap as soon as they are done (their names stay
    interned), so start-up's highest point is little above what it leaves in use."""
    from ringws.compat import unload

    for name in names:
        unload(name)
    gc.collect()


def load(*names):
    # Each module's loading garbage is freed before the next one loads, so the heap is not
    # left in thousands of small holes (docs/performance.md has the figures).
    for name in names:
        __import__(name)
        gc.collect()


def start():
    """Build everything up to the event loop; returns the server."""
    cfg, problem = load_config()
    if problem:
        cfg["config_error"] = problem
    scfg = server_settings(cfg)
    # Updates over WiFi (ota.py): off without ota.token; an update's boot is lean.
    ota = cfg.get("ota")
    ota = isinstance(ota, dict) and ota.get("token")
    lean = ota and __import__("otamode").update_mode(scfg)
    drop("fallback", "otamode")
    # Take the slots' memory first, while the heap is still one piece.
    slots = __import__("ringws.slot").slot.allocate_slots(scfg, False)
    drop("ringws.slot")  # (the slots keep their class)
    # Then the code, one module at a time with a collection in between (load()).
    load("asyncio", "ringws.handshake", "ringws.server", "board")
    app = load_app(cfg)  # (before the network: an app that fails to load means AP mode)
    import board
    from ringws.server import Server

    info = board.bring_up(cfg)
    drop("netup")
    if info.get("bind"):
        scfg["host"] = info["bind"]
    srv = Server(scfg, platform=board, slots=slots)
    del scfg, slots
    drop("ringws.config")
    load("ringws.http")  # (after the server's build: start-up's highest point is there)
    if info.get("poll"):
        srv.add_timer(*info["poll"])  # keeps the WiFi link up (board.py, wifi.py)
    if info.get("stop"):  # the unix port's stop request (simstop.py)
        srv.add_timer(100, __import__("simstop").watch(srv))
    if cfg.get("access"):
        from ringws import access

        srv.access_check = access.checker(cfg["access"])
    if not lean:
        app.install(srv, cfg, board)
    if ota:
        gc.collect()  # otastart loads into as whole a heap as the app leaves
        __import__("otastart").install(srv, cfg, lean)
        gc.collect()
    if after_install is not None:
        after_install(srv, cfg)
    return srv


def forget(srv):
    """Drop the start-up-only modules, so their code leaves the heap (their names stay
    interned), then print the budget and deflate's start-up part (main.py prints the heap
    line once this module has gone). Importing one again later would simply load it."""
    # This module stays until main.py lets go of it: its start-up code leaves now, so
    # deflate's start-up part does not sit on top of it.
    global load_config, server_settings, load_app, load, start
    del load_config, server_settings, load_app, load, start
    drop(*START_ONLY)
    cfg = srv.cfg
    print("ringws: %d slots x %d B (recv %d + ring %d + message %d) + shared recv %d = %d B budgeted"
          % (len(srv.slots), srv.slot_size, cfg["recv_buf"], cfg["send_ring"],
             cfg["max_message"], cfg["shared_recv"],
             srv.slot_size * len(srv.slots) + cfg["shared_recv"]))
    if cfg["inflaters"]:
        # permessage-deflate's start-up part (its buffers come with its code, at an offer
        # that fits), last: so the figure printed is all it takes, names and all.
        gc.collect()
        free = gc.mem_free()
        line = __import__("ringws.compat_inflate").compat_inflate.start(cfg, True)
        gc.collect()
        print(line % (free - gc.mem_free()))
    # A stale pointer the collector finds on the C stack keeps whatever object now lies
    # where it points, for good: if that is one of this module's, let it hold nothing more.
    globals().clear()
