# Start-up: config -> slot arena -> code -> platform -> server -> app -> event loop.
# main.py only calls run(). The work lives here because main.py is compiled from source
# in RAM on every boot, while this module is loaded as .mpy (or frozen).
import gc


def load_config():
    import json

    try:
        with open("config.json") as f:
            return json.load(f), None
    except Exception as e:  # missing or broken config must not brick the board
        return {}, "config.json unusable: %r" % (e,)


def server_settings(cfg):
    from ringws.config import server_config

    try:
        return server_config(cfg.get("server"))
    except (ValueError, TypeError, AttributeError) as e:
        problem = "server settings rejected (%s): using defaults" % e
        print("ringws:", problem)
        cfg["config_error"] = problem
        return server_config(None)


def run(after_install=None):
    """Boot the server and run the event loop forever.

    after_install(srv, cfg), when given, runs once the application is installed and
    before the loop starts (tests and the bench hook in here).
    """
    cfg, problem = load_config()
    if problem:
        print("ringws:", problem)
        cfg["config_error"] = problem
    scfg = server_settings(cfg)
    # Take the slots' memory first, while the heap is still one piece.
    from ringws.slot import allocate_slots

    slots = allocate_slots(scfg)

    # Then the code, one module at a time with a collection in between: each module's
    # loading garbage is freed before the next one loads, so the heap is not left in
    # thousands of small holes (measured: largest free block 400 B -> 6.5 KB).
    for name in ("asyncio", "ringws.handshake", "ringws.server", "board", "app", "ringws.http"):
        __import__(name)
        gc.collect()
    import asyncio

    import board
    from ringws.server import Server

    import app

    info = board.bring_up(cfg)
    if info.get("bind"):
        scfg["host"] = info["bind"]
    srv = Server(scfg, platform=board, slots=slots)
    if cfg.get("access"):
        from ringws import access

        srv.set_access(access.checker(cfg["access"]))
    app.install(srv, cfg, board)
    if after_install is not None:
        after_install(srv, cfg)
    del cfg, info
    gc.collect()
    print("ringws: heap free %d alloc %d after start-up" % (gc.mem_free(), gc.mem_alloc()))
    asyncio.run(srv.serve())


def main(after_install=None):
    """run(), and on a fatal error: say so, let the board report it, re-raise."""
    try:
        run(after_install)
    except KeyboardInterrupt:
        print("ringws: stopped")
    except Exception as e:
        print("ringws: fatal error:", repr(e))
        try:
            import board

            board.fatal(e)  # on a board: report, then reset after a pause
        except Exception:
            pass
        raise
