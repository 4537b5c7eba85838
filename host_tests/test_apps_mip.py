"""The library as a mip package of bytecode (tools/dist.py, `make dist`), installed with the
real mpremote onto the virtual board at an ESP32's 110 KiB heap, then a user's own main.py
that imports ringws.server echoes to the real `websockets` client."""
import asyncio
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import free_port
from fwrun import until

pytestmark = pytest.mark.slow  # mpremote mip on a virtual board

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPREMOTE = os.path.join(ROOT, ".venv", "bin", "mpremote")
HEAP = os.environ.get("VBOARD_HEAP", "110k")

USER_MAIN = '''
import asyncio
import gc
from ringws.server import Server


class Echo:
    def on_message(self, conn, data, text):
        return conn.send(data, text)


srv = Server({"host": "127.0.0.1", "port": %d, "max_connections": 4, "recv_buf": 512,
              "send_ring": 1024, "max_message": 512})
srv.route("/echo", Echo())
gc.collect()
print("user app: heap free", gc.mem_free())
asyncio.run(srv.serve())
'''


def host_arch():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import boards

    return boards.load("host")["mpy_arch"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dist.py"), "--out",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_every_arch_gets_the_library_as_bytecode(dist):
    with open(os.path.join(ROOT, "package.json")) as f:
        sources = json.load(f)
    for arch in ("xtensawin", "rv32imc", host_arch()):
        with open(dist / arch / "package.json") as f:
            pkg = json.load(f)
        assert pkg["version"] == sources["version"] and pkg["deps"] == []
        assert [t for t, _ in pkg["urls"]] == [t[:-3] + ".mpy" for t, _ in sources["urls"]]
        for target, url in pkg["urls"]:
            assert url == target   # relative to the package.json: a path or a URL works
            data = (dist / arch / url).read_bytes()
            assert data[:2] == b"M\x06", (arch, url)   # .mpy version 6
    assert os.path.samefile(dist / "host" / "package.json", dist / host_arch() / "package.json")


class Board:
    def __init__(self, tmp):
        self.flash = tmp / "flash"
        self.log = tmp / "board.log"
        url_file = tmp / "url"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "virtual_board.py"), "--flash",
             str(self.flash), "--port", str(free_port()), "--port-file", str(url_file),
             "--log", str(self.log), "--heap", HEAP], stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        assert until(lambda: url_file.exists() or self.proc.poll() is not None, 20)
        self.url = url_file.read_text()

    def mpremote(self, *args):
        r = subprocess.run([MPREMOTE, "connect", self.url] + list(args), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr + self.board_log()
        return r.stdout

    def board_log(self):
        return "\n--- board log ---\n" + (self.log.read_text(errors="replace")[-3000:]
                                          if self.log.exists() else "")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_mip_bytecode_and_a_user_app_echo_at_110k(dist, tmp_path):
    board = Board(tmp_path)
    try:
        # No --target: mip installs into the board's lib folder, as on an ESP32.
        out = board.mpremote("mip", "install", str(dist / "host" / "package.json"))
        assert "Installing:" in out, out
        assert sorted(os.listdir(board.flash / "lib" / "ringws")) == sorted(
            os.listdir(dist / host_arch() / "ringws"))
        port = free_port()
        main = tmp_path / "main.py"
        main.write_text(USER_MAIN % port)
        board.mpremote("fs", "cp", str(main), ":main.py", "+", "reset")

        import websockets

        async def talk():
            uri = "ws://127.0.0.1:%d/echo" % port
            deadline = time.time() + 30
            while True:
                try:
                    ws = await websockets.connect(uri)
                    break
                except OSError:
                    assert time.time() < deadline, "no server" + board.board_log()
                    await asyncio.sleep(0.2)
            async with ws:
                await ws.send("hello from mip")
                assert await ws.recv() == "hello from mip"
                blob = os.urandom(400)
                await ws.send(blob)
                assert await ws.recv() == blob

        asyncio.run(asyncio.wait_for(talk(), 60))
        log = board.board_log()
        assert "user app: heap free" in log, log
        assert "lib/ringws/server.mpy" not in log   # imported without a traceback
        print([line for line in log.splitlines() if "user app" in line][-1])  # README figure
    finally:
        board.stop()


def user_app_heap(tmp_path, package):
    """The user app's "heap free" line with the library installed from package.json
    (None: it ran out of memory first)."""
    board = Board(tmp_path)
    try:
        board.mpremote("mip", "install", package)
        main = tmp_path / "main.py"
        main.write_text(USER_MAIN % free_port())
        board.mpremote("fs", "cp", str(main), ":main.py", "+", "reset")
        until(lambda: any(w in board.board_log() for w in ("MemoryError", "user app")), 30)
        log = board.board_log()
        m = re.search(r"user app: heap free (\d+)", log)
        assert m or "MemoryError" in log, log
        return m and int(m.group(1))
    finally:
        board.stop()


def test_the_source_package_leaves_less_heap_than_bytecode(dist, tmp_path):
    """Why dist/ exists: sources compile on the board, into its heap (the top-level
    package.json is for PSRAM boards); bytecode loads as it is."""
    if HEAP != "110k":
        pytest.skip("about the 110 KiB heap")
    src = user_app_heap(tmp_path / "src", os.path.join(ROOT, "package.json"))
    mpy = user_app_heap(tmp_path / "mpy", str(dist / "host" / "package.json"))
    print("user app heap free at 110k: sources %s, bytecode %d" % (src, mpy))
    assert mpy and (src is None or src < mpy), (src, mpy)
