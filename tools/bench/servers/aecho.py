# The async echo (ringws.aio) on /aecho: every message back with its type, any size (a
# message larger than the slot comes in pieces and goes back fragment by fragment). The
# bench's ringws-async target and host_tests/test_aio_firmware.py run it as the app
# (config.json: "app": {"module": "aecho"}).
from ringws.aio import serve_async


async def echo(conn):
    async for msg in conn:  # a whole message, or a piece of a larger one
        await conn.send_fragment(msg, conn.text, conn.first, conn.last)


def install(srv, cfg, board):
    srv.route("/aecho", serve_async(echo))
