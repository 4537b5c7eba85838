"""firmware/board.py: host mode under CPython and the unix port, board mode under the real
MicroPython interpreter with `network` and `machine` replaced by fault-injecting fakes
(a station that fails, a slow one, a broken config)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

# Fakes for the ESP32's network and machine modules: they record calls, and the station
# fails `FAILS` times (with status STAT) before it connects.
FAKE_NETWORK = """
import time
STA_IF = 0
AP_IF = 1
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_WRONG_PASSWORD = 202
STAT_NO_AP_FOUND = 201
STAT_CONNECT_FAIL = 203
log = []
FAILS = 0
STAT = STAT_NO_AP_FOUND
_host = ['']
def hostname(name=None):
    if name is None:
        return _host[0]
    _host[0] = name
    log.append(('hostname', name))
class WLAN:
    def __init__(self, iface):
        self.iface = iface
        self.up = False
        self.code = STAT_IDLE
    def active(self, on=None):
        if on is not None:
            self.up = bool(on)
            log.append(('active', self.iface, self.up))
        return self.up
    def connect(self, ssid, password):
        global FAILS
        log.append(('connect', ssid, password, time.ticks_ms()))
        if FAILS:
            FAILS -= 1
            self.code = STAT
        else:
            self.code = STAT_GOT_IP
    def disconnect(self):
        log.append(('disconnect',))
        self.code = STAT_IDLE
    def isconnected(self):
        return self.code == STAT_GOT_IP
    def status(self, what=None):
        if what == 'rssi':
            return -61
        return self.code
    def ifconfig(self):
        return ('10.0.0.7' if self.iface == STA_IF else '192.168.4.1', '', '', '')
    def config(self, **kw):
        log.append(('config', self.iface, kw))
"""

FAKE_MACHINE = """
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
log = []
def reset_cause():
    return WDT_RESET
class Pin:
    OUT = 3
    def __init__(self, n, mode):
        log.append(('pin', n, mode))
    def value(self, v=None):
        if v is not None:
            log.append(('led', v))
def reset():
    log.append(('reset',))
class WDT:
    def __init__(self, id=0, timeout=5000):
        log.append(('wdt', timeout))
    def feed(self):
        log.append(('feed',))
"""

RUNNER = """
import json, sys
sys.path.insert(0, %(firmware)r)
import network, machine, board
network.FAILS = %(fails)d
cfg = json.loads(%(cfg)r)
info = board.bring_up(cfg)
poll = info.pop('poll')
info['poll_ms'] = poll[0]
board.feed(); board.feed()
if %(fatal)r:
    board.fatal(ValueError('boom'), pause_ms=30)
out = {'info': info, 'status': board.status(), 'net': network.log, 'machine': machine.log}
print('RESULT ' + json.dumps(out))
"""


def run_board(tmp_path, cfg, fails=0, fatal=False):
    (tmp_path / "network.py").write_text(FAKE_NETWORK)
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    (tmp_path / "run.py").write_text(RUNNER % {"firmware": FIRMWARE, "fails": fails, "fatal": fatal,
                                               "cfg": json.dumps(cfg)})
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=110k", "run.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:]), r.stdout


def wifi_cfg(**over):
    cfg = {"server": {"port": 80}, "hostname": "kitchen", "led_pin": 2, "watchdog_ms": 8000,
           "wifi": {"ssid": "home", "password": "secret99", "retries": 2,
                    "connect_timeout_ms": 60, "backoff_ms": 20},
           "ap": {"ssid": "ringws-kitchen", "password": "setup-pass", "channel": 11}}
    cfg.update(over)
    return cfg


def test_cpython_host_mode_binds_localhost():
    sys.path.insert(0, FIRMWARE)
    try:
        import board
        info = board.bring_up({"server": {"port": 8080}})
        assert info["bind"] == "127.0.0.1" and info["mode"] == "host"
        assert board.led() is None and board.led(True) is None   # no LED on the host
        board.feed()
        assert board.status()["mode"] == "host" and board.status()["watchdog_ms"] == 0
        assert board.bring_up({"server": {"host": "0.0.0.0"}})["bind"] == "0.0.0.0"
        assert board.bring_up(None)["bind"] == "127.0.0.1"
    finally:
        sys.path.remove(FIRMWARE)


def test_unix_port_host_mode(tmp_path):
    code = ("import sys; sys.path.insert(0, %r); import board, json; "
            "i = board.bring_up({'server': {}}); board.feed(); "
            "print(json.dumps([i['bind'], i['mode'], board.status()['wifi'], board.led()]))"
            % FIRMWARE)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=110k", "-c", code], cwd=tmp_path,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["127.0.0.1", "host", "none", None]


def test_station_connects_first_time(tmp_path):
    out, _ = run_board(tmp_path, wifi_cfg())
    info, st = out["info"], out["status"]
    assert info["mode"] == "station" and info["ip"] == "10.0.0.7" and info["bind"] == "0.0.0.0"
    assert info["reason"] is None and st["wifi"] == "connected" and st["rssi"] == -61
    assert st["reset_cause"] == "WDT_RESET"
    assert ["hostname", "kitchen"] in out["net"]
    assert [e for e in out["net"] if e[0] == "connect"][0][1:3] == ["home", "secret99"]
    # watchdog armed by the first feed (not during bring-up), then fed every tick
    m = out["machine"]
    assert ["wdt", 8000] in m and m.count(["feed"]) == 2
    assert m.index(["wdt", 8000]) > m.index(["pin", 2, 3])
    assert ["led", True] in m and st["led"] is True and st["watchdog_ms"] == 8000


def test_station_retries_with_backoff_then_connects(tmp_path):
    out, _ = run_board(tmp_path, wifi_cfg(), fails=2)
    assert out["info"]["mode"] == "station" and out["status"]["attempts"] == 3
    times = [e[3] for e in out["net"] if e[0] == "connect"]
    assert len(times) == 3
    # backoff doubles: 20 ms then 40 ms between attempts (plus polling)
    assert times[1] - times[0] >= 20 and times[2] - times[1] >= 40
    assert out["net"].count(["disconnect"]) == 2


def test_station_failure_falls_back_to_access_point(tmp_path):
    out, printed = run_board(tmp_path, wifi_cfg(), fails=99)
    info = out["info"]
    assert info["mode"] == "ap" and info["ip"] == "192.168.4.1"
    assert "no_ap_found" in info["reason"] and "3 attempts" in info["reason"]
    assert "ap mode" in printed and "no_ap_found" in printed   # says why on the console
    cfgs = [e for e in out["net"] if e[0] == "config"]
    assert cfgs[-1][1] == 1
    assert cfgs[-1][2] == {"ssid": "ringws-kitchen", "key": "setup-pass", "security": 3,
                           "channel": 11}
    # the station is switched off before the AP comes up
    assert ["active", 0, False] in out["net"]
    assert out["net"].index(["active", 0, False]) < out["net"].index(["active", 1, True])
    assert out["status"]["wifi"] == "access point"


@pytest.mark.parametrize("cfg, why", [
    ({}, "no WiFi configured"),
    ({"config_error": "config.json: syntax error in JSON"}, "config: config.json: syntax"),
    ({"wifi": "garbage", "ap": 7, "server": [], "led_pin": "x", "watchdog_ms": "y"},
     "no WiFi configured"),
])
def test_missing_or_broken_config_still_comes_up_as_ap(tmp_path, cfg, why):
    out, _ = run_board(tmp_path, cfg)
    info = out["info"]
    assert info["mode"] == "ap" and why in info["reason"]
    cfgs = [e for e in out["net"] if e[0] == "config"]
    assert cfgs[-1][2]["ssid"] == "ringws-setup" and cfgs[-1][2]["key"] == "ringws-setup"
    assert not [e for e in out["net"] if e[0] == "connect"]
    assert ["wdt", 8000] not in out["machine"]


def test_short_ap_password_never_opens_the_network(tmp_path):
    out, _ = run_board(tmp_path, wifi_cfg(wifi={"ssid": ""}, ap={"ssid": "x", "password": "123"}))
    cfgs = [e for e in out["net"] if e[0] == "config"]
    assert cfgs[-1][2]["key"] == "ringws-setup" and cfgs[-1][2]["security"] == 3


def test_led_blinks_in_ap_mode(tmp_path):
    out, _ = run_board(tmp_path, wifi_cfg(wifi={"ssid": ""}))
    leds = [e[1] for e in out["machine"] if e[0] == "led"]
    assert leds[-2:] in ([True, False], [False, True])   # two feeds, two toggles


def test_fatal_reports_then_resets_the_board(tmp_path):
    out, printed = run_board(tmp_path, wifi_cfg(), fatal=True)
    assert "board: fatal ValueError('boom'" in printed
    assert out["machine"][-1] == ["reset"]
    assert out["machine"].count(["feed"]) > 2      # the watchdog is fed while it waits
