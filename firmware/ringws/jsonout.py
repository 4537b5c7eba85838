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
        self.obj = obj
        self.was = None
        self.done = 0
        self.total = 1 << 30
        self.readinto(b"")  # room 0: counts only
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
        """The next bytes into buf; 0 once all of them have been read. None: the reading
        is about to wait (http.send), see below."""
        if buf is None:
            # Every pass must write the same text: a dict value that may change meanwhile
            # (the server's close counts) is copied now; close() puts the original back
            # (obj may be kept, as the server's /stats dict is). A text read without
            # waiting needs no copy.
            if self.was is None:
                obj = self.obj
                was = self.was = []
                for k in obj:
                    if isinstance(obj[k], dict):
                        was.append((k, obj[k]))
                for k, v in was:
                    obj[k] = dict(v)
            return 0
        if self.done >= self.total:
            return 0
        self.buf = buf
        self.room = len(buf)
        self.n = self.got = 0
        _dump(self.obj, self, separators=_SEP)
        self.buf = None
        return self.got

    def close(self):
        for k, v in self.was or ():
            self.obj[k] = v
        self.obj = self.was = None
