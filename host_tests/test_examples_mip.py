"""README's "The library alone, with mip", followed as a user would: its main.py as it
stands and its commands (the real mpremote: mip install of the host arch's .mpy package,
then cp main.py and reset) on the virtual board at 110 KiB, then an echo through the real
`websockets` client. Only what a test must change is changed: the dist folder, the board's
serial URL and the TCP port (free ones, as tests run side by side)."""
import os
import re
import shlex
import subprocess
import time

import pytest

from conftest import ROOT, free_port
from test_apps_mip import HEAP, Board, dist  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # mpremote mip on a virtual board


def readme_section():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return text.split("\n## The library alone, with mip\n", 1)[1].split("\n## ", 1)[0]


def readme_main():
    return re.search(r"```python\n(.*?)```", readme_section(), re.S).group(1)


def readme_commands():
    text = re.sub(r"```python\n.*?```", "", readme_section(), flags=re.S)
    return [ln.split("  #")[0].strip() for ln in text.splitlines() if ln.startswith("    ")]


def test_the_readme_steps_are_the_ones_tested():
    cmds = readme_commands()
    assert cmds[:2] == ["make dist", "make sim-board &"]
    assert cmds[2].endswith("mip install dist/host/package.json")
    assert cmds[3].endswith("cp main.py :main.py + reset")
    assert cmds[4] == ".venv/bin/python -m websockets ws://127.0.0.1:8080/echo"
    # make sim-board's defaults are what the commands connect to, and the line the
    # README says to wait for is what it prints once it listens
    with open(os.path.join(ROOT, "tools", "virtual_board.py")) as f:
        vb = f.read()
    assert 'default="build/vboard"' in vb and "default=9870" in vb and '"110k"' in vb
    assert '"virtual board: socket://127.0.0.1:9870"' in readme_section()
    assert 'print("virtual board: %s' in vb


def test_readme_mip_install_then_main_py_echoes_at_110k(dist, tmp_path):  # noqa: F811
    assert HEAP == "110k" or pytest.skip("about the 110 KiB heap")
    board = Board(tmp_path)
    port = free_port()
    try:
        main = readme_main()
        assert '"port": 8080' in main
        work = tmp_path / "work"
        work.mkdir()
        (work / "main.py").write_text(main.replace('"port": 8080', '"port": %d' % port))
        for cmd in readme_commands()[2:4]:
            argv = [os.path.join(ROOT, a) if a.startswith(".venv/") else a
                    for a in shlex.split(cmd.replace("socket://127.0.0.1:9870", board.url)
                                         .replace("dist/host/", str(dist / "host") + "/"))]
            r = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, cmd + "\n" + r.stdout + r.stderr + board.board_log()
        assert (board.flash / "lib" / "ringws" / "server.mpy").exists()
        assert (board.flash / "main.py").read_text() == (work / "main.py").read_text()

        from websockets.sync.client import connect

        url = "ws://127.0.0.1:%d/echo" % port
        deadline = time.time() + 30
        while True:
            try:
                ws = connect(url, open_timeout=5, max_size=None)
                break
            except OSError:
                assert time.time() < deadline, "no server" + board.board_log()
                time.sleep(0.2)
        with ws:
            ws.send("hello through mip")
            assert ws.recv(timeout=10) == "hello through mip"
            blob = os.urandom(100_000)   # far larger than the slot: streamed through
            ws.send(blob)
            assert ws.recv(timeout=30) == blob
        boot = board.board_log().rsplit("vboard: boot (HARD_RESET)", 1)[-1]   # main.py's run
        assert "Traceback" not in boot and "listening on" in boot, boot
    finally:
        board.stop()
