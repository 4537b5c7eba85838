# The bit of HTTP a device needs: /stats, static files (gzip when accepted, revalidated
# with ETag), application routes and error responses. Responses go through the slot's
# send ring in chunks, so a page of any size costs no more memory than the ring.
import json
import os

from ringws.compat import wait_writable
from ringws.handshake import HttpError

_ANSWER = 3  # slot.ANSWER

# Status lines and error bodies live here, not in handshake.py: a device that only does
# WebSocket never loads them.
REASONS = {
    101: "Switching Protocols",
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "json": "application/json",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "txt": "text/plain; charset=utf-8",
}


def json_pieces(obj):
    """The dict obj as JSON, in pieces of one member each (bytes). Not one string: a
    heap cut up by traffic may have no free block as large as /stats (about 700 bytes),
    let alone the copies that building and sending one would take."""
    out = []
    for k in obj:
        member = "%s%s:%s" % ("," if out else "{", json.dumps(k), json.dumps(obj[k]))
        out.append(member.encode())
    out.append(b"}" if out else b"{}")
    return out


def respond(srv, req):
    """What to answer req with: (a list of bytes-likes to send, the path of a file to send
    after them or None). Deciding is a plain call; send() then writes it all. A route's
    body is a str, bytes, or a list of bytes-likes sent one after another."""
    try:
        route = srv.http_routes.get(req.path)
        if route is not None or req.path == "/stats":
            if route is None:
                status, ctype, body = 200, "application/json", json_pieces(srv.stats())
            else:
                status, ctype, body = route[0](srv, req)
            if isinstance(body, str):
                body = body.encode()
            if not isinstance(body, list):
                body = [body]
            n = 0
            for piece in body:
                n += len(piece)
            head = response_head(status, ctype, n, (("Cache-Control", "no-store"),))
            if req.method == "HEAD":
                return [head], None
            body.insert(0, head)  # the head, then the body: no copy of the two joined
            return body, None
        for prefix, directory in srv.static_routes:
            if req.path.startswith(prefix):
                return _static(req, directory, req.path[len(prefix):])
        raise HttpError(404, "nothing at " + req.path)
    except HttpError as err:
        return [error_response(err)], None


def answer(write_out, srv, slot, req):
    """The coroutine that answers a request at a path that takes only GET (and HEAD):
    a route's, a file's, /stats. The slot enters the ANSWER phase."""
    if req.method == "GET" or req.method == "HEAD":
        pieces, path = respond(srv, req)
    else:
        pieces, path = [error_response(HttpError(
            405, "only GET and HEAD are served", (("Allow", "GET, HEAD"),)))], None
    slot.phase = _ANSWER
    return send(write_out, srv, slot, pieces, path)


async def send(write_out, srv, slot, pieces, path=None):
    """Write pieces (a list of bytes-likes), then the file at path (if any), through the
    slot's send ring. One coroutine for the whole response: one generator frame on the
    heap while it is in flight, not a chain of them. The file is read in chunks through
    the receive buffer (free in the HTTP phase): a page costs no more memory than the
    ring. write_out: connection.write_out (passed in: connection imports this module)."""
    ring = slot.ring
    i = off = 0
    f = buf = None
    try:
        while True:
            if write_out(srv, slot):
                await wait_writable(slot.sock, slot)
                slot.stuck_at = 0  # progress: the answer's deadline starts over
                continue
            if i < len(pieces):
                data = pieces[i]
                take = min(ring.free(), len(data) - off)
                ring.write(data, off, take)
                off += take
                if off == len(data):
                    i += 1
                    off = 0
            elif path is None:
                return  # all of it is out
            else:
                if f is None:  # opened here, so that it is closed whatever happens
                    f = open(path, "rb")
                    buf = slot.rbuf[: min(len(slot.rbuf), srv.cfg["static_chunk"])]
                    pieces = [None]  # one chunk at a time, in this list
                pieces[0] = buf[: f.readinto(buf)]
                i = 0
                if not pieces[0]:
                    return
    finally:
        if f is not None:
            f.close()


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st[0] & 0x4000:  # a directory
        return None
    return st


def _static(req, directory, rel):
    if rel == "" or rel.endswith("/"):
        rel += "index.html"
    if ".." in rel or "\\" in rel or rel.startswith("/"):
        raise HttpError(400, "bad path")
    path = directory + "/" + rel
    headers = [("Cache-Control", "no-cache"), ("Vary", "Accept-Encoding")]
    st = None
    if "gzip" in (req.header("accept-encoding") or ""):
        st = _stat(path + ".gz")
        if st is not None:
            path += ".gz"
            headers.append(("Content-Encoding", "gzip"))
    if st is None:
        st = _stat(path)
    if st is None:
        raise HttpError(404, "nothing at " + req.path)
    size = st[6]
    etag = '"%x-%x"' % (size, st[8])
    headers.append(("ETag", etag))
    if req.header("if-none-match") == etag:
        return [response_head(304, None, None, headers)], None
    ctype = TYPES.get(rel.rpartition(".")[2], "application/octet-stream")
    return [response_head(200, ctype, size, headers)], (None if req.method == "HEAD" else path)


def response_head(status, content_type=None, length=None, headers=()):
    head = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Error"))
    if content_type:
        head += "Content-Type: " + content_type + "\r\n"
    if length is not None:
        head += "Content-Length: %d\r\n" % length
    for name, value in headers:
        head += name + ": " + value + "\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode()


def error_response(err):
    body = ("%d %s: %s\n" % (err.status, REASONS.get(err.status, "Error"), err.message)).encode()
    return response_head(err.status, "text/plain", len(body), err.headers) + body
