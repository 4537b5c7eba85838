# The default application: /echo for anyone, the dashboard page and its /ws channel.
import gc
import sys

from app import echo


def install(srv, cfg, board):
    srv.route("/echo", echo.EchoHandler())
    srv.static("/", "www")
    # The dashboard reads only the app's settings: the whole config.json (every section,
    # parsed at start-up) would stay in the heap for as long as the stand-in keeps it.
    srv.route("/ws", LazyDashboard(srv, {"app": cfg.get("app")}, board))


class LazyDashboard:
    """The dashboard's /ws handler, standing in for the real one (app/dashboard.py).

    The dashboard's code costs about 4 KB of heap on the unix port: it is loaded when a
    page connects and dropped when the last one has closed, so a device that only echoes,
    or whose page is not open, does not pay for it. Every callback goes through here. The
    simulated LED's state (the host has no pin) is kept across, as a real pin keeps its.
    """

    # The page sends only short commands: permessage-deflate (which browsers always offer)
    # would load its code and inflater (about 7 KB) for nothing.
    compression = False

    def __init__(self, srv, cfg, board):
        self.args = (srv, cfg, board)
        self.real = None
        self.lit = False
        self.ticking = False

    def on_open(self, conn):
        if self.real is None:
            # Collected before and after, as launch.start() does for every module: the
            # import runs in the middle of a page load (Chromium opens several sockets
            # at once), and its loading garbage must be gone before the dashboard takes
            # its buffer, or the free heap is left in pieces too small for it.
            gc.collect()
            from app import dashboard

            gc.collect()
            real = dashboard.make(*self.args)
            real.lit = self.lit
            if not self.ticking:  # one timer for good: its period never changes
                self.ticking = True
                self.args[0].add_timer(real.period_ms, self.tick)
            self.real = real
        self.real.on_open(conn)

    def tick(self, now_ms):
        if self.real is not None:
            self.real.tick(now_ms)

    # The first connection fails (1011) if the dashboard could not load; until it has,
    # the other callbacks have nothing to forward to.
    def on_message(self, conn, data, text):
        if self.real is not None:
            return self.real.on_message(conn, data, text)

    def on_writable(self, conn):
        if self.real is not None:
            self.real.on_writable(conn)

    def on_close(self, conn, code, reason):
        real = self.real
        if real is not None:
            real.on_close(conn, code, reason)
            if not real.tabs:  # the last page is gone: so is the dashboard's code
                self.lit = real.lit
                self.real = None
                sys.modules.pop("app.dashboard", None)
                globals().pop("dashboard", None)  # (the package's attribute for it)

    def on_pong(self, conn, rtt_ms):
        if self.real is not None:
            self.real.on_pong(conn, rtt_ms)
