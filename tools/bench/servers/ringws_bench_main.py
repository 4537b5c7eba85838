# Runs ringws's own main.py with the bench control port beside it, on the same asyncio
# loop (hooked in through launch.after_install).
#   micropython -X heapsize=110k -m ringws_bench_main CTL_PORT
# The folder is the bench's own build of firmware/; the harness has written the server's
# port into its config.json. This module is compiled to .mpy, and main.py is imported,
# which compiles it from source as a board does at boot.
import gc
import sys

CTL_PORT = int(sys.argv[1])
PAYLOAD = bytes(16)


def start_ctl(srv, cfg):
    # After the slot arena and the server's code are in place, like any application.
    import asyncio

    import ctl

    def send_frames(arg):
        # "sendn N": N 16-byte frames through conn.send() on the first open connection,
        # with the collector paused; replies the bytes allocated and the frames queued.
        n = int(arg)
        conn = None
        for s in srv.slots:
            if s.conn is not None and s.conn.open:
                conn = s.conn
                break
        if conn is None:
            return b'{"error": "no open connection"}\n'
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        sent = 0
        for _ in range(n):
            if conn.send(PAYLOAD):
                sent += 1
        delta = gc.mem_alloc() - a0
        gc.enable()
        return b'{"delta": %d, "sent": %d}\n' % (delta, sent)

    ctl.Ctl.extra[b"sendn"] = send_frames
    asyncio.create_task(ctl.serve_async(CTL_PORT))


import launch  # noqa: E402

if CTL_PORT:  # 0: no control port (the capacity rows)
    launch.after_install = start_ctl
del launch
import main  # noqa: E402,F401  (runs the firmware's main.py, as the board does)
