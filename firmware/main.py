# Entry point on the board and under the MicroPython unix port (make sim).
# MicroPython compiles main.py from source in RAM at every boot, so it stays short: the
# start-up lives in launch.py (bytecode), which leaves the heap before the loop starts.
import launch

try:
    srv = launch.start()
    launch.forget(srv)
    del launch
    import asyncio, gc

    gc.collect()  # (here: launch.py's code is gone, the figure is what serving starts with)
    print("ringws: heap free %d alloc %d after start-up" % (gc.mem_free(), gc.mem_alloc()))

    try:
        asyncio.run(srv.serve())
    except KeyboardInterrupt:  # Ctrl-C: 1001 to every client, a bounded wait, then force
        try:
            asyncio.run(srv.shutdown())
        except MemoryError:
            # On the unix port, SIGINT's KeyboardInterrupt is raised inside the signal handler:
            # inside a collection, it leaves the heap locked and its marks half made, and
            # collecting again could free live objects. The sockets close as the process ends.
            print("ringws: no heap: no 1001")
    print("ringws: stopped")
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
