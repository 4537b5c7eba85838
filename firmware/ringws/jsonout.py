# /stats (or any dict) as JSON written straight into a slot's send ring, as much as fits
# each time the ring drains: the text is never in the heap as a whole, nor as a list of
# pieces: a heap cut up by traffic may have no free block that large when every slot but
# one holds a WebSocket. Loaded for the request and dropped with it (compat.use_once).
import io
import json


class Window(io.IOBase):  # a stream: json.dump writes into it
    """The JSON text of obj, dumped again for every fill(): the bytes not sent yet go
    into the ring, up to its free room; the rest of the pass only counts."""

    def __init__(self, obj):
        # Every pass must write the same text: a dict value that may change meanwhile
        # (the server's close counts) is copied now.
        for k in obj:
            if isinstance(obj[k], dict):
                obj[k] = dict(obj[k])
        self.obj = obj
        self.ring = None
        self.sent = self.n = self.room = 0
        json.dump(obj, self, separators=(",", ":"))  # room 0: counts only
        self.total = self.n

    def write(self, piece):
        if isinstance(piece, str):  # CPython hands over str; MicroPython bytes-like
            piece = piece.encode()
        k = len(piece)
        a = self.sent - self.n  # piece[a:] is not sent yet
        self.n += k
        if a < k and self.room:
            k -= a
            if k > self.room:
                k = self.room
            self.ring.write(piece, a, k)
            self.sent += k
            self.room -= k
        return len(piece)

    def fill(self, ring):
        """The next bytes into ring, as many as it has room for; True (and nothing
        written) once everything has been sent."""
        if self.sent >= self.total:
            return True
        self.ring = ring
        self.room = ring.free()
        self.n = 0
        json.dump(self.obj, self, separators=(",", ":"))
        self.ring = None
        return False
