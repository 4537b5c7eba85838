# Bench instrumentation, loaded into every target's MicroPython process.
#
# A one-line TCP control port, separate from the server under test:
#   "mem\n" -> gc.collect(), then {"alloc": .., "free": ..}
#   "off\n" -> gc.collect(), gc.disable(), remember gc.mem_alloc()
#   "on\n"  -> {"delta": bytes allocated since "off"}, gc.enable()
#   "<name> <arg>\n" -> a target-specific command registered in Ctl.extra (ringws:
#   "sendn N", N frames sent through the server's own send path, see ringws_bench_main)
# The harness calibrates the control port's own allocations with an off/on pair that has
# no traffic in between, and subtracts them.
import gc
import socket


class Ctl:
    extra = {}

    def __init__(self):
        self.a0 = 0

    def command(self, line):
        cmd, _, arg = line.strip().partition(b" ")
        if cmd in Ctl.extra:
            return Ctl.extra[cmd](arg)
        if cmd == b"off":
            gc.collect()
            gc.disable()
            self.a0 = gc.mem_alloc()
            return b'{"ok": 1}\n'
        if cmd == b"on":
            d = gc.mem_alloc() - self.a0
            gc.enable()
            return b'{"delta": %d}\n' % d
        gc.collect()
        return b'{"alloc": %d, "free": %d}\n' % (gc.mem_alloc(), gc.mem_free())


_OOM = b'{"error": "MemoryError"}\n'


async def serve_async(port):
    # For asyncio targets: the polled control port below, checked by a task every 10 ms.
    # (asyncio.start_server would cost a Server, two Streams and a task per command:
    # kilobytes that a target at 110 KiB does not have to spare.)
    import asyncio

    control = Polled(port)

    async def loop():
        while True:
            control.poll()
            await asyncio.sleep_ms(10)

    return asyncio.create_task(loop())


class Polled:
    # For polled (non-asyncio) targets: call poll() every few loop passes. ipoll(0)
    # allocates nothing when idle, so it does not pollute the target's figures.
    def __init__(self, port):
        import select

        self.ctl = Ctl()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.lsock.listen(4)
        self.poller = select.poll()
        self.poller.register(self.lsock, select.POLLIN)

    def poll(self):
        for _ in self.poller.ipoll(0):
            try:
                s, _a = self.lsock.accept()
            except (OSError, MemoryError):
                continue
            try:
                s.settimeout(2)
                line = b""
                while not line.endswith(b"\n") and len(line) < 16:
                    chunk = s.recv(16)  # (readinto with a timeout fails at once here)
                    if not chunk:
                        break
                    line += chunk
                try:
                    reply = self.ctl.command(line)
                except MemoryError:
                    reply = _OOM
                s.write(reply)
            except (OSError, MemoryError):
                pass  # no answer: the harness retries, then records the failure
            finally:
                s.close()
