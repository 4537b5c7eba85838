"""End to end without hardware: tools/virtual_board.py (the MicroPython unix port behind
socket://) is deployed to with `make deploy` and the real mpremote, boots main.py, and a
real WebSocket client talks to the server it runs. A second deploy after changing one
file uploads only that file."""
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import free_port

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPREMOTE = os.path.join(ROOT, ".venv", "bin", "mpremote")
HEAP = os.environ.get("VBOARD_HEAP", "110k")   # the ESP32's GC heap


class VBoard:
    def __init__(self, tmp):
        self.tmp = tmp
        self.flash = tmp / "flash"
        self.log = tmp / "board.log"
        self.src = tmp / "src"
        shutil.copytree(os.path.join(ROOT, "firmware"), self.src,
                        ignore=shutil.ignore_patterns("__pycache__", "config.json"))
        self.ws_port = free_port()
        url_file = tmp / "url"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "virtual_board.py"), "--flash",
             str(self.flash), "--port", str(free_port()), "--port-file", str(url_file),
             "--log", str(self.log), "--heap", HEAP], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not url_file.exists():
            assert self.proc.poll() is None and time.time() < deadline, "no virtual board"
            time.sleep(0.05)
        self.url = url_file.read_text()

    def deploy(self, *extra):
        args = ["--set", "port=%d" % self.ws_port, "--source", str(self.src),
                "--out", str(self.tmp / "build")] + list(extra)
        r = subprocess.run(["make", "-s", "--no-print-directory", "deploy", "BOARD=host",
                            "CERTS=",  # a certificate made for this machine is not the test's
                            "PORT=" + self.url, "DEPLOY_ARGS=" + " ".join(args)],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr + self.board_log()
        return r.stdout

    def mpremote(self, *args, timeout=60):
        r = subprocess.run([MPREMOTE, "connect", self.url] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, r.stdout + r.stderr + self.board_log()
        return r.stdout

    def board_log(self):
        return "\n--- board log ---\n" + (self.log.read_text(errors="replace")[-3000:]
                                          if self.log.exists() else "")

    def mtimes(self):
        out = {}
        for dirpath, _, names in os.walk(self.flash):
            for n in names:
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, self.flash)] = os.stat(p).st_mtime_ns
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def vboard(tmp_path_factory):
    b = VBoard(tmp_path_factory.mktemp("vboard"))
    yield b
    b.stop()


def uploaded(out):
    return re.findall(r"^\s+\[\d+/\d+\] (\S+)", out, re.M)


def wait_http(port, path, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as r:
                return r.status, r.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_mpremote_drives_the_virtual_board(vboard, tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint('hello from', sys.implementation.name, 6 * 7)\n")
    assert "hello from micropython 42" in vboard.mpremote("run", str(script))
    vboard.mpremote("fs", "cp", str(script), ":probe.py")
    assert (vboard.flash / "probe.py").read_text() == script.read_text()
    assert "probe.py" in vboard.mpremote("fs", "ls")
    # soft reset: boot.py runs again, main.py does not (raw REPL), files persist
    out = vboard.mpremote("exec", "import os; print(sorted(os.listdir()))", "+", "soft-reset",
                          "+", "exec", "import machine; print('cause', machine.reset_cause())")
    assert "probe.py" in out and "cause 5" in out
    vboard.mpremote("fs", "rm", ":probe.py")
    assert not (vboard.flash / "probe.py").exists()


def test_dry_run_changes_nothing(vboard):
    before = vboard.mtimes()
    out = vboard.deploy("--dry-run")
    assert "dry run: nothing changed" in out
    assert re.search(r"upload\s+ringws/server\.mpy\s+\d+ bytes\s+\(new\)", out)
    assert "upload  config.json" in out
    assert vboard.mtimes() == before


def test_deploy_boots_and_serves_websockets(vboard):
    out = vboard.deploy()
    files = uploaded(out)
    assert "main.py" in files and "ringws/server.mpy" in files and "config.json" in files
    assert "board reset" in out
    manifest = json.loads((vboard.flash / ".ringws-deploy.json").read_text())
    assert set(manifest) == set(files)
    cfg = json.loads((vboard.flash / "config.json").read_text())
    assert cfg["server"]["port"] == vboard.ws_port
    # .mpy compiled for the board's arch: the unix port (x64) imports it
    assert (vboard.flash / "ringws" / "server.mpy").read_bytes()[:1] == b"M"

    try:
        status, body = wait_http(vboard.ws_port, "/stats")
    except OSError as e:
        pytest.fail("server on the virtual board did not answer: %s%s" % (e, vboard.board_log()))
    stats = json.loads(body)
    assert status == 200 and stats["board"]["mode"] == "host"
    assert stats["board"]["reset_cause"] == "HARD_RESET"   # deploy reset the board

    import websockets

    async def talk():
        uri = "ws://127.0.0.1:%d/echo" % vboard.ws_port
        async with websockets.connect(uri, max_size=None) as ws:
            await ws.send("hello, board")
            assert await ws.recv() == "hello, board"
            blob = os.urandom(3000)
            await ws.send(blob)
            assert await ws.recv() == blob

    asyncio.run(asyncio.wait_for(talk(), 30))


def test_second_deploy_uploads_only_the_changed_file(vboard):
    echo = vboard.src / "app" / "echo.py"
    echo.write_text(echo.read_text() + "\nDEPLOY_MARK = %d\n" % time.time_ns())
    before = vboard.mtimes()
    out = vboard.deploy("--no-reset")
    assert uploaded(out) == ["app/echo.mpy"], out
    after = vboard.mtimes()
    changed = sorted(p for p in after if after[p] != before.get(p))
    assert changed == [".ringws-deploy.json", ".ringws-version", "app/echo.mpy"]
    # and a file dropped from the tree is removed from the board
    (vboard.src / "www" / "index.html").unlink()
    out = vboard.deploy("--no-reset")
    assert "remove  www/index.html" in out and uploaded(out) == []
    assert not (vboard.flash / "www" / "index.html").exists()
    out = vboard.deploy("--no-reset")
    assert "board is up to date" in out
