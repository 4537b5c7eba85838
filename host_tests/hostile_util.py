"""Helpers for the hostile-input tests, tools/soak.py and tools/fuzz.py.

The firmware runs for real: built with tools/build.py, served by the MicroPython unix port
with an ESP32-sized heap on a free 127.0.0.1 port. Clients here are raw sockets (a hostile
peer does what no library would) plus the real `websockets` client for the well-behaved
ones. Resources are read from /stats and from /proc/<pid>/fd.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import fwrun  # noqa: E402  (tools/fwrun.py)
from fwrun import HEAP, parse_response, until  # noqa: E402,F401

FIRMWARE = os.path.join(ROOT, "firmware")
if FIRMWARE not in sys.path:
    sys.path.insert(0, FIRMWARE)

# Quick timeouts so every timeout case finishes in about a second.
FAST = {
    "handshake_timeout_ms": 500,
    "ping_interval_ms": 300,
    "pong_timeout_ms": 300,
    "close_timeout_ms": 500,
    "tick_ms": 50,
}

class Firmware(fwrun.Firmware):
    """tools/fwrun.py's Firmware; access: the config's "access" section."""

    def __init__(self, out_dir, server=None, access=None, heap=HEAP, leave_free=None,
                 squeeze=False):
        fwrun.Firmware.__init__(self, out_dir, heap=heap, server=server,
                                config={"access": access} if access is not None else None,
                                squeeze=squeeze, leave_free=leave_free)

    def stop(self):
        fwrun.Firmware.stop(self, grace=3)

    def settle(self, timeout=5.0, busy=0):
        return self.idle(busy, timeout)


def assert_baseline(fw, base, mem_slack=2048, what=""):
    """Slots, connections and fds exactly at baseline; mem_alloc within a small slack
    (interned strings and the GC's granularity move it by a few hundred bytes)."""
    now = fw.resources()
    for key in ("slots_free", "connections", "http_active", "fds"):
        assert now[key] == base[key], (what, key, base, now, fw.log())
    assert now["mem_alloc"] - base["mem_alloc"] <= mem_slack, (what, base, now)
    return now


from wspeer import (  # noqa: E402,F401  (tools/wspeer.py; the tests import them from here)
    FrameReader,
    closed_by_peer,
    connect,
    echo_roundtrip,
    frame,
    http_get,
    read_all,
    reset,
    warm_slots,
    ws_open,
    ws_request,
)

wait_until = until
