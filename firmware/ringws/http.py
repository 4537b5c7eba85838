# The bit of HTTP a device needs: /stats, static files (gzip when accepted, revalidated
# with ETag), application routes and error responses. Responses go through the slot's
# send ring in chunks, so a page of any size costs no more memory than the ring.
#
# What only some requests need lives in modules loaded for that request and dropped
# with it (compat.use_once): static.py (files) and jsonout.py (/stats). Their code is in
# the heap only while they answer. A MemoryError while one loads ends that request alone, with
# the prebuilt 503 naming it (connection.failure): the slot is still in the HTTP phase,
# and no other connection's state is touched.
from ringws.compat import use_once, wait_writable, why
from ringws.handshake import HttpError

_ANSWER = 3  # slot.ANSWER
_NO_STORE = (("Cache-Control", "no-store"),)

# Status lines: one string, not a dict (a table plus a string object per entry). Here,
# not in handshake.py: a device that only does WebSocket never loads them. body.py adds
# its own.
REASONS = ("\n101 Switching Protocols\n200 OK\n304 Not Modified\n400 Bad Request"
           "\n401 Unauthorized\n403 Forbidden\n404 Not Found\n405 Method Not Allowed"
           "\n408 Request Timeout\n426 Upgrade Required"
           "\n431 Request Header Fields Too Large\n500 Internal Server Error"
           "\n503 Service Unavailable\n")


def reason(status):
    """The reason phrase of a status code ("Error" for one not listed)."""
    i = REASONS.find("\n%d " % status)
    if i < 0:
        return "Error"
    return REASONS[i + 5 : REASONS.find("\n", i + 5)]


def respond(srv, req):
    """What to answer req with: (a list of bytes-likes to send, then None, the path of a
    file or a jsonout.Reader to send after them). Deciding is a plain call; send() then
    writes it all. A route's body is a str, bytes, a list of bytes-likes sent one after
    another, or a jsonout.Reader (JSON read a chunk at a time, as /stats is)."""
    try:
        path = req.path
        route = srv.http_routes.get(path)
        if route is not None:
            status, ctype, body = route[0](srv, req)
        elif path == "/stats":
            # Not one block of text, which a heap cut up by traffic may not have.
            body = use_once("jsonout").Reader(srv.stats())
            status, ctype = 200, "application/json"
        else:
            for prefix, directory in srv.static_routes:
                if path.startswith(prefix):
                    return use_once("static").answer(req, directory, path[len(prefix):])
            raise HttpError(404, "nothing at " + path)
        if isinstance(body, str):
            body = body.encode()
        if hasattr(body, "readinto"):  # a jsonout.Reader (loaded per request: no type here)
            n = getattr(body, "total")
        else:
            if not isinstance(body, list):
                body = [body]
            n = 0
            for piece in body:
                n += len(piece)
        head = response_head(status, ctype, n, _NO_STORE)
        if req.method == "HEAD":
            return [head], None
        if not isinstance(body, list):
            return [head], body
        body.insert(0, head)  # the head, then the body: no copy of the two joined
        return body, None
    except HttpError as err:
        return [error_response(err)], None


def answer(write_out, srv, slot, req):
    """The coroutine that answers a request at a path that takes only GET (and HEAD):
    a route's, a file's, /stats. The slot enters the ANSWER phase."""
    if req.method == "GET" or req.method == "HEAD":
        try:
            pieces, path = respond(srv, req)
        except MemoryError:
            co = _later(write_out, srv, slot, req)
            slot.phase = _ANSWER
            return co
    else:
        pieces, path = [error_response(HttpError(  # only GET and HEAD are served
            405, why("faults", 25), (("Allow", "GET, HEAD"),)))], None
    co = send(write_out, srv, slot, pieces, path)  # (out of memory here: still a 503)
    slot.phase = _ANSWER
    return co


async def _later(write_out, srv, slot, req):
    # The messages other connections have in flight can leave the heap, for a moment, in
    # pieces too small for an answer's code (static.py, jsonout.py): a full board answers
    # a little later rather than 503 at once. (Names imported here: this module stays.)
    from ringws.compat import collect, sleep_ms

    for _ in range(3):
        collect()
        await sleep_ms(20)
        try:
            pieces, path = respond(srv, req)
            break
        except MemoryError:
            pass
    else:
        slot.phase = 1  # (slot.HTTP) nothing sent yet: connection.failure answers its prebuilt 503
        raise MemoryError
    await send(write_out, srv, slot, pieces, path)


async def send(write_out, srv, slot, pieces, path=None):
    """Write pieces (a list of bytes-likes), then the file at path (if any; or what a
    jsonout.Reader reads), through the slot's send ring. One coroutine for the whole
    response: one generator frame on the heap while it is in flight, not a chain of
    them. The file is read in chunks through the receive buffer (free in the HTTP
    phase): a page costs no more memory than the ring. write_out: connection.write_out
    (passed in: connection imports this module)."""
    ring = slot.ring
    i = off = 0
    f = buf = None
    try:
        while True:
            if write_out(srv, slot):
                if path is not None and not isinstance(path, str):
                    path.readinto(None)  # a jsonout.Reader: its text must not change meanwhile
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
                    f = open(path, "rb") if isinstance(path, str) else path
                    buf = slot.rbuf[: min(len(slot.rbuf), srv.cfg["static_chunk"])]
                    pieces = [None]  # one chunk at a time, in this list
                pieces[0] = buf[: f.readinto(buf)]
                i = 0
                if not pieces[0]:
                    return
    finally:
        if f is not None:
            f.close()


def response_head(status, content_type=None, length=None, headers=()):
    # Joined once: adding line after line makes a new string each time, and on a full
    # board the kept slot's answer has only a few KB of heap.
    parts = ["HTTP/1.1 %d %s\r\n" % (status, reason(status))]
    if content_type:
        parts.append("Content-Type: %s\r\n" % content_type)
    if length is not None:
        parts.append("Content-Length: %d\r\n" % length)
    for h in headers:
        parts.append("%s: %s\r\n" % h)
    parts.append("Connection: close\r\n\r\n")
    return "".join(parts).encode()


def error_response(err):
    body = ("%d %s: %s\n" % (err.status, reason(err.status), err.message)).encode()
    return response_head(err.status, "text/plain", len(body), err.headers) + body
