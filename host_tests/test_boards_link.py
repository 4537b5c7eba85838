"""A board on a wall, without the board: the real firmware on tools/virtual_board.py (the
MicroPython unix port) with `--wifi`, a fake `network` whose station link drops and comes
back on a schedule. Only the WLAN objects are fake: the server's sockets are real and the
real `websockets` client talks to it. Covered: link recovery (station, access point and
back), the watchdog (armed by the loop, not by slow boot retries; a blocked loop resets
the board), and the safe sizing when config.json is missing or broken."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
VBOARD = os.path.join(ROOT, "tools", "virtual_board.py")
# Board mode loads the WiFi code (about 5 KB of heap on the unix port, half that on an
# ESP32), and here the fake network module and the machine shim too (about 3 KB, C on a
# board): at 110k /stats then gets 503 out of memory. The board-mode runs get 116k.
HEAP_WIFI = "116k"
WIFI = {"ssid": "home", "password": "secret99", "retries": 3, "connect_timeout_ms": 2000,
        "backoff_ms": 500, "retry_ms": 1000}
# main.py with a /block route whose handler blocks the loop for the ms it is sent.
BLOCK_HOOK = """
def _block_hook(srv, cfg):
    import time

    class Block:
        def on_message(self, conn, data, text):
            time.sleep_ms(int(str(data, "utf-8")))

    srv.route("/block", Block())


launch.after_install = _block_hook
"""
# Port 80 (the default when config.json is unusable) needs root on the test host.
PORT_HOOK = "import ringws.config\nringws.config.DEFAULTS['port'] = %d\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("linkfw") / "fw"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build.py"), "--board", "host",
                    "--out", str(out)], check=True, capture_output=True, timeout=120)
    return out


class Board:
    """The firmware on a virtual board (or the bare unix port), polled through /stats."""

    def __init__(self, built, tmp, cfg=None, wifi="", heap=HEAP_WIFI, hooks="", bare=False,
                 port=None):
        self.flash = tmp / "flash"
        shutil.copytree(built, self.flash)
        self.port = port or free_port()
        self.log = tmp / "board.log"
        conf = self.flash / "config.json"
        if cfg is None:
            conf.unlink()
        elif isinstance(cfg, str):
            conf.write_text(cfg)
        else:
            full = json.loads(conf.read_text())
            full["server"]["port"] = self.port
            full.update(cfg)
            conf.write_text(json.dumps(full))
        main = self.flash / "main.py"
        if hooks:
            main.write_text(main.read_text().replace("import launch\n", "import launch\n" + hooks, 1))
        if bare:   # the unix port itself, no network module: host mode
            self.proc = subprocess.Popen([MICROPYTHON, "-X", "heapsize=" + heap, "main.py"],
                                         cwd=self.flash, stdout=open(self.log, "wb"),
                                         stderr=subprocess.STDOUT)
            return
        args = [sys.executable, VBOARD, "--flash", str(self.flash), "--port", "0", "--log",
                str(self.log), "--heap", heap]
        if wifi is not None:
            args += ["--wifi", wifi]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stats(self):
        url = "http://127.0.0.1:%d/stats" % self.port
        with urllib.request.urlopen(url, timeout=3) as r:
            return json.loads(r.read())

    def until(self, cond, what, timeout=40):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.stats()
                if cond(last):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        pytest.fail("timed out waiting for %s; last /stats board %r\n--- board log ---\n%s"
                    % (what, last and last.get("board"), self.text()[-3000:]))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def boards():
    made = []
    yield made
    for b in made:
        b.stop()


def start(boards, *args, **kw):
    b = Board(*args, **kw)
    boards.append(b)
    return b


async def echo(ws, text):
    await ws.send(text)
    assert await asyncio.wait_for(ws.recv(), 10) == text


@pytest.mark.slow
def test_client_connected_before_a_5s_link_drop_echoes_after_it(built, tmp_path, boards):
    import websockets

    b = start(boards, built, tmp_path, {"wifi": WIFI}, wifi="8000:5000")
    st = b.until(lambda s: s["board"]["wifi"] == "connected", "the station")
    assert st["board"]["mode"] == "station" and st["board"]["reconnects"] == 0

    async def scenario():
        uri = "ws://127.0.0.1:%d/echo" % b.port
        ws = await websockets.connect(uri)
        await echo(ws, "before the drop")
        assert b.stats()["board"]["wifi"] == "connected", "connected only after the drop began"
        # The server keeps serving while the link is down: /stats answers throughout.
        lost = b.until(lambda s: s["board"]["wifi"] == "lost", "the drop")["board"]
        assert lost["drop_reason"] == "beacon_timeout" and lost["mode"] == "station"
        back = b.until(lambda s: s["board"]["reconnects"] == 1, "the reconnect")["board"]
        assert back["wifi"] == "connected" and back["mode"] == "station"
        assert 4000 <= back["down_ms"] <= 12000, back
        try:
            await echo(ws, "after the drop")   # the same connection, if it survived
        except websockets.ConnectionClosed:
            pass
        await ws.close()
        async with websockets.connect(uri) as ws2:   # and a new one
            await echo(ws2, "reconnected")

    asyncio.run(asyncio.wait_for(scenario(), 90))
    log = b.text()
    assert "board: WiFi lost (beacon_timeout), reconnecting" in log
    assert log.count("board: station mode") == 2


@pytest.mark.slow
def test_access_point_board_keeps_retrying_the_station_and_returns(built, tmp_path, boards):
    wifi = dict(WIFI, retries=1, connect_timeout_ms=800, backoff_ms=100)
    b = start(boards, built, tmp_path, {"wifi": wifi}, wifi="0:7000")
    ap = b.until(lambda s: s["board"]["mode"] == "ap", "access-point mode")["board"]
    assert ap["ip"] == "192.168.4.1" and "(2 attempts)" in ap["reason"]
    assert "station 'home': connecting after" in ap["reason"]
    back = b.until(lambda s: s["board"]["mode"] == "station", "station mode again")["board"]
    assert back["wifi"] == "connected" and back["reason"] is None and back["ip"] == "127.0.0.1"
    # Booting into AP mode is not a drop: nothing was lost.
    assert back["reconnects"] == 0 and back["down_ms"] == 0
    log = b.text()
    assert log.index("board: ap mode") < log.index("board: station mode")


@pytest.mark.slow
def test_long_drop_falls_back_to_access_point_then_station(built, tmp_path, boards):
    wifi = dict(WIFI, retries=1, connect_timeout_ms=800, backoff_ms=100)
    b = start(boards, built, tmp_path, {"wifi": wifi}, wifi="6000:7000")
    b.until(lambda s: s["board"]["wifi"] == "connected", "the station")
    ap = b.until(lambda s: s["board"]["mode"] == "ap", "the fallback")["board"]
    assert ap["drop_reason"] == "beacon_timeout" and "(2 attempts)" in ap["reason"]
    assert ap["down_ms"] > 0
    back = b.until(lambda s: s["board"]["mode"] == "station", "station mode again")["board"]
    assert back["reconnects"] == 1 and 6000 <= back["down_ms"] <= 15000, back


@pytest.mark.slow
def test_watchdog_ignores_slow_boot_retries_and_resets_a_blocked_loop(built, tmp_path, boards):
    import websockets

    wifi = dict(WIFI, retries=2, connect_timeout_ms=1000, backoff_ms=100)
    b = start(boards, built, tmp_path, {"wifi": wifi, "watchdog_ms": 1500}, wifi="0:3000",
              hooks=BLOCK_HOOK)
    st = b.until(lambda s: s["board"]["mode"] == "station", "the station")["board"]
    # Boot spent about 3 s on retries (twice watchdog_ms) with nothing feeding: no reset.
    assert st["reset_cause"] == "PWRON_RESET" and st["attempts"] == 3
    st = b.until(lambda s: s["uptime_ms"] > 3000, "3 s of loop")
    assert st["board"]["watchdog_ms"] == 1500 and st["board"]["reset_cause"] == "PWRON_RESET"
    log = b.text()   # armed by the loop's first tick, not before
    assert log.index("ringws: listening on") < log.index("vboard: watchdog armed (1500 ms)")

    async def block(ms):
        async with websockets.connect("ws://127.0.0.1:%d/block" % b.port) as ws:
            await ws.send(str(ms))
            try:
                await asyncio.wait_for(ws.recv(), ms / 1000 + 5)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pass

    asyncio.run(block(500))   # shorter than the watchdog: nothing happens
    assert b.stats()["board"]["reset_cause"] == "PWRON_RESET"
    assert "watchdog reset" not in b.text()
    asyncio.run(block(4000))
    st = b.until(lambda s: s["board"]["reset_cause"] == "WDT_RESET", "the watchdog reset")
    assert st["board"]["mode"] == "station"
    assert b.text().count("vboard: watchdog reset") == 1


@pytest.mark.parametrize("config", [None, "{\"server\": {\"port\": 80,"])
def test_unusable_config_comes_up_with_the_safe_sizing_at_110k(built, tmp_path, boards, config):
    import websockets

    port = free_port()
    b = start(boards, built, tmp_path, config, heap="110k", bare=True, hooks=PORT_HOOK % port,
              port=port)
    st = b.until(lambda s: True, "the server")
    assert st["slots_total"] == 4
    assert "config.json unusable" in st["board"]["reason"]
    assert "safe sizing (4 slots)" in st["board"]["reason"]

    async def talk():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % b.port) as ws:
            await echo(ws, "fits")

    asyncio.run(talk())
    assert "ringws: config.json unusable" in b.text() and "safe sizing" in b.text()


def test_rejected_server_settings_keep_the_port_with_the_safe_sizing(built, tmp_path, boards):
    port = free_port()
    cfg = json.dumps({"server": {"host": "127.0.0.1", "port": port, "max_connections": 40,
                                 "send_ring": 100}})
    b = start(boards, built, tmp_path, cfg, heap="110k", bare=True, port=port)
    st = b.until(lambda s: True, "the server")
    assert st["slots_total"] == 4 and st["board"]["mode"] == "host"
    assert st["board"]["reason"].startswith("server settings rejected (server setting send_ring")
    assert st["board"]["reason"].endswith("safe sizing (4 slots)")


def test_unusable_config_on_a_board_comes_up_in_ap_mode(built, tmp_path, boards):
    import websockets

    port = free_port()
    b = start(boards, built, tmp_path, None, hooks=PORT_HOOK % port, port=port)
    st = b.until(lambda s: True, "the server")
    board = st["board"]
    assert st["slots_total"] == 4 and board["mode"] == "ap" and board["ip"] == "192.168.4.1"
    assert board["reason"].startswith("config: config.json unusable")

    async def talk():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % port) as ws:
            await echo(ws, "in AP mode")

    asyncio.run(talk())
