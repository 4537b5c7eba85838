# /ota?op=put (ota.py has the protocol): "put <sha256> <size> <path>", then the file as
# one binary message, streamed piece by piece into staging and hash-checked there. The
# file is never whole in RAM; one that breaks off or does not match is removed.
import os
from hashlib import sha256

import otacore


class Job(otacore.Job):
    put = None  # (path, size, sha) awaiting its bytes
    file = None

    def line_in(self, line):
        if not self.ota.confirmed:
            raise ValueError("trial")
        word, _, rest = line.partition(" ")
        if word != "put" or self.put:
            raise ValueError("request: " + line[:40])
        path, n, sha = self.check(rest, False)
        room = otacore.free(self.ota.root)
        if n + 4096 > room:
            raise ValueError("room: %s %d %d" % (path, n, room))
        dst = self.stage + "/" + path
        otacore.mkdirs(dst)
        self.put = (path, n, sha)
        self.hash = sha256()
        self.got = 0
        self.file = open(dst, "wb")

    def data(self, data, last):
        from binascii import hexlify

        put = self.put
        if put is None:
            raise ValueError("request: data")
        self.got += len(data)
        if self.got > put[1]:
            raise ValueError("hash: " + put[0])
        self.hash.update(data)
        self.file.write(data)
        if not last:
            return None
        self.file.close()
        self.file = self.put = None
        if self.got != put[1] or str(hexlify(self.hash.digest()), "ascii") != put[2]:
            os.remove(self.stage + "/" + put[0])
            raise ValueError("hash: " + put[0])
        return {"t": "ok", "path": put[0]}

    def abort(self):
        """The connection ended: a file half received is removed from staging."""
        if self.file is not None:
            self.file.close()
            os.remove(self.stage + "/" + self.put[0])
        self.file = self.put = None
