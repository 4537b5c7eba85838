"""tools/flash.py against esp32-mock-bootloader over socket://: real esptool erases,
writes at the board's offset and verifies; the flash is read back to check where the
bytes landed."""
import os
import random
import re
import struct
import subprocess
import sys
import time

import pytest

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
FLASH = [sys.executable, os.path.join(ROOT, "tools", "flash.py")]
CHIP_ID = {"esp32": 0, "esp32c3": 5}


def fake_image(chip, size, seed):
    """An ESP app image header (magic 0xE9, chip id in the extended header) plus noise."""
    rnd = random.Random(seed)
    header = bytes([0xE9, 1, 2, 0x20]) + struct.pack("<I", 0x40080000)
    ext = bytearray(16)
    struct.pack_into("<H", ext, 4, CHIP_ID[chip])
    body = bytes(rnd.getrandbits(8) for _ in range(size - 24))
    return header + bytes(ext) + body


@pytest.fixture(params=["esp32", "esp32c3"])
def mock(request, tmp_path):
    chip = request.param
    port = free_port()
    log = open(tmp_path / "mock.log", "w+")
    proc = subprocess.Popen([os.path.join(BIN, "esp32-mock-bootloader"), "run", "--chip", chip,
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 15
    while True:
        log.seek(0)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read())
        if m:
            break
        assert proc.poll() is None and time.time() < deadline, "mock bootloader did not start"
        time.sleep(0.05)
    yield chip, "socket://127.0.0.1:%s" % m.group(1)
    proc.terminate()
    proc.wait(10)
    log.close()


def flash_holds(chip, url, offset, data, tmp):
    """True when the flash at `offset` holds exactly `data` (esptool verify-flash, MD5 on
    the chip side; read-flash of the mock is not reliable under load)."""
    blob = tmp / ("expect-%x-%d.bin" % (offset, len(data)))
    blob.write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "esptool", "--chip", chip, "--port", url,
                        "verify-flash", hex(offset), str(blob)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and "Verification successful" in r.stdout


@pytest.mark.slow
def test_flash_erases_writes_at_offset_and_verifies(mock, tmp_path):
    chip, url = mock
    board = {"esp32": "esp32", "esp32c3": "esp32c3"}[chip]
    offset = {"esp32": 0x1000, "esp32c3": 0x0}[chip]
    image = tmp_path / "fw.bin"
    image.write_bytes(fake_image(chip, 40000, 1))
    # something to erase: stale bytes just past where the image will end
    stale = tmp_path / "stale.bin"
    stale.write_bytes(fake_image(chip, 8192, 2))
    subprocess.run([sys.executable, "-m", "esptool", "--chip", chip, "--port", url,
                    "write-flash", hex(offset + 0x10000), str(stale)],
                   check=True, capture_output=True, timeout=60)

    r = subprocess.run(FLASH + ["--board", board, "--port", url, "--firmware", str(image)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "[1/3] erase flash" in out and "[3/3] verify" in out
    assert re.search(r"Writing at 0x[0-9a-f]{8} .*100\.0%", out)   # esptool's progress
    assert "Wrote %d bytes at 0x%08x" % (len(image.read_bytes()), offset) in out
    assert "Hash of data verified" in out and "Verification successful" in out

    img = image.read_bytes()
    assert flash_holds(chip, url, offset, img, tmp_path)
    assert not flash_holds(chip, url, offset + 0x1000, img, tmp_path)   # control
    if offset:
        assert flash_holds(chip, url, 0, b"\xff" * offset, tmp_path)   # nothing before it
    assert flash_holds(chip, url, offset + 0x10000, b"\xff" * 8192, tmp_path)  # erased


@pytest.mark.slow
def test_verify_catches_a_different_image(mock, tmp_path):
    chip, url = mock
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(fake_image(chip, 20000, 3))
    b.write_bytes(fake_image(chip, 20000, 4))
    ok = subprocess.run(FLASH + ["--board", chip, "--port", url, "--firmware", str(a),
                                 "--no-erase"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(FLASH + ["--board", chip, "--port", url, "--firmware", str(b),
                                  "--verify-only"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "verify" in bad.stderr and "failed" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--port", ""], "PORT is required"),
    (["--port", "8080"], "looks like a TCP port number"),
    (["--port", "socket://127.0.0.1:1", "--firmware", "/nonexistent.bin"], "not found"),
    (["--port", "socket://127.0.0.1:1", "--firmware", "{text}"], "ESP image header"),
    (["--port", "socket://127.0.0.1:1", "--board", "host"], "host simulator"),
])
def test_refuses_bad_arguments_before_touching_the_board(args, message, tmp_path):
    text = tmp_path / "firmware.uf2"
    text.write_text("UF2 is not an ESP image")
    image = tmp_path / "fw.bin"
    image.write_bytes(fake_image("esp32", 1000, 6))
    base = ["--board", "esp32", "--firmware", str(image)]
    args = [a.replace("{text}", str(text)) for a in args]
    r = subprocess.run(FLASH + base + args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr
    assert "Connecting" not in r.stdout


def test_dry_run_shows_offset_per_chip(tmp_path):
    image = tmp_path / "fw.bin"
    image.write_bytes(fake_image("esp32", 1000, 5))
    for board, off in (("esp32", "0x1000"), ("esp32s2", "0x1000"), ("esp32s3", "0x0"),
                       ("esp32c6", "0x0")):
        r = subprocess.run(FLASH + ["--board", board, "--port", "/dev/ttyUSB0", "--firmware",
                                    str(image), "--dry-run"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "write-flash %s %s" % (off, image) in r.stdout
        assert "--chip %s" % board in r.stdout
