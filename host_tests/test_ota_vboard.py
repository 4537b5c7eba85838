"""Updates over WiFi with three virtual boards at once (tools/virtual_board.py, the real
MicroPython unix port at 110k behind socket://): each is deployed once over USB with
ota.token set and its own port, then `make deploy URL="<three ws:// URLs>"` moves them
to a changed build through ringws itself (firmware/ota.py, tools/netdeploy.py). Also:
a board killed mid-upload, a build whose start-up raises (rolled back), the canary, and
every refusal with nothing written."""
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPREMOTE = os.path.join(ROOT, ".venv", "bin", "mpremote")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import netdeploy  # noqa: E402

pytestmark = pytest.mark.slow  # three virtual boards, about 90 s

TOKEN = "t0ken-for-tests"
HEAP = "110k"  # the firmware's; the virtual board adds its own use (BRIDGE_HEAP)


def until(cond, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.2)


class VBoard:
    def __init__(self, tmp, secrets):
        self.tmp = tmp
        self.flash = tmp / "flash"
        self.log = tmp / "board.log"
        self.ws_port = free_port()
        url_file = tmp / "url"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "virtual_board.py"), "--flash",
             str(self.flash), "--port", str(free_port()), "--port-file", str(url_file),
             "--log", str(self.log), "--heap", HEAP],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        until(url_file.exists, 20, "the virtual board")
        self.url = url_file.read_text()
        self.secrets = secrets
        self.ws_url = "ws://127.0.0.1:%d/" % self.ws_port

    def usb_deploy(self, src):
        args = ["--set", "port=%d" % self.ws_port, "--source", str(src), "--secrets",
                str(self.secrets), "--out", str(self.tmp / "usb-build")]
        r = subprocess.run(["make", "-s", "--no-print-directory", "deploy", "BOARD=host",
                            "CERTS=",  # a certificate made for this machine is not the test's
                            "PORT=" + self.url, "DEPLOY_ARGS=" + " ".join(args)],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr + self.board_log()

    def stats(self, timeout=30):
        def get():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.ws_port,
                                            timeout=2) as r:
                    return json.loads(r.read())
            except (OSError, ValueError):
                return None
        return until(get, timeout, "/stats on port %d" % self.ws_port)

    def boots(self):
        return self.log.read_text(errors="replace").count("vboard: boot")

    def board_log(self):
        return "\n--- board log ---\n" + (self.log.read_text(errors="replace")[-3000:]
                                          if self.log.exists() else "")

    def files(self):
        """Every file on the board's flash with its size and mtime."""
        out = {}
        for dirpath, _, names in os.walk(self.flash):
            for n in names:
                p = os.path.join(dirpath, n)
                st = os.stat(p)
                out[os.path.relpath(p, self.flash)] = (st.st_size, st.st_mtime_ns)
        return out

    def kill_interpreter(self):
        """SIGKILL the MicroPython process (as pulling the power would stop it)."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/cwd" % pid).startswith(str(self.flash)):
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass

    def mpremote(self, *args):
        r = subprocess.run([MPREMOTE, "connect", self.url] + list(args), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + self.board_log()
        return r.stdout

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def echo(port):
    import websockets

    async def talk():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % port) as ws:
            await ws.send("hello, board %d" % port)
            return await ws.recv()

    return asyncio.run(asyncio.wait_for(talk(), 20))


def changed_tree(base, dst, mark, extra=""):
    shutil.copytree(base, dst, ignore=shutil.ignore_patterns("__pycache__", "config.json"))
    echo_py = dst / "app" / "echo.py"
    echo_py.write_text(echo_py.read_text() + "\nOTA_MARK = %r\n%s" % (mark, extra))
    return dst


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    secrets = tmp / "secrets.json"
    secrets.write_text(json.dumps({"ota": {"token": TOKEN, "confirm_ms": 8000,
                                           "update_idle_ms": 15000}}))
    src = tmp / "src"
    shutil.copytree(os.path.join(ROOT, "firmware"), src,
                    ignore=shutil.ignore_patterns("__pycache__", "config.json"))
    boards = []
    try:
        for i in range(3):
            boards.append(VBoard(tmp_path_factory.mktemp("board%d" % i), secrets))
        for b in boards:
            b.usb_deploy(src)
        yield {"tmp": tmp, "secrets": secrets, "src": src, "boards": boards}
    finally:
        for b in boards:
            b.stop()


def net_deploy(fleet, boards, src, *extra):
    urls = " ".join(b.ws_url for b in boards)
    args = ["--secrets", str(fleet["secrets"]), "--source", str(src), "--out",
            str(fleet["tmp"] / "net-build")] + list(extra)
    r = subprocess.run(["make", "-s", "--no-print-directory", "deploy", "BOARD=host",
                        "URL=" + urls, "DEPLOY_ARGS=" + " ".join(args)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r


def rows(out):
    """The deploy's table: {board: (before, after, files, bytes, result)}."""
    table = {}
    for line in out.splitlines():
        m = re.match(r"(127\.0\.0\.1:\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+(.*)$",
                     line)
        if m:
            table[m.group(1)] = (m.group(2), m.group(3), int(m.group(4)), int(m.group(5)),
                                 m.group(6))
    return table


def test_deploy_to_three_boards_then_nothing_to_do(fleet, tmp_path):
    boards = fleet["boards"]
    before = [b.stats()["version"] for b in boards]
    assert len(set(before)) == 1 and before[0] != "unknown"
    src = changed_tree(fleet["src"], tmp_path / "v2", "v2")
    r = net_deploy(fleet, boards, src)
    logs = "".join(b.board_log() for b in boards)
    assert r.returncode == 0, r.stdout + r.stderr + logs
    table = rows(r.stdout)
    new = netdeploy.version_of(netdeploy.manifest(fleet["tmp"] / "net-build"))
    assert new != before[0]
    for b in boards:
        name = "127.0.0.1:%d" % b.ws_port
        assert "[%s]" % name in r.stdout  # its progress lines
        assert table[name][:2] == (before[0], new) and table[name][4] == "updated"
        assert table[name][2] == 1 and table[name][3] > 0  # only app/echo.mpy changed
        st = b.stats()
        assert st["version"] == new and st["update"]["result"] == "ok"
        assert st["board"]["reset_cause"] == "HARD_RESET"
        assert echo(b.ws_port) == "hello, board %d" % b.ws_port  # still on its own port
    # The same command again: nothing sent, no board reset.
    boots = [b.boots() for b in boards]
    r = net_deploy(fleet, boards, src)
    assert r.returncode == 0, r.stdout + r.stderr
    for b, n in zip(boards, boots):
        row = rows(r.stdout)["127.0.0.1:%d" % b.ws_port]
        assert row[2:] == (0, 0, "up to date")
        assert b.boots() == n
    fleet["v2"] = (src, new)


def test_board_killed_mid_upload_boots_old_version_then_completes(fleet, tmp_path):
    import websockets

    b = fleet["boards"][0]
    old = b.stats()["version"]
    src = changed_tree(fleet["src"], tmp_path / "v3", "v3")
    (src / "www" / "big.bin").write_bytes(os.urandom(64 * 1024))  # through a 110 KiB heap
    (src / "www" / "more.bin").write_bytes(os.urandom(48 * 1024))
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build

    out = tmp_path / "build"
    build.build("host", str(out), secrets={"ota": {"token": TOKEN}}, src=str(src))
    entries = {line.split(" ")[2]: line for line in netdeploy.manifest(out)}
    base = "ws://127.0.0.1:%d/ota" % b.ws_port
    ws_answer(base + "?op=update", TOKEN)
    until(lambda: b.stats(timeout=60).get("update_mode"), 60, "update mode")
    a = ws_answer(base + "?op=put", TOKEN, ["put " + entries["www/big.bin"]],
                  (out / "www" / "big.bin").read_bytes())
    assert a == {"t": "ok", "path": "www/big.bin"}

    async def half_a_file():
        # more.bin as a fragmented message: the board is killed after its first piece.
        data = (out / "www" / "more.bin").read_bytes()
        headers = {"Authorization": "Bearer " + TOKEN}
        async with websockets.connect(base + "?op=put", additional_headers=headers) as ws:
            await ws.send("put " + entries["www/more.bin"])

            async def pieces():
                yield data[:16384]
                await asyncio.sleep(0.5)
                b.kill_interpreter()
                await asyncio.sleep(2)
                yield data[16384:]

            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await ws.send(pieces())
                await ws.recv()

    asyncio.run(asyncio.wait_for(half_a_file(), 30))
    # The running tree is untouched: after a reset the board serves the old version.
    b.mpremote("reset")
    assert b.stats()["version"] == old and not b.stats().get("update_mode")
    assert echo(b.ws_port) == "hello, board %d" % b.ws_port
    r = net_deploy(fleet, [b], src)
    assert r.returncode == 0, r.stdout + r.stderr + b.board_log()
    row = rows(r.stdout)["127.0.0.1:%d" % b.ws_port]
    assert row[4] == "updated" and row[1] != old
    # big.bin arrived before the kill and is not sent again; the rest is.
    sizes = {p: int(line.split(" ")[1]) for p, line in entries.items()}
    sent = ["app/echo.mpy", "www/big.bin.gz", "www/more.bin", "www/more.bin.gz"]
    assert row[2:4] == (len(sent), sum(sizes[p] for p in sent))
    tree = (b.flash / ".ota" / "active").read_text().strip()
    assert (b.flash / ".ota" / tree / "www" / "big.bin").read_bytes() == \
        (out / "www" / "big.bin").read_bytes()
    assert b.stats()["version"] == row[1]


def test_start_up_that_raises_is_rolled_back_and_the_canary_stops_the_rest(fleet, tmp_path):
    boards = fleet["boards"]
    versions = [b.stats()["version"] for b in boards]
    boots = [b.boots() for b in boards]
    src = changed_tree(fleet["src"], tmp_path / "broken", "broken",
                       "raise RuntimeError('broken on purpose')\n")
    r = net_deploy(fleet, boards, src, "--canary", "1")
    assert r.returncode != 0, r.stdout
    table = rows(r.stdout)
    first, rest = boards[0], boards[1:]
    result = table["127.0.0.1:%d" % first.ws_port][4]
    assert "rolled back" in result and "broken on purpose" in result, r.stdout
    st = first.stats()
    assert st["version"] == versions[0]
    assert st["update"]["result"] == "rolled back"
    assert "broken on purpose" in st["update"]["why"]
    assert echo(first.ws_port) == "hello, board %d" % first.ws_port
    for b, v, n in zip(rest, versions[1:], boots[1:]):
        assert table["127.0.0.1:%d" % b.ws_port][4].startswith("skipped")
        assert b.stats()["version"] == v and b.boots() == n


def ws_answer(url, token, lines=None, data=None):
    """Open /ota?op=..., send lines (then data), return the board's answer."""
    import websockets

    async def talk():
        headers = {"Authorization": "Bearer " + token} if token else {}
        async with websockets.connect(url, additional_headers=headers) as ws:
            for line in lines or ():
                await ws.send(line)
            if data is not None:
                await ws.send(data)
            return json.loads(await asyncio.wait_for(ws.recv(), 20))

    return asyncio.run(talk())


def test_refusals_write_nothing(fleet):
    import websockets

    b = fleet["boards"][2]
    base = "ws://127.0.0.1:%d/ota" % b.ws_port
    for token in (None, "wrong"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            ws_answer(base + "?op=hello", token)
        assert e.value.response.status_code == 401
    hi = ws_answer(base + "?op=update", TOKEN)
    assert hi["t"] == "hi" and hi["mode"] == "app"
    until(lambda: b.stats(timeout=60).get("update_mode"), 60, "update mode")
    before = b.files()
    sha = "ab" * 32
    arch = hi["arch"]
    boot_sha = "cd" * 32
    refused = {
        "path": ["plan %s v {}" % arch, "%s 10 ../outside.py" % sha, "end"],
        "path:": ["plan %s v {}" % arch, "%s 10 /etc/passwd" % sha, "end"],
        "boot": ["plan %s v {}" % arch, "%s 10 boot.py" % boot_sha, "end"],
        "arch": ["plan 9 v {}", "end"],
        "own": ["plan %s v {}" % arch, "%s 10 config.json" % sha, "end"],
    }
    for tag, lines in refused.items():
        a = ws_answer(base + "?op=plan", TOKEN, lines)
        assert a["t"] == "error" and a["why"].startswith(tag.rstrip(":")), (tag, a)
    a = ws_answer(base + "?op=put", TOKEN, ["put %s %d www/huge.bin" % (sha, 10 ** 12)], b"x")
    assert a["t"] == "error" and a["why"].startswith("room"), a
    a = ws_answer(base + "?op=put", TOKEN, ["put %s 10 ../../evil.py" % sha], b"x" * 10)
    assert a["t"] == "error" and a["why"].startswith("path"), a
    assert b.files() == before
    assert netdeploy.explain("boot: boot.py").startswith("boot.py differs")
    # Update mode ends by itself when no update comes.
    until(lambda: not b.stats(timeout=60).get("update_mode"), 60, "the application back")
    assert echo(b.ws_port) == "hello, board %d" % b.ws_port
