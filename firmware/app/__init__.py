# The default application: /echo for anyone, the dashboard page and its /ws channel.
import gc

from app import echo


def install(srv, cfg, board):
    srv.route("/echo", echo.EchoHandler())
    srv.static("/", "www")
    srv.route("/ws", LazyDashboard(srv, cfg, board))


class LazyDashboard:
    """Stands in for the dashboard's /ws handler until the first page connects.

    The dashboard's code costs about 5 KB of heap on the unix port; a device that only
    echoes (or has not been visited yet) never pays it. The first connection imports the
    dashboard, which registers itself for /ws; that connection keeps talking through
    this stand-in.
    """

    def __init__(self, srv, cfg, board):
        self.args = (srv, cfg, board)
        self.real = None

    def on_open(self, conn):
        if self.real is None:
            # Collected before and after, as launch.start() does for every module: the
            # import runs in the middle of a page load (Chromium opens several sockets
            # at once), and its loading garbage must be gone before the dashboard takes
            # its buffer, or the free heap is left in pieces too small for it.
            gc.collect()
            from app import dashboard

            gc.collect()

            self.real = dashboard.install(*self.args)
        self.real.on_open(conn)

    # The first connection fails (1011) if the dashboard could not load; until it has,
    # the other callbacks have nothing to forward to.
    def on_message(self, conn, data, text):
        if self.real is not None:
            return self.real.on_message(conn, data, text)

    def on_writable(self, conn):
        if self.real is not None:
            self.real.on_writable(conn)

    def on_close(self, conn, code, reason):
        if self.real is not None:
            self.real.on_close(conn, code, reason)

    def on_pong(self, conn, rtt_ms):
        if self.real is not None:
            self.real.on_pong(conn, rtt_ms)
