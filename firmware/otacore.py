# What every /ota connection shares (ota.py has the layout and the protocol): the hello,
# one request line per text message, answers and refusals, the path check, and the file
# helpers. A connection does one kind of work (?op=plan, put or commit: otaplan, otaput,
# otacommit); only that module and this one are loaded, and only while it is open. Each
# function and message costs heap (about 2.3x its .mpy size on x64): few, and short.
import json
import os
from hashlib import sha256

OWN = ("config.json", ".manifest", ".ringws-version", ".ringws-deploy.json")


def is_dir(p):
    try:
        return os.stat(p)[0] & 0x4000
    except OSError:
        return 0


def has(p, n, sha, buf, dst=None):
    """True when the file p has n bytes hashing to sha (read through buf, copied to dst
    if given). No file is ever whole in RAM."""
    from binascii import hexlify

    try:
        if os.stat(p)[6] != n:
            return False
        fi = open(p, "rb")
    except OSError:
        return False
    h = sha256()
    mv = memoryview(buf)
    fo = open(dst, "wb") if dst else None
    while True:
        k = fi.readinto(buf)
        if not k:
            break
        h.update(mv[:k])
        if fo:
            fo.write(mv[:k])
    fi.close()
    if fo:
        fo.close()
    return str(hexlify(h.digest()), "ascii") == sha


def mkdirs(path):
    """Create the folders above the file path."""
    i = path.find("/", 1)
    while i >= 0:
        if not is_dir(path[:i]):
            os.mkdir(path[:i])
        i = path.find("/", i + 1)


def rmtree(p):
    if is_dir(p):
        for e in list(os.ilistdir(p)):
            rmtree(p + "/" + e[0])
        os.rmdir(p)
    else:
        try:
            os.remove(p)
        except OSError:
            pass


def free(root):
    st = os.statvfs(root or "/")
    return st[0] * st[4]


class Job:
    """One /ota connection. A refusal is answered {"t": "error", "why": "<tag>: <detail>"}
    and closes it (1008); nothing is written outside staging and the spare tree."""

    def __init__(self, ota, conn):
        import sys

        self.ota = ota
        self.conn = conn
        self.p = ota.root + "/.ota/"
        self.stage = self.p + "new"
        cwd = os.getcwd()
        i = cwd.find("/.ota/")
        self.tree = cwd[i + 6:].strip("/") if i >= 0 else ""  # running: "a", "b", "" (root)
        self.run = cwd.rstrip("/") + "/"
        # mpy-cross numbers the native archs: 2 x64, 10 xtensawin, 11 rv32imc...
        self.arch = str((getattr(sys.implementation, "_mpy", 0) >> 10) & 15)
        self.buf = bytearray(512)
        self.line = b""
        self.mode = None
        self.closing = False

    def abort(self):
        pass

    def send(self, obj):
        # The client waits for each answer before the next request: the ring has room.
        if not self.conn.send(json.dumps(obj), True):
            self.conn.close(1011)

    def take(self, data, text, first, last):
        if self.closing:
            return True
        try:
            if not text:
                out = self.data(data, last)
            else:  # one line per message: a few hundred bytes at most
                if first:
                    self.line = b""
                self.line += bytes(data)
                if len(self.line) > 300:
                    raise ValueError("long")
                out = self.line_in(str(self.line, "utf-8")) if last else None
            if out:
                self.send(out)
        except Exception as e:  # a refusal, a full flash, a broken file: said, never fatal
            why = e.args[0] if e.args and isinstance(e.args[0], str) else repr(e)
            print("ota: refused:", why)
            self.abort()
            self.closing = True
            self.send({"t": "error", "why": why})
            self.conn.close(1008, why[:100])
        return True

    def data(self, data, last):
        raise ValueError("request: data")

    def line_in(self, line):
        raise ValueError("request: " + line[:40])

    def header(self, line, word):
        """The first line of a plan or commit: "<word> <arch> <version> <set-json>"."""
        if not self.ota.confirmed:
            raise ValueError("trial")
        parts = line.split(" ", 3)
        if parts[0] != word or len(parts) < 4:
            raise ValueError("request: " + line[:40])
        if parts[1] != self.arch:
            raise ValueError("arch: " + self.arch)
        self.set = json.loads(parts[3])
        self.version, self.prev, self.n = parts[2], "", 0
        self.mode = word

    def check(self, line, sort=True):
        """A manifest line "<sha256 hex> <size> <path>" -> (path, size, sha). Refused:
        paths that leave the tree, the board's own files, a boot.py not the board's, a
        manifest not sorted by path."""
        try:
            sha, n, path = line.split(" ")
            n = int(n)
            int(sha, 16)
        except ValueError:
            n = sha = path = ""
        if n == "" or n < 0 or len(sha) != 64 or not 0 < len(path) < 120:
            raise ValueError("line: " + line[:80])
        for part in path.split("/"):
            if part in ("", ".", "..", ".ota") or "\\" in part or ":" in part:
                raise ValueError("path: " + path)
        if path in OWN:
            raise ValueError("own: " + path)
        if path == "boot.py" and not has(self.ota.root + "/boot.py", n, sha, self.buf):
            raise ValueError("boot: boot.py")
        if sort:
            if path <= self.prev:
                raise ValueError("order: " + path)
            self.prev = path
        return path, n, sha
