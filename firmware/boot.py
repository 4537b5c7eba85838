# boot.py: picks the firmware tree and never touches the network (main.py does that and
# reports every failure). Updates over WiFi (ota.py has the layout) install a tree under
# .ota/ and name it in .ota/try: its first boot is a trial that must confirm within its
# deadline, or the boot after it returns to the tree .ota/active names (none: this folder)
# and notes why in .ota/last.
def _pick():
    import os

    def rd(name):
        try:
            with open(".ota/" + name) as f:
                return f.read().split()
        except OSError:
            return None

    def mv(a, b):
        try:
            os.remove(".ota/" + b)
        except OSError:
            pass
        os.rename(".ota/" + a, ".ota/" + b)

    try:
        os.stat(".ota")
    except OSError:
        return None  # never updated over WiFi
    if rd("active") is None and rd("active.tmp") is not None:
        mv("active.tmp", "active")  # a confirm cut short between its two steps
    act = rd("active")
    t = rd("trying")
    if t:
        if not (act and act[0] == t[0]):
            _rolled_back(t[0], act[0] + "/" if act else "")
        os.remove(".ota/trying")
    t = rd("try")
    if t:
        mv("try", "trying")
        return t
    return act


def _rolled_back(failed, active):
    # The last trial never confirmed: this boot returns to the active tree. Noted here,
    # where the heap is still empty, for /stats (ota.py reads .ota/last).
    import json
    import os

    def text(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return None

    last = {"result": "rolled back", "from": text(".ota/%s/.ringws-version" % failed),
            "to": text((".ota/" + active if active else "") + ".ringws-version"),
            "why": text(".ota/why") or "not confirmed in time"}
    with open(".ota/last", "w") as f:
        json.dump(last, f)
    try:
        os.remove(".ota/why")
    except OSError:
        pass
    print("boot: rolled back:", last["why"])


def _deadline(ms):
    # The trial must confirm within ms (ota.py does, once the server listens and ticks);
    # a start-up that raises resets at once (ota.py wraps board.fatal), one that hangs is
    # reset here, where the port has a hardware timer (the ESP32's; not the unix port).
    import machine

    timer = getattr(machine, "Timer", None)
    if timer is None:
        return

    def late(_):
        import os

        try:
            os.stat("../trying")
        except OSError:
            return  # confirmed
        with open("../why", "w") as f:
            f.write("not healthy within %d ms of the reset" % ms)
        machine.reset()

    timer(0).init(mode=timer.ONE_SHOT, period=ms, callback=late)


_pick = _pick()
if _pick:
    import os

    os.chdir(".ota/" + _pick[0])
    if len(_pick) > 1:
        _deadline(int(_pick[1]))
    del os
del _pick, _deadline, _rolled_back
