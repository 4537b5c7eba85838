# Test entry point (tools/fwrun.py copies it into the build when asked to squeeze): runs
# main.py with a hook (launch.after_install, right after app.install()) that fills the heap
# with ballast, so the out-of-memory paths run on the unix port.
#   config.json "squeeze": {"leave_free": N}  ballast at start-up until N bytes are free
#   config.json "squeeze": {"squeeze": true}  a timer reads a byte count from ./squeeze
#                                             (written by Firmware.squeeze()) and takes
#                                             the heap down to it; no file: heap given back
import gc
import os
# The ballast as a chain of pairs [rest, piece]: appending to one list would grow it,
# and growing a list takes one block of its whole size, which a fragmented heap may not
# have; every later piece was then refused (seen: 2.8 KB left free for a target of 64).
_ballast = [None]
_held = [0]
def _squeeze(target):
    # Fill the heap with ballast until only `target` bytes are free.
    gc.collect()
    size = 2048
    while size >= 16:
        room = gc.mem_free() - target
        if room < 16:
            break
        try:
            _ballast[0] = [_ballast[0], bytearray(min(room - 16, size))]
            _held[0] += 1
        except MemoryError:
            size //= 2  # no free block that big left: take smaller ones
def _release():
    _ballast[0] = None
    _held[0] = 0
_reserve = None
_digits = bytearray(16)
_target = [None]
def _read_target():
    # The byte count in ./squeeze, None when there is no file, -1 while the test is still
    # writing it (empty or partial: keep the last target). Read into a buffer
    # allocated at start-up: f.read() wants a 256 B block, which a squeezed heap may not
    # have in one piece (it failed on most checks, and then freed memory was never soaked
    # up again). MemoryError (from open() itself) goes to the caller.
    try:
        with open("squeeze", "rb") as f:
            n = f.readinto(_digits)
    except OSError:
        return None
    value = 0
    for i in range(n):
        d = _digits[i] - 48
        if not 0 <= d <= 9:
            return -1
        value = value * 10 + d
    return value if n else -1
def _squeeze_file(now):
    # The test writes a byte count into ./squeeze to take the heap away while the
    # server runs, and deletes the file to give it back. A small reserve, dropped at the
    # start of each check and taken again at its end, lets the check itself run on a
    # starved heap (it is synchronous: nothing else allocates in between).
    global _reserve
    _reserve = None
    try:
        target = _read_target()
    except MemoryError:
        target = -1  # could not even open the file
    if target == -1:
        target = _target[0]  # keep the last target
    was = _target[0]
    _target[0] = target
    if target is None:
        if _held[0]:
            _release()
            gc.collect()
            print("ringws-test: ballast released, heap free %d" % gc.mem_free())
        return
    if target != was:
        print("ringws-test: squeezed to %d" % target)
    _squeeze(target + 300)  # every check soaks up what the server freed since the last
    if _held[0]:
        try:
            _reserve = bytearray(256)
        except MemoryError:
            pass
def _squeeze_hook(srv, cfg):
    h = cfg.get("squeeze") or {}
    if h.get("leave_free"):
        _squeeze(h["leave_free"])
        print("ringws-test: ballast %d blocks, heap free %d" % (_held[0], gc.mem_free()))
    if h.get("squeeze"):
        srv.add_timer(100, _squeeze_file)
        # Soak again at each accept: what a connection's teardown freed since the last
        # check would otherwise carry the next handshake (a handshake takes a few
        # hundred bytes once its slot has a reader task).
        start = srv._start
        def _start_squeezed(slot, sock, remote):
            if _target[0] is not None and _held[0]:  # (a target is never -1: see above)
                _squeeze(_target[0])
            start(slot, sock, remote)
        srv._start = _start_squeezed
import launch
launch.after_install = _squeeze_hook
exec(open("main.py").read())
