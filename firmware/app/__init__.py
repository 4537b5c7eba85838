# The default application: /echo for anyone, the dashboard page and its /ws channel.
from app import echo, dashboard


def install(srv, cfg, board):
    srv.route("/echo", echo.EchoHandler())
    dashboard.install(srv, cfg, board)
