# Request bodies for HTTP routes that take more than GET (srv.http(..., methods)): loaded
# with the first such route, so an app without one never pays for it. The body is read
# into the slot's block right after the request head, not copied: the whole request
# (head and body) fits the slot, or 413 answers before the body is read. Until the body
# is in, the slot stays in the HTTP phase, whose deadline (handshake_timeout_ms after
# the head) answers 408.
#
# Few globals (modules, not their names): each costs an entry in this module's table.
from ringws import compat, handshake, http

# The parser keeps these fields from now on (registered before any request is parsed).
handshake.KNOWN += (b"content-length", b"transfer-encoding", b"expect")
http.REASONS += "411 Length Required\n413 Content Too Large\n417 Expectation Failed\n"


def length(req, methods, room):
    """The body's length (0: none) if the route takes req; room: bytes the slot has
    after the head. Raises the HttpError to answer instead."""
    m = req.method
    if m not in methods and not (m == "HEAD" and "GET" in methods):
        if "GET" in methods and "HEAD" not in methods:
            methods = tuple(methods) + ("HEAD",)
        raise handshake.HttpError(405, m + " not allowed", (("Allow", ", ".join(methods)),))
    value = req.header("content-length")
    if m == "GET" or m == "HEAD" or (value is None and m != "POST" and m != "PUT"):
        return 0  # (a body sent with GET is not read)
    if value is None or req.header("transfer-encoding") is not None:
        # Chunked or not, the length must be known before the body is read: 411 asks
        # for Content-Length, which any client can send for a body that fits the slot.
        raise handshake.HttpError(411, "Content-Length needed")
    n = None
    for v in value.split(","):  # (repeated fields were joined with ", ")
        v = v.strip()
        if not v.isdigit() or (n is not None and v != n):
            raise handshake.HttpError(400, "bad Content-Length")
        n = v
    n = int(n) if len(n) < 10 else room + 1
    if n > room:
        raise handshake.HttpError(413, "at most %d bytes fit" % room)
    v = req.header("expect")
    if v is not None and not handshake.has_token(v, "100-continue"):
        raise handshake.HttpError(417, "only 100-continue")
    return n


async def answer(write_out, srv, slot, req, end, methods):
    """Answer the request whose head is slot.block[:end] at a route with these methods:
    its body first (req.body, valid during the route's call)."""
    block = slot.block
    try:
        n = length(req, methods, len(block) - end)
    except handshake.HttpError as err:
        slot.phase = 3  # slot.ANSWER
        await http.send(write_out, srv, slot, [http.error_response(err)])
        return
    got = slot.rlen - end  # (read with the head)
    k = 0 if got < n and req.header("expect") is not None else 25
    while k < 25:  # straight from the constant: the ring lies in the block
        sent = compat.send_from(slot.sock, b"HTTP/1.1 100 Continue\r\n\r\n", k, 25 - k)
        if sent is None:
            await compat.wait_writable(slot.sock, slot)
        else:
            k += sent
    while got < n:
        await compat.wait_readable(slot.sock, slot)
        k = compat.recv_into(slot.sock, block[end + got : end + n], n - got)
        if k == 0:
            slot.cause = "peer_reset"  # gone before the body was complete
            return
        if k:
            got += k
            srv.bytes_in += k
    if n:
        req.body = block[end : end + n]
    slot.phase = 3
    pieces, path = http.respond(srv, req)
    req = None  # (not kept while the answer goes out: the ring overwrites the body)
    await http.send(write_out, srv, slot, pieces, path)
