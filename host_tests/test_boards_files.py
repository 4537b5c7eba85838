"""Board files: every shipped board validates, and a broken one names the bad field."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import boards  # noqa: E402

REQUIRED = {"esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6", "esp32-spiram", "host"}
OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0, "esp32c3": 0, "esp32c6": 0}
ARCH = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin",
        "esp32c3": "rv32imc", "esp32c6": "rv32imc"}


def test_required_boards_exist():
    assert REQUIRED <= set(boards.names())


@pytest.mark.parametrize("name", sorted(REQUIRED - {"host"}))
def test_board_facts(name):
    b = boards.load(name)
    assert b["flash_offset"] == OFFSETS[b["chip"]]
    assert b["mpy_arch"] == ARCH[b["chip"]]
    s = b["server"]
    # listener + one HTTP request + the slots fit lwIP's default of 10 sockets
    assert s["max_connections"] + 2 <= 10
    assert boards.slot_bytes(s) <= b["heap_bytes"] - boards.RUNTIME_RESERVE
    for key in ("ssid", "password"):
        assert key in b["ap"] and key in b["wifi"]


def test_plain_esp32_keeps_the_host_sizing():
    # The host simulation is the plain ESP32's budget: both must move together.
    host, esp = boards.load("host")["server"], boards.load("esp32")["server"]
    for key in boards.SERVER_SIZES + ("shared_recv", "inflaters"):
        assert host[key] == esp[key], key


def test_spiram_board_affords_more_than_plain():
    plain, big = boards.load("esp32"), boards.load("esp32-spiram")
    assert big["heap_bytes"] > 10 * plain["heap_bytes"]
    assert boards.slot_bytes(big["server"]) > boards.slot_bytes(plain["server"])


def _good():
    with open(boards.path_of("esp32")) as f:
        return json.load(f)


def _broken(mutate):
    raw = _good()
    mutate(raw)
    return raw


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b.pop("chip"), "chip: missing"),
    (lambda b: b.update(chip="esp8266"), "chip: unknown"),
    (lambda b: b.update(flash_offset="0x0"), "flash_offset: esp32 images go at 0x1000"),
    (lambda b: b.pop("flash_offset"), "flash_offset: missing"),
    (lambda b: b.update(flash_offset="zero"), "flash_offset: not a number"),
    (lambda b: b.update(mpy_arch="rv32imc"), "mpy_arch: 'rv32imc' does not run on esp32"),
    (lambda b: b.update(heap_bytes="110k"), "heap_bytes: expected an integer"),
    (lambda b: b.update(led_pin="two"), "led_pin: expected an integer"),
    (lambda b: b["server"].pop("send_ring"), "server.send_ring: missing"),
    (lambda b: b["server"].update(max_connections=9), "server.max_connections: 9 slots"),
    (lambda b: b["server"].update(recv_buf=16384), "leaves 14336 after the runtime"),
    (lambda b: b["ap"].update(password="short"), "ap.password: WPA2"),
    (lambda b: b.update(watchdog_ms=10), "watchdog_ms"),
    (lambda b: b["wifi"].update(retries=-1), "wifi.retries: must be >= 0"),
    (lambda b: b.update(source_lines="no"), "source_lines: expected true or false"),
])
def test_invalid_board_names_the_field(mutate, field):
    with pytest.raises(boards.BoardError) as e:
        boards.validate(_broken(mutate), "boards/x.json")
    assert str(e.value).startswith("boards/x.json: ")
    assert field in str(e.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(boards.BoardError, match="no such board file.*esp32"):
        boards.load("nope", str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{ chip: esp32 }")
    with pytest.raises(boards.BoardError, match="not valid JSON"):
        boards.load("bad", str(bad))


def test_build_tool_rejects_a_bad_board_with_the_field(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build.py"),
                        "--board", "no-such-board", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "no such board file" in r.stderr


def test_config_merges_secrets_without_losing_defaults():
    import build
    cfg = build.make_config(boards.load("esp32"), {"port": 8081},
                            {"wifi": {"ssid": "home", "password": "pw123456"}})
    assert cfg["wifi"]["ssid"] == "home" and cfg["wifi"]["retries"] == 3
    assert cfg["server"]["port"] == 8081 and cfg["board"] == "esp32"
    assert cfg["ap"]["ssid"] == "ringws-setup"
