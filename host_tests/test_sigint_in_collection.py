"""Ctrl-C that lands inside a garbage collection, under the real MicroPython unix port.

The unix port raises SIGINT's KeyboardInterrupt straight from the signal handler. When it
lands inside gc.collect(), the collection never finishes and the heap stays locked: every
allocation after it fails with "MemoryError: memory allocation failed, heap is locked", and
the graceful shutdown main.py runs (1001 to every client) would fail with it, as would
whatever runs after main.py (the virtual board's REPL).

Here the firmware's real main.py runs with a stand-in launch module that does nothing but
collect, in start() or in serve(), so the signal almost always lands inside a collection;
the shutdown and the code after main.py must still allocate.
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
        made = [bytearray(32) for _ in range(50)]  # allocates: fails if the heap is locked
        print("shutdown allocated", len(made))


def start():
    if %r == "start":
        collect_forever()
    return Server()


def forget():
    pass
"""

AFTER_MAIN = "import main\nmade = [bytearray(32) for _ in range(50)]\nprint('after main', len(made))"


def run_once(work):
    proc = subprocess.Popen([micropython(), "-X", "heapsize=512k", "-c", AFTER_MAIN], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    try:
        line = proc.stdout.readline()
        assert line == b"collecting\n", line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode()


@pytest.mark.parametrize("phase", ["start", "serve"])
def test_heap_usable_after_a_sigint_inside_a_collection(tmp_path, phase):
    work = str(tmp_path)
    shutil.copy(os.path.join(ROOT, "firmware", "main.py"), work)
    with open(os.path.join(work, "launch.py"), "w") as f:
        f.write(LAUNCH % phase)
    for _ in range(4):
        rc, out = run_once(work)
        assert "heap is locked" not in out and "Traceback" not in out, out
        if phase == "serve":
            assert "shutdown allocated 50" in out, out
        assert out.rstrip().endswith("ringws: stopped\nafter main 50"), out
        assert rc == 0, (rc, out)
