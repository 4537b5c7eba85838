#!/usr/bin/env python3
"""Write stock MicroPython to a board: erase, write at the board's offset, verify.

    tools/flash.py --board esp32 --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.0.bin
    make flash BOARD=esp32c3 PORT=/dev/ttyACM0 FIRMWARE=ESP32_GENERIC_C3-v1.29.0.bin

PORT is a serial device or any pyserial URL (socket://127.0.0.1:9876 is how the tests
reach esp32-mock-bootloader). The offset, chip and baud rate come from boards/<BOARD>.json
(ESP32 and ESP32-S2 images go at 0x1000, S3/C3/C6 at 0x0). esptool's own progress output
is shown as it runs.
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boards  # noqa: E402

ESP_IMAGE_MAGIC = 0xE9


class FlashError(Exception):
    pass


def esptool(board, port, baud, *args):
    return [sys.executable, "-m", "esptool", "--chip", board["chip"], "--port", port,
            "--baud", str(baud)] + list(args)


def check_port(port):
    if not port:
        raise FlashError("PORT is required: the board's serial port, e.g. "
                         "make flash BOARD=esp32 PORT=/dev/ttyUSB0 FIRMWARE=firmware.bin")
    if port.isdigit():
        # The Makefile's PORT=8080 default is the simulator's TCP port, not a board.
        raise FlashError("PORT=%s looks like a TCP port number; flash needs a serial port "
                         "(/dev/ttyUSB0, COM3) or a pyserial URL (socket://host:port)" % port)


def check_image(path, board):
    if not path:
        raise FlashError("FIRMWARE is required: the MicroPython .bin for %s (%s)"
                         % (board["chip"], board.get("firmware", "from micropython.org")))
    if not os.path.isfile(path):
        raise FlashError("firmware image not found: %s" % path)
    size = os.path.getsize(path)
    if size == 0:
        raise FlashError("firmware image is empty: %s" % path)
    with open(path, "rb") as f:
        first = f.read(1)
    if first[0] != ESP_IMAGE_MAGIC:
        raise FlashError("%s does not start with an ESP image header (0xE9): is it the .bin "
                         "for %s, not a .uf2/.hex/.elf?" % (path, board["chip"]))
    return size


def plan(board, port, image, baud, erase=True, verify_only=False):
    """The esptool command lines, in order, with a title each."""
    off = "0x%x" % board["flash_offset"]
    steps = []
    if not verify_only:
        if erase:
            steps.append(("erase flash", esptool(board, port, baud, "erase-flash")))
        steps.append(("write %s at %s" % (os.path.basename(image), off),
                      esptool(board, port, baud, "write-flash", off, image)))
    steps.append(("verify %s at %s" % (os.path.basename(image), off),
                  esptool(board, port, baud, "verify-flash", off, image)))
    return steps


def run(steps, out=sys.stdout):
    for i, (title, cmd) in enumerate(steps, 1):
        print("[%d/%d] %s" % (i, len(steps), title), file=out, flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise FlashError("step %d/%d (%s) failed: esptool exited with %d"
                             % (i, len(steps), title, r.returncode))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, help="a name from boards/, e.g. esp32")
    ap.add_argument("--port", default="", help="serial port or pyserial URL (required)")
    ap.add_argument("--firmware", default="", help="MicroPython .bin for the board")
    ap.add_argument("--baud", type=int, help="override the board's baud rate")
    ap.add_argument("--no-erase", action="store_true", help="skip the full chip erase")
    ap.add_argument("--verify-only", action="store_true", help="only compare flash to FIRMWARE")
    ap.add_argument("--dry-run", action="store_true", help="print the esptool commands")
    args = ap.parse_args(argv)
    try:
        board = boards.load(args.board)
        if board["chip"] == "host":
            raise FlashError("board %r is the host simulator: nothing to flash "
                             "(use make sim or make sim-board)" % args.board)
        check_port(args.port)
        size = check_image(args.firmware, board)
        steps = plan(board, args.port, args.firmware, args.baud or board["baud"],
                     erase=not args.no_erase, verify_only=args.verify_only)
        print("%s: %s, %d bytes at 0x%x via %s" % (args.board, board["name"], size,
                                                  board["flash_offset"], args.port))
        if args.dry_run:
            for title, cmd in steps:
                print("  %-40s %s" % (title, " ".join(cmd)))
            return 0
        run(steps)
    except (boards.BoardError, FlashError) as e:
        print("flash: error: %s" % e, file=sys.stderr)
        return 2
    print("flashed and verified. Next: make deploy BOARD=%s PORT=%s" % (args.board, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
