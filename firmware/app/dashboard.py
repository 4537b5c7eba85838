# Placeholder: the dashboard channel (/ws) and page (/) are built in their own issue.


def install(srv, cfg, board):
    srv.static("/", "www")
