# permessage-deflate's heap gate: whether an upgrade request's offer is taken
# (connection.request asks). Loaded at start-up where the server has inflaters
# (compat_inflate.py), so no board without them pays for it.
import sys

from ringws import compat
from ringws.compat import const

_HTTP = const(1)  # (slot.py's phases)


def offer(srv, k, req, handler):
    """(pmd, the 101's extension line) for an offer, or (None, None). pmd.py (the inflating
    code) and its inflaters are loaded, or kept, only while the heap keeps deflate_reserve
    bytes (or a route's heap_per_connection) for each of the k connections the free slots
    may still open, and twice more for /stats; while a connection uses them every offer is
    taken (a pool the compressing connections share: another one takes no more heap).
    The heap is judged first, so that a full board does not even load pmdoffer.py (the
    answer to an offer, for one use). A declined offer is counted in /stats deflate;
    unused code the heap is short of leaves."""
    st = sys.modules["ringws"].inflaters[2]
    zin = sys.modules.get("ringws.pmd")
    per = srv.cfg["deflate_reserve"]
    for h in srv.routes.values():
        per = max(per, getattr(h, "heap_per_connection", 0))
    need = _need(srv, k, per)
    if not _in_use(srv) and not _room(need if zin else need + st["code"]):  # (its last load's)
        return _declined(srv, st)
    try:
        ext = compat.use_once("pmdoffer").offer(req, handler, srv.cfg)
    except MemoryError:
        return _declined(srv, st)
    if ext is None:
        return None, None  # (not an offer we take: no heap question)
    if zin is None:
        compat.collect()  # (pmdoffer.py's code is garbage now)
        free = compat.mem_free()  # (-1 under CPython: no fixed heap, nothing declined)
        try:
            zin = __import__("ringws.pmd").pmd
            zin.ready(srv.cfg)  # (its inflaters)
            st["loads"] += 1
        except MemoryError:
            st["code"] = free  # (it needs more than that: no new try until the heap has it)
            return _declined(srv, st)
        room = _room(need)
        st["code"] = free - compat.mem_free()
        if not room:  # (it took more than its last load did)
            return _declined(srv, st)
    zin.ready(srv.cfg)
    return zin, ext


def _need(srv, k, per):
    # Each free slot may open a connection of the hungriest route (a handler may say what
    # one of its connections takes); +2: a request on the last slot, /stats, loads its
    # module beside a WebSocket's. A slot already reading a request holds most of what
    # its connection will take (x64: about 540 of a callback echo's 635 B): a quarter.
    h = -1  # (this request's slot is one)
    for s in srv.slots:
        if s.pool is None and s.phase == _HTTP:
            h += 1
    h = max(0, min(h, k))
    return (k - h + 2) * per + h * (per >> 2)


def _in_use(srv):
    for s in srv.slots:
        if s.zin is not None:
            return True
    return False


def _room(need):
    compat.collect()
    free = compat.mem_free()
    return free < 0 or free >= need


def _declined(srv, st):
    # Answered without the extension; pmd.py, if no connection uses it, leaves with its
    # buffers.
    st["declined"] += 1
    if not _in_use(srv):
        compat.unload("ringws.pmd")
        pkg = sys.modules["ringws"]
        setattr(pkg, "inflaters", (None, None) + pkg.inflaters[2:])  # (the buffers go with the code)
    return None, None
