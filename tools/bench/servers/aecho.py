# The async echo (ringws.aio) on /aecho: every message back with its type, any size (a
# message larger than the slot comes in pieces and goes back in the frames it came in,
# from the receive buffer where it can). The bench's ringws-async target and
# host_tests/test_aio_firmware.py run it as the app (config.json: "app": {"module": "aecho"}).
from ringws.aio import serve_async


async def echo(conn):
    async for msg in conn:  # a whole message, or a piece of a larger one
        await conn.relay(msg)


def install(srv, cfg, board):
    route = serve_async(echo)
    route.whole_frames = True  # a large frame that arrived whole comes as one piece
    srv.route("/aecho", route)
