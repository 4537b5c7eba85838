"""Updates over WiFi through ringws itself: the /ota WebSocket route.

Loaded by launch.start only when config.json has ota.token; nothing of it is on the heap
otherwise. This module is what stays loaded: the route and /stats' version and update, in
as little code as can be (about 2 KB of heap on x64). otastart installs it and leaves
the heap after start-up; otaconn (token check, hello) and an update's work load per
request. tools/deploy.py --url is the client.

Two modes. A board serving its application answers the hello (version, settings) and,
asked for an update, resets into update mode: the same firmware with 2 slots and no
application, so that the update's code (otacore and one of otaplan, otaput, otacommit,
loaded per connection) has the heap it needs: about 7 KB on x64, where a 110 KiB heap
serving the application has 10 KB free. Update mode ends with the switch's reset, or a
reset after update_idle_ms (60 s) without an /ota connection.

On-flash layout (paths from the flash root, where boot.py is):

    boot.py              picks the tree at boot and chdirs into it (sys.path has "": the
                         tree's modules, main.py, www/ and config.json are found there)
    main.py, ...         the root tree: what a USB deploy writes (.ringws-deploy.json)
    .ota/a/, .ota/b/     trees installed over WiFi: a build plus that board's config.json,
                         .manifest ("<sha256> <size> <path>" lines) and .ringws-version
    .ota/new/            staging: sent files arrive here, hash-checked, and stay there
                         across a broken upload; a commit moves them into the new tree
    .ota/active          name of the confirmed tree (none: the root tree); the tree it
                         replaced stays until the next commit builds in its place
    .ota/try             "<tree> <confirm_ms>": boot it once, as a trial (the switch)
    .ota/trying          boot.py renamed try to this: the trial runs now; a boot that
                         still finds it unconfirmed returns to .ota/active's tree and
                         notes why in .ota/last (the rollback)
    .ota/why, .ota/last  why a trial failed; the last update's result (JSON, for /stats)
    .ota/update          asks the next boot for update mode (removed by that boot)

A tree's version is the first 12 hex digits of sha256 over its manifest lines (sorted by
path, config.json not included): the same build has the same version on every board.

Protocol: ws://board/ota?op=hello|update|plan|put|commit, with "Authorization: Bearer
<ota.token>" (else 401); one request line per text message:
    board -> {"t": "hi", "version", "arch", "update", "trial", "confirm_ms", "mode",
        "server"} on open (arch: the native arch number of sys.implementation._mpy, as
        mpy-cross numbers them; mode: "app" or "update"; server: the running settings)
    op=update: the board answers the hello and resets into update mode
    op=plan (update mode): "plan <arch> <version> <set-json>", one message per manifest
        line, "end" -> {"t": "plan", "need": [line index..], "bytes", "free"}; it reads
        and hashes (staging, then the running tree) and writes nothing
    op=put (update mode): "put <sha> <size> <path>", then one binary message of size
        bytes -> {"t": "ok"}; as often as needed on one connection
    op=commit (update mode): as plan, with "commit" -> {"t": "switch", "tree",
        "version"}: the spare tree is built from staging (moved) and the running tree
        (copied), gets the running config.json with the server keys of set replaced,
        .ota/try is renamed into place (the switch) and the board resets
    any refusal -> {"t": "error", "why": "<tag>: <detail>"} and close 1008 (the tags are
        short to keep the board's code small; tools/netdeploy.py explains each)
"""


class Ota:
    """The /ota route and /stats' version and update (the last update's result)."""

    job = None
    confirmed = True

    def __init__(self, srv, lean, cfg, root, version, last):
        self.srv = srv
        self.lean = lean  # update mode
        self.token = cfg["token"]  # its sha256 digest
        self.confirm_ms = cfg.get("confirm_ms", 30000)
        self.idle_ms = cfg.get("update_idle_ms", 60000)
        self.root = root  # the flash root: boot.py, .ota/
        self.dot = root + "/.ota/"
        self.version = version
        self.last = last
        self.prev = srv.access_check
        self.srv_stats = srv.stats
        self.idle = 0
        self.boot_timer = None

    def on_open(self, conn):
        __import__("otaconn").start(self, conn)

    def on_close(self, conn, code, reason):
        if self.job and self.job.conn is conn:
            __import__("otaconn").close(self)

    def on_fragment(self, conn, data, text, first=True, last=True):
        job = self.job
        return not job or job.conn is not conn or job.take(data, text, first, last)

    on_message = on_fragment

    def check(self, req, is_websocket):
        if req.path == "/ota":
            if not self.confirmed:  # the first tick confirms; until then, no /ota code
                from ringws.handshake import HttpError

                raise HttpError(503, "confirming", (("Retry-After", "1"),))
            import gc

            gc.collect()  # the request's code loads into a heap as whole as it can be
            __import__("otaconn").check(self, req)
        elif self.prev:
            self.prev(req, is_websocket)

    def stats(self):
        out = self.srv_stats()
        out["version"] = self.version
        out["update"] = self.last
        if self.lean:
            out["update_mode"] = True
        return out
