# The ceiling: a raw TCP echo on MicroPython asyncio, no WebSocket framing at all.
#   micropython -X heapsize=110k -m raw_echo PORT CTL_PORT
import asyncio
import sys


async def echo(r, w):
    buf = bytearray(4096)
    mv = memoryview(buf)
    w.s.setsockopt(6, 1, 1)  # TCP_NODELAY, as ringws does
    try:
        while True:
            n = await r.readinto(buf)
            if not n:
                break
            w.write(mv[:n])
            await w.drain()
    except OSError:
        pass
    finally:
        await w.wait_closed()


async def main(port, ctl_port):
    if ctl_port:  # 0: no control port (capacity rows)
        import ctl

        await ctl.serve_async(ctl_port)
    srv = await asyncio.start_server(echo, "127.0.0.1", port, backlog=16)
    print("raw echo on", port)
    await srv.wait_closed()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
