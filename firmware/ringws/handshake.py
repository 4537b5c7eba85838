# Bounded HTTP/1.1 request parsing and WebSocket upgrade validation (RFC 6455 section 4).
# Sans-I/O: bytes in, a Request or an HttpError out; responses are built as bytes.
import binascii
import hashlib

from ringws.compat import MICROPYTHON, use_once, why
from ringws.kernels import find

# MicroPython decodes only UTF-8 (and raises on invalid input); CPython reads the head as
# latin-1 so that any byte is accepted and the checks below decide.
_HEAD_CODEC = "utf-8" if MICROPYTHON else "latin-1"

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADERS = 40


class HttpError(Exception):
    """A request the server answers with an error status and closes."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class Request:
    body = b""  # an HTTP route's request body (body.py): a memoryview into the slot

    def __init__(self, method, target, version, headers):
        self.method = method
        path, _, query = target.partition("?")
        self.path = path
        self.query = query
        self.version = version
        # lower-case name -> value (repeats joined with ", "), for the names in KNOWN
        self.headers = headers

    def header(self, name, default=None):
        return self.headers.get(name, default)


def find_end(buf, start, end):
    """Index just past the blank line ending the headers in buf[:end], or -1.

    start lets a caller resume the search after new bytes arrive without rescanning.
    """
    i = find(buf, b"\r\n\r\n", max(0, start - 3), end)
    return -1 if i < 0 else i + 4


# The header fields anything in ringws looks at; others are checked for form and dropped,
# so a request with many large headers costs no more memory than a small one.
KNOWN = (
    b"host",
    b"upgrade",
    b"connection",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-protocol",
    b"origin",
    b"authorization",
    b"accept-encoding",
    b"if-none-match",
)  # (body.py adds the body's fields when an app registers a route that takes one)


def parse_request(buf, end):
    """Parse the request head in buf[:end] (which includes the final blank line)."""
    eol = find(buf, b"\r\n", 0, end)
    parts = bytes(buf[:eol]).split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, why("faults", 14))  # malformed request line
    try:
        method, target, version = [str(p, _HEAD_CODEC) for p in parts]
    except (UnicodeError, ValueError):
        raise HttpError(400, why("faults", 15))  # request line is not valid text
    if not version.startswith("HTTP/1."):
        raise HttpError(400, why("faults", 16, version[:16]))  # unsupported HTTP version: %s
    if not target.startswith("/"):
        raise HttpError(400, why("faults", 17))  # request target must be a path
    headers = {}
    count = 0
    pos = eol + 2
    while pos < end - 2:
        eol = find(buf, b"\r\n", pos, end)
        count += 1
        if count > MAX_HEADERS:
            raise HttpError(431, why("faults", 18, MAX_HEADERS))  # more than %d header fields
        colon = find(buf, b":", pos, eol)
        if colon <= pos or buf[colon - 1] in (32, 9) or buf[pos] in (32, 9):
            raise HttpError(400, why("faults", 19))  # malformed header line
        name = bytes(buf[pos:colon]).lower()
        if b" " in name or b"\t" in name:
            raise HttpError(400, why("faults", 20))  # malformed header name
        if name in KNOWN:
            try:
                value = str(bytes(buf[colon + 1 : eol]), _HEAD_CODEC).strip()
            except (UnicodeError, ValueError):
                raise HttpError(400, why("faults", 21))  # header value is not valid text
            key = str(name, "ascii")
            old = headers.get(key)
            headers[key] = value if old is None else old + ", " + value
        pos = eol + 2
    return Request(method, target, version, headers)


def has_token(value, token):
    """Does a comma-separated header value contain token (case-insensitive)?"""
    if not value:
        return False
    for item in value.split(","):
        if item.strip().lower() == token:
            return True
    return False


def is_upgrade(req):
    return has_token(req.header("upgrade"), "websocket")


def validate_upgrade(req):
    """Check a WebSocket opening handshake; returns the Sec-WebSocket-Accept value, or
    raises the HttpError that names what is wrong. Those messages cost heap and are for
    refusals only: they live in refusal.py, loaded to answer one and dropped after it."""
    key = req.header("sec-websocket-key")
    version = req.header("sec-websocket-version")
    if (req.method == "GET" and req.version == "HTTP/1.1" and req.header("host")
            and is_upgrade(req) and has_token(req.header("connection"), "upgrade")
            and version is not None and version.strip() == "13" and key and "," not in key):
        key = key.strip()
        try:
            if len(key) == 24 and len(binascii.a2b_base64(key)) == 16:
                digest = hashlib.sha1(key.encode() + GUID).digest()  # the accept value
                return binascii.b2a_base64(digest).strip().decode()
        except ValueError:  # (binascii.Error subclasses it; MicroPython has no Error)
            pass
    raise use_once("refusal").upgrade(req)


def select_subprotocol(req, supported):
    """First of the server's supported subprotocols that the client offered, or None."""
    offered = req.header("sec-websocket-protocol")
    if not offered or not supported:
        return None
    names = [p.strip() for p in offered.split(",")]
    for name in supported:
        if name in names:
            return name
    return None


def response_101(accept, subprotocol=None):
    head = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: " + accept + "\r\n"
    )
    if subprotocol:
        head += "Sec-WebSocket-Protocol: " + subprotocol + "\r\n"
    return (head + "\r\n").encode()
