"""Socket errors that only mean the peer has gone are not logged as errors, under the real
MicroPython interpreter too, whose errno module is smaller than CPython's (no EPIPE)."""
import json
import os
import subprocess

from conftest import FIRMWARE, ROOT

SCRIPT = r"""
import sys
sys.path.insert(0, %r)
from ringws import connection
print(sorted(connection.RESET_ERRNOS))
"""


def test_epipe_and_resets_are_peer_resets_under_micropython():
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    assert os.path.exists(mp), "no MicroPython: run make test (it installs it)"
    r = subprocess.run([mp, "-c", SCRIPT % str(FIRMWARE)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    got = set(json.loads(r.stdout))  # a list of ints, printed by MicroPython
    # EPIPE is 32 on Linux and in lwIP; ECONNRESET 104 on Linux (lwIP: its own number,
    # taken from the errno module on the board).
    assert {32, 104} <= got, got
