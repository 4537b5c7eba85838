# microdot's documented WebSocket echo, with microdot's defaults.
#   micropython -X heapsize=110k -m microdot_echo PORT CTL_PORT
import asyncio
import sys

from microdot import Microdot
from microdot.websocket import with_websocket

app = Microdot()


@app.route("/echo")
@with_websocket
async def echo(request, ws):
    while True:
        data = await ws.receive()
        await ws.send(data)


async def main(port, ctl_port):
    if ctl_port:  # 0: no control port (capacity rows)
        import ctl

        await ctl.serve_async(ctl_port)
    print("microdot echo on", port)
    await app.start_server(host="127.0.0.1", port=port)


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
