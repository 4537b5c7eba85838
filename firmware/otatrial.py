# The boot after a switch (ota.py has the layout): a start-up that fails says why and
# resets at once, so the next boot returns to the previous tree; the first tick (the
# server listens and ticks: healthy) confirms the tree. Loaded only on that boot, gone
# after its first tick.
import os

before = None  # board.fatal, replaced while the trial starts
h = None  # the Ota (otastart.install)


def fatal(exc, pause_ms=0):
    """board.fatal on a trial's boot: say why, reset now."""
    cwd = os.getcwd()
    with open(cwd[:cwd.find("/.ota/")] + "/.ota/why", "w") as f:
        f.write("start-up failed: %r" % (exc,))
    print("ota: the new version failed (%r): back to the previous one" % (exc,))
    import machine

    machine.reset()


def confirm(now):
    # The previous tree stays until the next commit builds the next tree in its place.
    import json
    import sys

    import board

    ota = h
    if ota is None:
        return
    ota.srv.timers.remove(ota.boot_timer)
    ota.boot_timer = None
    p = ota.dot
    cwd = os.getcwd()
    with open(p + "active.tmp", "w") as f:
        f.write(cwd[cwd.find("/.ota/") + 6:].strip("/") + "\n")
    # Removed, then renamed (FAT's rename does not replace); boot.py finishes an
    # active.tmp that a reset left alone.
    for name in ("active", "trying", "why"):
        try:
            os.remove(p + name)
        except OSError:
            pass
    os.rename(p + "active.tmp", p + "active")
    ota.last = {"result": "ok", "from": (ota.last or {}).get("from"), "to": ota.version}
    with open(p + "last", "w") as f:
        json.dump(ota.last, f)
    ota.confirmed = True
    board.fatal = before
    sys.modules.pop("otatrial", None)
    print("ota: version", ota.version, "confirmed")
