# Static files for srv.static(prefix, directory): gzip when the client accepts it,
# revalidated with ETag. Loaded for the request that needs it and dropped with it
# (compat.use_once): the file itself is then sent by http.send, in chunks through the ring.
import os

from ringws.http import HttpError, response_head

# Content types by extension, one line each: a string, not a dict of strings.
TYPES = ("\nhtml text/html; charset=utf-8\njs text/javascript; charset=utf-8"
         "\ncss text/css; charset=utf-8\njson application/json\nsvg image/svg+xml"
         "\npng image/png\nico image/x-icon\ntxt text/plain; charset=utf-8\n")


def content_type(name):
    ext = name[name.rfind(".") + 1 :]  # (a slice: no tuple of three strings)
    i = TYPES.find("\n%s " % ext) if ext else -1
    if i < 0:
        return "application/octet-stream"
    i += len(ext) + 2
    return TYPES[i : TYPES.find("\n", i)]


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st[0] & 0x4000:  # a directory
        return None
    return st


def answer(req, directory, rel):
    """(pieces, path) for http.send: the head, and the file unless req is HEAD or the
    client's copy is current (304)."""
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
    return ([response_head(200, content_type(rel), size, headers)],
            None if req.method == "HEAD" else path)
