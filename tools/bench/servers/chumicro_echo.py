# chumicro-websockets' server echo, run as its README shows (a check/handle loop).
#   micropython -X heapsize=110k -m chumicro_echo PORT CTL_PORT [MAX_CONNECTIONS]
# CTL_PORT 0: no control port (the capacity rows, where it would only take heap).
# Everything is the library default except max_connections (default 2), which the bench
# raises so the 8-connection and capacity rows can run at all.
import sys

from chumicro_sockets import listener
from chumicro_timing import ticks_ms
from chumicro_websockets import WebSocketServer
from chumicro_websockets._wire import WebSocketBackpressureError

# send_* raises when the connection's TX queue (8 frames by default) is full, and an
# exception from a callback stops the whole server loop. The echo drops that reply and
# counts it instead, as a user would have to; the bench then sees a stalled client.
drops = [0]


def on_connection(conn):
    def text(t):
        try:
            conn.send_text(t)
        except WebSocketBackpressureError:
            drops[0] += 1

    def binary(b):
        try:
            conn.send_binary(b)
        except WebSocketBackpressureError:
            drops[0] += 1

    conn.on_text = text
    conn.on_binary = binary


def main(port, ctl_port, max_connections):
    server = WebSocketServer(
        listener=listener("127.0.0.1", port),
        on_connection=on_connection,
        max_connections=max_connections,
    )
    control = None
    if ctl_port:
        import ctl

        control = ctl.Polled(ctl_port)
    print("chumicro echo on", port)
    n = 0
    while True:
        now = ticks_ms()
        if server.check(now):
            server.handle(now)
        n += 1
        if control is not None and not n & 63:
            control.poll()


main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 64)
