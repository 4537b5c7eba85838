# Why a WebSocket opening handshake is refused (RFC 6455 section 4.2.1): the HttpError
# naming the first problem. handshake.validate_upgrade decides whether there is one and
# loads this module only then (compat.use_once): the messages are not in the heap while
# every handshake is good.
import binascii

from ringws.handshake import HttpError, has_token, is_upgrade


def upgrade(req):
    """The HttpError to answer req with (a generic 400 if no check below fails)."""
    if req.method != "GET":
        return HttpError(405, "WebSocket handshake must use GET", (("Allow", "GET"),))
    if req.version != "HTTP/1.1":
        return HttpError(400, "WebSocket handshake needs HTTP/1.1")
    if not req.header("host"):
        return HttpError(400, "missing Host header")
    if not is_upgrade(req):
        return HttpError(400, "this is a WebSocket endpoint: Upgrade: websocket required")
    if not has_token(req.header("connection"), "upgrade"):
        return HttpError(400, "Connection header must contain Upgrade")
    version = req.header("sec-websocket-version")
    if version is None or version.strip() != "13":
        return HttpError(
            426, "unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),)
        )
    key = req.header("sec-websocket-key")
    if not key or "," in key:
        return HttpError(400, "missing or repeated Sec-WebSocket-Key")
    key = key.strip()
    try:
        raw = binascii.a2b_base64(key)
    except ValueError:  # (binascii.Error subclasses it; MicroPython has no Error)
        return HttpError(400, "Sec-WebSocket-Key is not base64")
    if len(raw) != 16 or len(key) != 24:
        return HttpError(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded")
    return HttpError(400, "bad WebSocket handshake")
