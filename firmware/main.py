# Entry point on the board and under the MicroPython unix port (make sim).
# MicroPython compiles main.py from source in RAM at every boot, so it stays short: the
# start-up lives in launch.py (bytecode), which leaves the heap before the loop starts.
import gc
import launch

try:
    srv = launch.start()
    launch.forget()
    del launch
    import asyncio

    try:
        asyncio.run(srv.serve())
    except KeyboardInterrupt:  # Ctrl-C: 1001 to every client, a bounded wait, then force
        # The unix port raises SIGINT's KeyboardInterrupt from the signal handler: one that
        # lands inside a collection leaves the heap locked until the next collection.
        gc.collect()
        asyncio.run(srv.shutdown())
    print("ringws: stopped")
except KeyboardInterrupt:
    gc.collect()
    print("ringws: stopped")
except Exception as e:
    print("ringws: fatal error:", repr(e))
    try:
        import board

        board.fatal(e)  # on a board: report, then reset after a pause
    except Exception:
        pass
    raise
