"""Deploy over WiFi: the client side of firmware/ota.py (the /ota WebSocket route).

tools/deploy.py --url calls run(); the protocol and the board's on-flash layout are in
firmware/ota.py's docstring. For each board: hello (its version), plan (what it lacks),
put (only those files, each one binary message the board streams to flash), commit (the
board builds the new tree and resets), then wait until the board answers again with the
new version confirmed, or reports the rollback.
"""
import asyncio
import hashlib
import json
import os
import time
import urllib.parse

# What a network deploy never sends: the board keeps its own config.json.
NOT_SENT = ("config.json",)
# mpy-cross's numbers for the native archs (sys.implementation._mpy >> 10 on the board).
ARCHS = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")


class BoardFailed(Exception):
    pass


def manifest(out):
    """Sorted "<sha256> <size> <path>" lines of the build in out, config.json left out."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, out).replace(os.sep, "/")
            if rel in NOT_SENT:
                continue
            with open(full, "rb") as f:
                data = f.read()
            lines.append((rel, "%s %d %s" % (hashlib.sha256(data).hexdigest(), len(data), rel)))
    return [line for _, line in sorted(lines)]


def version_of(lines):
    """The build id /stats shows: sha256 over the manifest lines, 12 hex digits."""
    return hashlib.sha256("".join(l + "\n" for l in lines).encode()).hexdigest()[:12]


def ota_url(url, op="plan", keys=()):
    """ws://host[:port]/ -> ws://host[:port]/ota?op=.. (a URL naming a path keeps it);
    keys: the server settings the hello should report."""
    p = urllib.parse.urlsplit(url if "://" in url else "ws://" + url)
    path = p.path if p.path not in ("", "/") else "/ota"
    query = "op=" + op + ("&k=" + ",".join(keys) if keys else "")
    return urllib.parse.urlunsplit((p.scheme or "ws", p.netloc, path, query, ""))


def board_name(url):
    return urllib.parse.urlsplit(ota_url(url)).netloc


async def connect(url, token, op="plan", timeout=10, keys=()):
    from websockets.asyncio.client import connect as ws_connect

    headers = {"Authorization": "Bearer " + token} if token else {}
    ws = await asyncio.wait_for(
        ws_connect(ota_url(url, op, keys), additional_headers=headers, max_size=None,
                   open_timeout=timeout, ping_interval=None, compression=None), timeout + 1)
    # Only the hello answers on open; plan, put and commit wait for their request.
    hi = await answer(ws, timeout) if op in ("hello", "update") else None
    return ws, hi


async def answer(ws, timeout=60):
    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if msg.get("t") == "error":
        raise BoardFailed("board refused: " + explain(msg.get("why", "?")))
    return msg


# The board's refusals are "<tag>: <detail>" (short: its code must fit its heap).
TAGS = {
    "long": "a request line longer than the board takes",
    "trial": "the board's running version is still on trial",
    "room": "not enough free flash for",
    "request": "a request the board does not know",
    "arch": "the build is for another arch than the board runs (the board's arch number)",
    "line": "a malformed manifest line",
    "path": "a path that leaves the firmware tree",
    "own": "a file the board keeps for itself (not part of a build)",
    "boot": "boot.py differs from the board's (boot.py changes only over USB)",
    "order": "the manifest is not sorted by path",
    "missing": "neither sent nor on the board",
    "hash": "the file's bytes do not match its sha256 in the manifest",
    "version": "the manifest does not hash to the version announced",
}


def explain(why):
    tag, _, detail = why.partition(": ")
    return "%s: %s" % (TAGS[tag], detail) if tag in TAGS else why



class Board:
    """One board's deploy; fills the row of the final table."""

    def __init__(self, url, token, out, lines, arch, sets, say):
        self.url, self.token, self.out, self.lines = url, token, out, lines
        self.arch = str(ARCHS.index(arch)) if arch in ARCHS else arch
        self.sets, self.say = sets, say
        self.name = board_name(url)
        self.version = version_of(lines)
        self.row = {"board": self.name, "before": "?", "after": "?", "files": 0,
                    "bytes": 0, "seconds": 0.0, "result": "not started"}

    async def manifest_request(self, op):
        """The manifest to the board on a connection of its own (op: plan or commit),
        and the board's one answer."""
        ws, _ = await connect(self.url, self.token, op)
        try:
            await self.send_manifest(ws, op)
            return await answer(ws)
        finally:
            await ws.close()

    async def send_manifest(self, ws, word):
        """One line per message: the board never holds more than a line."""
        await ws.send("%s %s %s %s" % (word, self.arch, self.version,
                                       json.dumps(self.sets, separators=(",", ":"))))
        for line in self.lines:
            await ws.send(line)
        await ws.send("end")

    async def run(self, dry_run=False):
        t0 = time.monotonic()
        try:
            self.row["result"] = await self._run(dry_run)
        except BoardFailed as e:
            self.row["result"] = "failed: %s" % e
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            self.row["result"] = "failed: %s" % (str(e) or type(e).__name__)
        except Exception as e:  # websockets' own errors (401, closed connection)
            self.row["result"] = "failed: %s" % (str(e) or type(e).__name__)
        self.row["seconds"] = round(time.monotonic() - t0, 1)
        self.say(self.name, self.row["result"])
        return self.ok

    @property
    def ok(self):
        return self.row["result"] in ("updated", "up to date", "dry run")

    async def hello(self, op="hello", timeout=10, tries=10):
        """The board's hello. A 503 (no slot, or no memory for the moment) is retried, as
        its Retry-After asks."""
        for i in range(tries):
            try:
                ws, hi = await connect(self.url, self.token, op, timeout, sorted(self.sets))
                await ws.close()
                return hi
            except Exception as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                if status != 503 or i == tries - 1:
                    raise
                await asyncio.sleep(1)

    async def _run(self, dry_run):
        hi = await self.hello()
        self.row["before"] = self.row["after"] = hi.get("version")
        if hi.get("trial"):
            raise BoardFailed("its running version is still on trial")
        if hi.get("arch") != self.arch:
            raise BoardFailed("the board runs arch %s, the build is for %s"
                              % (hi.get("arch"), self.arch))
        server = hi.get("server") or {}
        same = all(server.get(k) == v for k, v in self.sets.items())
        if hi.get("version") == self.version and same:
            self.say(self.name, "version %s, settings as given: nothing to send"
                     % self.version)
            return "up to date"
        if dry_run:
            self.say(self.name, "version %s -> %s: the board would reset into update mode, "
                     "receive the files it lacks of these %d, switch and reset"
                     % (hi.get("version"), self.version, len(self.lines)))
            return "dry run"
        if hi.get("mode") != "update":
            await self.hello("update")
            await asyncio.sleep(0.5)  # the board resets 0.3 s after the answer
            hi = await self.wait(lambda h: h.get("mode") == "update", 30, "update mode")
        plan = await self.manifest_request("plan")
        need = [self.lines[i].split(" ", 2) for i in plan["need"]]
        self.say(self.name, "version %s -> %s: %d of %d files to send (%d bytes)"
                 % (hi.get("version"), self.version, len(need), len(self.lines),
                    sum(int(n) for _, n, _ in need)))
        if need:
            await self.send_files(need)
        switch = await self.manifest_request("commit")
        self.say(self.name, "sent %d files (%d bytes); switching to tree %s, reset"
                 % (self.row["files"], self.row["bytes"], switch.get("tree")))
        await asyncio.sleep(0.5)  # the board resets 0.4 s after the switch
        confirm_ms = hi.get("confirm_ms") or 30000
        hi = await self.wait(self.done, confirm_ms / 1000 + 30, "a confirmation")
        return "updated"

    def done(self, hi):
        """The board is back: confirmed (the new version, not on trial), or rolled back
        (its update result says why)."""
        self.row["after"] = hi.get("version")
        update = hi.get("update") or {}
        if update.get("result") == "rolled back" and hi.get("version") != self.version:
            raise BoardFailed("rolled back: %s" % update.get("why"))
        return hi.get("version") == self.version and not hi.get("trial")

    async def wait(self, ready, seconds, what):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                hi = await self.hello(timeout=3)
            except BoardFailed:
                raise
            except Exception:
                await asyncio.sleep(0.3)
                continue
            if ready(hi):
                return hi
            await asyncio.sleep(0.3)
        raise BoardFailed("no %s within %d s" % (what, seconds))

    async def send_files(self, need):
        ws, _ = await connect(self.url, self.token, "put")
        try:
            for sha, n, path in need:
                with open(os.path.join(self.out, path), "rb") as f:
                    data = f.read()
                await ws.send("put %s %s %s" % (sha, n, path))
                await ws.send(data)
                await answer(ws)
                self.row["files"] += 1
                self.row["bytes"] += len(data)
        finally:
            await ws.close()


def table(rows):
    head = ("board", "before", "after", "files", "bytes", "seconds", "result")
    cells = [head] + [tuple(str(r[k]) for k in head) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip()
                     for c in cells)


def run(urls, token, out, arch, sets, dry_run=False, canary=0):
    """Deploy the build in out to every URL; print progress and the table. Returns the
    exit status: 0 when every board is updated or up to date."""
    lines = manifest(out)

    def say(name, text):
        print("  [%s] %s" % (name, text), flush=True)

    boards = [Board(u, token, out, lines, arch, sets, say) for u in urls]
    print("network deploy of version %s (%d files) to %d board(s)"
          % (version_of(lines), len(lines), len(boards)), flush=True)

    async def main():
        first, rest = boards[:canary], boards[canary:]
        if first:
            ok = await asyncio.gather(*(b.run(dry_run) for b in first))
            if not all(ok):
                for b in rest:
                    b.row["result"] = "skipped: a canary failed"
                return
            say("canary", "%d board(s) confirmed; the other %d follow" % (len(first), len(rest)))
        await asyncio.gather(*(b.run(dry_run) for b in rest))

    asyncio.run(main())
    print(table([b.row for b in boards]), flush=True)
    return 0 if all(b.ok for b in boards) else 1
