# Test entry point (fwrun.Firmware(entry=...) copies it into the build): main.py plus what
# an application adds through the public API, for test_integration_routes.py:
#   /proto   a WebSocket route with subprotocols; every message gets back
#            "<conn.subprotocol>:<message>"
#   /hello   srv.http route answering a str built from the query
#   /pieces  srv.http route answering a list of bytes-likes, status 201
#   /json    srv.http route answering a dict as JSON read in chunks (jsonout.Reader)
# It also prints what the slot arena really holds (the buffers the slots and the shared
# receive buffer point into), to compare with launch.py's budget line.


class ProtoHandler:
    subprotocols = ("chat.v2", "chat.v1")

    def on_message(self, conn, data, text):
        conn.send(str(conn.subprotocol) + ":" + str(data, "utf-8"), True)


def _hello(srv, req):
    return 200, "text/plain", "hello " + (req.query or "nobody")


def _pieces(srv, req):
    return 201, "application/octet-stream", [b"one,", bytearray(b"two,"), memoryview(b"three")]


# Made at start-up, as an app's large objects should be: a 2 KB block made per request
# is not always there in a heap cut up by earlier connections (the request gets 503).
NUMBERS = list(range(200))


def _json(srv, req):
    from ringws.jsonout import Reader

    return 200, "application/json", Reader({"query": req.query, "n": NUMBERS})


def _routes_hook(srv, cfg):
    srv.route("/proto", ProtoHandler())
    srv.http("/hello", _hello)
    srv.http("/pieces", _pieces)
    srv.http("/json", _json)
    shared = srv.shared
    print("ringws-test: arena %d slots, blocks %d B, shared %d B" % (
        len(srv.slots), sum(len(s.block) for s in srv.slots),
        0 if shared is None else len(shared)))


import launch  # noqa: E402

launch.after_install = _routes_hook
del launch
import main  # noqa: E402,F401  (runs the firmware's main.py, as the board does)
