# Start-up of updates over WiFi (ota.py has the layout): the update-mode question
# launch.start asks before it takes the slots, the installation of the /ota route, and
# the timers of a boot after a switch (confirm, or note the rollback) and of update mode.
# Leaves the heap after start-up, or after the first tick of a boot after a switch.
import json
import os

import ota

fatal_before_trial = None  # board.fatal, while a trial's start-up replaces it


def root():
    """The flash root, where boot.py and .ota/ are (the cwd is a tree below it)."""
    cwd = os.getcwd()
    i = cwd.find("/.ota/")
    return cwd[:i] if i >= 0 else cwd.rstrip("/")


def update_mode(scfg):
    """True when this boot is an update's (.ota/update, removed now: the next reset
    serves the application again). On a trial's boot, a start-up that fails (main.py
    calls board.fatal) says why and resets at once, back to the previous tree."""
    dot = root() + "/.ota/"
    try:
        os.stat(dot + "trying")
        import board

        global fatal_before_trial
        fatal_before_trial = board.fatal
        board.fatal = trial_fatal
    except OSError:
        pass
    try:
        os.remove(dot + "update")
    except OSError:
        return False
    scfg["max_connections"] = 2  # one /ota, one /stats
    print("ota: update mode")
    return True


def trial_fatal(exc, pause_ms=0):
    """board.fatal on a trial's boot: say why, reset now; the previous tree boots next."""
    with open(root() + "/.ota/why", "w") as f:
        f.write("start-up failed: %r" % (exc,))
    print("ota: the new version failed (%r): back to the previous one" % (exc,))
    import machine

    machine.reset()


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
    srv.set_access(h.check)
    srv.stats = h.stats
    keep = False
    if lean:
        srv.add_timer(1000, lambda now: idle(h))
        keep = True
    try:
        # The last boot switched: this one is the trial, confirmed at the first tick,
        # once the server listens and ticks (what "healthy" means).
        os.stat(dot + "trying")
        h.confirmed = False
        srv.add_timer(0, lambda now: after_boot(h))
        h.boot_timer = srv.timers[-1]
        keep = True
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


def remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


def read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return ""


def put(p, text):
    """Replace the file p by text: written beside it, then renamed (after a remove:
    FAT's rename does not replace; boot.py finishes an active.tmp left between the two)."""
    with open(p + ".tmp", "w") as f:
        f.write(text)
    remove(p)
    os.rename(p + ".tmp", p)


def after_boot(h):
    """At the first tick of a trial: the server listens and ticks, the tree is confirmed.
    (The previous tree stays until the next commit builds the next tree in its place.)"""
    h.srv.timers.remove(h.boot_timer)
    h.boot_timer = None  # the last reference to this module's code
    cwd = os.getcwd()
    p = h.dot
    try:
        last = json.loads(read(p + "last"))
    except ValueError:
        last = {}
    put(p + "active", cwd[cwd.find("/.ota/") + 6:].strip("/") + "\n")
    remove(p + "trying")
    remove(p + "why")
    h.confirmed = True
    import board

    board.fatal = fatal_before_trial  # and this module can leave the heap
    h.last = {"result": "ok", "from": last.get("from"), "to": h.version}
    put(p + "last", json.dumps(h.last))
    print("ota: version", h.version, "confirmed")
    import gc
    import sys

    sys.modules.pop("otastart", None)
    gc.collect()
