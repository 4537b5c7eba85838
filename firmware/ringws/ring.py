# RingBuffer: one preallocated bytearray; writes are all-or-nothing; nothing is allocated
# after __init__. The send side of every connection is one of these.
from ringws.kernels import move, put_frame


class RingBuffer:
    def __init__(self, buf):
        # buf: a bytearray or a memoryview carved from the server's arena.
        size = len(buf)
        if size < 16:
            raise ValueError("ring too small: %d" % size)
        self.buf = buf
        self.size = size
        self.head = 0  # next byte to send
        self.used = 0

    def clear(self):
        self.head = 0
        self.used = 0

    def free(self):
        return self.size - self.used

    def write(self, data, off=0, n=-1):
        """Append data[off:off+n] whole, or nothing: returns True/False."""
        if n < 0:
            n = len(data) - off
        if n > self.size - self.used:
            return False
        self._put(data, off, n)
        return True

    def write_frame(self, b0, data):
        """Append one unmasked frame (b0 = FIN | opcode) with payload data. The caller
        has checked the room (header size + len(data) <= free())."""
        # Per message: kept to 11 words of locals and stack, so that MicroPython runs
        # it on the C stack instead of allocating its frame on the heap (fun_bc_call).
        tail = self.head + self.used
        if tail >= self.size:
            tail -= self.size
        n = len(data)
        n = put_frame(self.buf, tail, b0, data, n)
        self.used += n

    def _put(self, data, off, n):
        size = self.size
        tail = self.head + self.used
        if tail >= size:
            tail -= size
        first = size - tail
        if first >= n:
            move(tail, off, n, self.buf, data)
        else:
            move(tail, off, first, self.buf, data)
            move(0, off + first, n - first, self.buf, data)
        self.used += n

    def readable(self):
        """Length of the contiguous run starting at self.head (send it, then consume)."""
        end = self.head + self.used
        return self.used if end <= self.size else self.size - self.head

    def consume(self, n):
        self.used -= n
        if self.used == 0:
            self.head = 0  # keeps the next frame contiguous: one write() for it
        else:
            self.head += n
            if self.head >= self.size:
                self.head -= self.size
