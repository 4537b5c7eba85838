# Start-up of updates over WiFi (ota.py has the layout): the installation of the /ota
# route, the trial's confirmation timer (otatrial) and update mode's idle timer (which
# mode: launch.update_mode). Leaves the heap after start-up except in update mode.
import json
import os

import ota


def root():
    """The flash root, where boot.py and .ota/ are (the cwd is a tree below it)."""
    cwd = os.getcwd()
    i = cwd.find("/.ota/")
    return cwd[:i] if i >= 0 else cwd.rstrip("/")


def install(srv, cfg, lean=False):
    """Route /ota, guard it with ota.token, add version and update to /stats."""
    from hashlib import sha256

    dot = root() + "/.ota/"
    try:
        with open(".ringws-version") as f:
            version = f.read().strip()
    except OSError:
        version = "unknown"
    try:
        with open(dot + "last") as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = None
    c = dict(cfg["ota"], token=sha256(cfg["ota"]["token"].encode()).digest())
    h = ota.Ota(srv, lean, c, root(), version, last)
    srv.route("/ota", h)
    srv.access_check = h.check
    srv.stats = h.stats
    keep = False
    if lean:
        srv.add_timer(1000, lambda now: idle(h))
        keep = True
    try:
        # The last boot switched: this one is the trial, confirmed at the first tick,
        # once the server listens and ticks (what "healthy" means).
        os.stat(dot + "trying")
        import otatrial

        otatrial.h = h
        h.confirmed = False
        srv.add_timer(0, otatrial.confirm)
        h.boot_timer = srv.timers[-1]
    except OSError:
        pass
    if not keep:
        import sys

        sys.modules.pop("otastart", None)


def idle(h):
    # Update mode: back to the application after update_idle_ms without an update.
    h.idle = 0 if h.job else h.idle + 1000
    if h.idle > h.idle_ms:
        print("ota: no update came: back to the application")
        __import__("otaconn").reset()

