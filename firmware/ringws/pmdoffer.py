# permessage-deflate (RFC 7692): the handshake's answer to an offer. Loaded for one use at
# each request that offers it, where the server has inflaters (pmdgate.offer), before
# pmd.py: an offer declined here costs no more than this module, for a moment.
#
# The first acceptable offer wins. Every message stands alone (we answer
# client_no_context_takeover, so nothing is kept between messages) and the client's window
# is capped at "inflate_bits" (client_max_window_bits), which needs the client to have
# offered that parameter; without it the client may use a 32 KiB window, accepted only
# where inflate_bits is 15. ringws answers uncompressed (RFC 7692 lets a server): whether
# the deflate module could compress is detected at start-up (compat_inflate.py, /stats).


def negotiate(value, bits):
    """Sec-WebSocket-Extensions' answer to the request's header value (our window: bits),
    or None. Each offer's parameters (RFC 7692 7.1): the first acceptable offer wins."""
    for offer in value.split(","):
        params = offer.split(";")
        if params[0].strip().lower() != "permessage-deflate":
            continue
        seen = []
        client = server = ""
        for p in params[1:]:
            name, eq, val = p.partition("=")
            name = name.strip().lower()
            val = val.strip()
            if val[:1] == '"' and val[-1:] == '"':
                val = val[1:-1]
            # (a window's bits: 8..15, no leading zeros, RFC 7692 7.1.2)
            bad = not (val.isdigit() and val[0] != "0" and 8 <= int(val) <= 15)
            if name in seen:
                break
            seen.append(name)
            if name == "client_max_window_bits":
                client = val if eq else "0"
                if eq and bad:
                    break
            elif name == "server_max_window_bits":
                server = val
                if bad:
                    break
            elif eq or name not in ("server_no_context_takeover", "client_no_context_takeover"):
                break  # unknown, or a value where none is allowed
        else:
            if not client and bits < 15:
                continue  # the client may use a 32 KiB window
            ans = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            if client:
                ans += "; client_max_window_bits=%d" % min(int(client) or bits, bits)
            if server:
                ans += "; server_max_window_bits=" + server  # (we answer uncompressed)
            return ans
    return None


def offer(req, handler, cfg):
    """The end of the 101 response (from the Sec-WebSocket-Extensions line) that accepts
    permessage-deflate for this upgrade request, or None (declined)."""
    value = req.header("sec-websocket-extensions")
    if value and getattr(handler, "compression", True):
        value = negotiate(value, cfg["inflate_bits"])
        if value:
            return b"Sec-WebSocket-Extensions: " + value.encode() + b"\r\n\r\n"
    return None
