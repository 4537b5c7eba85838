# /stats (or any dict) as JSON read like a file: http.send reads it a chunk at a time
# into the slot's receive buffer, as it reads a page, so the text is never in the heap as
# a whole, nor as a list of pieces: a heap cut up by traffic may have no free block that
# large when every slot but one holds a WebSocket. Loaded for the request and dropped
# with it (compat.use_once).
import io
import json

from ringws.kernels import move

_SEP = (",", ":")
# separators= is a keyword on MicroPython and CPython alike; the ESP32 stubs type it as a
# positional argument, which MicroPython refuses ("extra positional arguments given").
_dump = getattr(json, "dump")


class Reader(io.IOBase):  # a stream too: json.dump writes into it
    """The JSON text of obj, dumped again for every readinto(): the bytes not read yet go
    into the buffer, as many as fit; the rest of the pass only counts."""

    def __init__(self, obj):
        # Every pass must write the same text: a dict value that may change meanwhile
        # (the server's close counts) is copied now.
        for k in obj:
            if isinstance(obj[k], dict):
                obj[k] = dict(obj[k])
        self.obj = obj
        self.buf = None
        self.done = self.n = self.got = self.room = 0
        _dump(obj, self, separators=_SEP)  # room 0: counts only
        self.total = self.n

    def write(self, piece):
        if isinstance(piece, str):  # CPython hands over str; MicroPython bytes-like
            piece = piece.encode()
        k = len(piece)
        a = self.done - self.n  # piece[a:] is not read yet
        self.n += k
        if a < k and self.room:
            k -= a
            if k > self.room:
                k = self.room
            move(self.got, a, k, self.buf, piece)
            self.got += k
            self.done += k
            self.room -= k
        return len(piece)

    def readinto(self, buf):
        """The next bytes into buf; 0 once all of them have been read."""
        if self.done >= self.total:
            return 0
        self.buf = buf
        self.room = len(buf)
        self.n = self.got = 0
        _dump(self.obj, self, separators=_SEP)
        self.buf = None
        return self.got

    def close(self):
        self.obj = None
