# The unix port's stop request, for make sim (tools/sim_signals.py) and the tests
# (tools/fwrun.py): whoever started the interpreter closes its stdin, and a timer sees the
# end of it between two steps of the loop and shuts the server down (1001 to every
# client). A SIGINT cannot promise that here: the unix port raises it inside its signal
# handler, wherever the interpreter is (inside a collection it leaves the heap locked,
# between a frame's header and its payload the stream cut). Loaded only where
# RINGWS_STOP=stdin (netup.py); never on a board.
import select
import sys


def watch(srv):
    """The timer's callback: once stdin ends (or brings anything), srv shuts down."""
    p = select.poll()
    p.register(sys.stdin, select.POLLIN)

    def check(now):
        for _ in p.ipoll(0):
            p.unregister(sys.stdin)
            import asyncio

            asyncio.create_task(srv.shutdown())
            break

    return check
