# The bit of HTTP a device needs: /stats, static files (gzip when accepted, revalidated
# with ETag), application routes and error responses. Responses go through the slot's
# send ring in chunks, so a page of any size costs no more memory than the ring.
import json
import os

from ringws.handshake import HttpError

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


def stats_route(srv, req):
    return 200, "application/json", json.dumps(srv.stats())


async def respond(srv, slot, req):
    try:
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "only GET and HEAD are served", (("Allow", "GET, HEAD"),))
        route = srv.http_routes.get(req.path)
        if route is None and req.path == "/stats":
            route = stats_route
        if route is not None:
            status, ctype, body = route(srv, req)
            if isinstance(body, str):
                body = body.encode()
            head = response_head(status, ctype, len(body), (("Cache-Control", "no-store"),))
            await send_bytes(srv, slot, head if req.method == "HEAD" else head + body)
            return
        for prefix, directory in srv.static_routes:
            if req.path.startswith(prefix):
                await _static(srv, slot, req, directory, req.path[len(prefix):])
                return
        raise HttpError(404, "nothing at " + req.path)
    except HttpError as err:
        await send_bytes(srv, slot, error_response(err))


async def send_bytes(srv, slot, data):
    ring = slot.ring
    off = 0
    n = len(data)
    while off < n:
        take = min(ring.free(), n - off)
        ring.write(data, off, take)
        off += take
        await srv.flush(slot)


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st[0] & 0x4000:  # a directory
        return None
    return st


async def _static(srv, slot, req, directory, rel):
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
    ext = rel.rpartition(".")[2]
    ctype = TYPES.get(ext, "application/octet-stream")
    if req.header("if-none-match") == etag:
        await send_bytes(srv, slot, response_head(304, None, None, headers))
        return
    await send_bytes(srv, slot, response_head(200, ctype, size, headers))
    if req.method == "HEAD":
        return
    # Stream the file through the receive buffer (free now) into the ring.
    rbuf = slot.rbuf
    chunk = min(len(rbuf), srv.cfg["static_chunk"])
    with open(path, "rb") as f:
        while True:
            n = f.readinto(rbuf[:chunk])
            if not n:
                break
            ring = slot.ring
            if ring.free() < n:
                await srv.flush(slot)
            ring.write(rbuf, 0, n)
    await srv.flush(slot)


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
