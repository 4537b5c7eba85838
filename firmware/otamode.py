# Loaded by launch.start only when config.json has ota.token: is this boot an update's?


def update_mode(scfg):
    """True when this boot is an update's (ota.py: .ota/update, removed now, so the next
    reset serves the application again): 2 slots, no application. On a trial's boot
    (.ota/trying), a start-up that fails says why and resets at once (otatrial)."""
    import os

    cwd = os.getcwd()
    i = cwd.find("/.ota/")
    dot = (cwd[:i] if i >= 0 else cwd.rstrip("/")) + "/.ota/"
    try:
        os.stat(dot + "trying")
        import board
        import otatrial

        otatrial.before = board.fatal
        board.fatal = otatrial.fatal
    except OSError:
        pass
    try:
        os.remove(dot + "update")
    except OSError:
        return False
    scfg["max_connections"] = 2  # one /ota, one /stats
    print("ota: update mode")
    return True
