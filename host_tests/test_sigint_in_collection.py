"""Ctrl-C that lands inside a garbage collection, under the real MicroPython unix port.

The unix port raises SIGINT's KeyboardInterrupt straight from the signal handler. When it
lands inside gc.collect(), the collection never finishes: the heap stays locked (every
allocation fails with "MemoryError: memory allocation failed, heap is locked") and its
marks are half made, so collecting again could free live objects. main.py then cannot
run the graceful shutdown; it must say so and end cleanly, never with a traceback.

Here the firmware's real main.py runs with a stand-in launch module that does nothing but
collect, in start() or in serve(), so the signal almost always lands inside a collection.
"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT
from fwrun import micropython

LAUNCH = """
import gc


def collect_forever():
    keep = [bytearray(48) for _ in range(1500)]  # (a heap that takes a while to mark)
    print("collecting")
    while keep:
        gc.collect()


class Server:
    async def serve(self):
        collect_forever()

    async def shutdown(self):
        made = [bytearray(32) for _ in range(50)]
        print("shutdown allocated", len(made))


def start():
    if %r == "start":
        collect_forever()
    return Server()


def forget(srv):
    pass
"""


def run_once(work):
    proc = subprocess.Popen([micropython(), "-X", "heapsize=512k", "main.py"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    try:
        line = proc.stdout.readline()
        if line.startswith(b"ringws: heap free"):  # (main.py's, before serve() in "serve")
            line = proc.stdout.readline()
        assert line == b"collecting\n", line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode("utf-8", "replace")


@pytest.mark.parametrize("phase", ["start", "serve"])
def test_a_sigint_inside_a_collection_ends_cleanly(tmp_path, phase):
    work = str(tmp_path)
    shutil.copy(os.path.join(ROOT, "firmware", "main.py"), work)
    with open(os.path.join(work, "launch.py"), "w") as f:
        f.write(LAUNCH % phase)
    for _ in range(4):
        rc, out = run_once(work)
        assert "Traceback" not in out and "heap is locked" not in out, out
        assert rc == 0, (rc, out)
        if phase == "start":
            assert out == "ringws: stopped\n", out
        else:  # the shutdown ran, or (the signal inside a collection) it said why not
            assert out in ("shutdown allocated 50\nringws: stopped\n",
                           "ringws: no heap: no 1001\nringws: stopped\n"), out
