# Access control for a device on a shared LAN: an Origin allowlist for WebSocket paths and
# an optional bearer token for WebSocket paths and /stats.
#
#   srv.access_check = checker(cfg.get("access"))   # None when nothing is configured
#
# config.json "access" (all keys optional):
#   {"origins": ["http://ringws.local", "http://192.168.1.20"],  # allowed Origin values
#    "allow_no_origin": true,   # non-browser clients send no Origin header (default true)
#    "token": "s3cret",         # required on WebSocket paths and on the protected paths
#    "protect": ["/stats"]}     # HTTP paths that need the token too (default ["/stats"])
#
# Browsers cannot set headers on a WebSocket, so the token may also come as ?token=X.
# The check runs on the parsed request before any handler is involved; a refusal is an
# HttpError the runtime answers and closes at once, so the slot is held only for the
# length of the request.
from ringws.handshake import HttpError

_BEARER = (("WWW-Authenticate", "Bearer"),)


def checker(access_cfg):
    """A check(req, is_websocket) function, or None when access is not configured."""
    if not access_cfg:
        return None
    if not isinstance(access_cfg, dict):
        raise ValueError("access: expected an object")
    origins = access_cfg.get("origins") or ()
    if isinstance(origins, str):
        origins = (origins,)
    # Origin is compared without case and without a trailing slash (RFC 6454 serialises
    # scheme and host in lower case; some clients add the slash).
    allowed = tuple(_norm_origin(o) for o in origins)
    allow_none = access_cfg.get("allow_no_origin", True)
    token = access_cfg.get("token") or None
    if token is not None and not isinstance(token, str):
        raise ValueError("access.token: expected a string")
    protect = tuple(access_cfg.get("protect", ("/stats",)))
    if not allowed and token is None:
        return None
    token_b = token.encode() if token else None

    def check(req, is_websocket):
        if is_websocket and allowed:
            origin = req.header("origin")
            if origin is None:
                if not allow_none:
                    raise HttpError(403, "Origin header required")
            elif _norm_origin(origin) not in allowed:
                raise HttpError(403, "Origin not allowed")
        if token_b is not None and (is_websocket or req.path in protect):
            given = bearer_of(req)
            if given is None:
                raise HttpError(401, "bearer token required", _BEARER)
            if not same(given.encode(), token_b):
                raise HttpError(401, "wrong bearer token", _BEARER)

    return check


def _norm_origin(value):
    value = value.strip().lower()
    while value.endswith("/"):
        value = value[:-1]
    return value


def bearer_of(req):
    """The token from `Authorization: Bearer X`, else from ?token=X, else None."""
    auth = req.header("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_param(req.query, "token")


def query_param(query, name):
    """First value of name in an application/x-www-form-urlencoded query, or None."""
    if not query:
        return None
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if key == name and sep:
            return unquote(value)
    return None


def unquote(s):
    # %XX and '+' decoding; a malformed escape is kept as it is (it will not match).
    if "%" not in s and "+" not in s:
        return s
    s = s.replace("+", " ")
    out = bytearray()
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "%" and i + 2 < n and _hex(s[i + 1 : i + 3]):
            out.append(int(s[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(c.encode())
            i += 1
    try:
        return str(bytes(out), "utf-8")
    except (UnicodeError, ValueError):
        return None


def _hex(two):
    if len(two) != 2:
        return False
    for ch in two:
        if ch not in "0123456789abcdefABCDEF":
            return False
    return True


def same(a, b):
    """Compare two byte strings in time that does not depend on where they differ."""
    diff = len(a) ^ len(b)
    for i in range(len(a)):
        diff |= a[i] ^ b[i % len(b)] if b else 1
    return diff == 0
