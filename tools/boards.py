#!/usr/bin/env python3
"""Board files: load, fill defaults, validate. One JSON file per board in boards/.

    tools/boards.py              list every board and check it
    tools/boards.py esp32        print one board, defaults filled in

A bad board file raises BoardError naming the file and the field, e.g.
"boards/esp32.json: server.max_connections: 9 slots + listener + 1 HTTP request
exceed the 10 sockets lwIP allows".
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS = os.path.join(ROOT, "boards")

# Where the stock MicroPython image goes, and which native code the chip runs.
CHIPS = {
    "host": {"flash_offset": None, "arch": ("x64", "x86", "armv6m", "armv7m", "armv7emsp",
                                            "armv7emdp", "xtensa", "xtensawin", "rv32imc")},
    "esp32": {"flash_offset": 0x1000, "arch": ("xtensawin",)},
    "esp32s2": {"flash_offset": 0x1000, "arch": ("xtensawin",)},
    "esp32s3": {"flash_offset": 0x0, "arch": ("xtensawin",)},
    "esp32c3": {"flash_offset": 0x0, "arch": ("rv32imc",)},
    "esp32c6": {"flash_offset": 0x0, "arch": ("rv32imc",)},
}

SERVER_SIZES = ("max_connections", "recv_buf", "send_ring", "max_message")
# Heap the firmware needs besides the slots: code, runtime, app, handshake scratch. Measured
# on the unix port: 8 host-sized slots (boards/host.json) just fit in a 110 KiB heap.
RUNTIME_RESERVE = 96 * 1024
DEFAULT_LWIP_SOCKETS = 10   # ESP-IDF's CONFIG_LWIP_MAX_SOCKETS default
SOCKETS_RESERVED = 2        # the listener, plus one HTTP request beyond the slots

DEFAULTS = {
    "baud": 460800,
    "led_pin": None,
    "led_active_low": False,
    "hostname": "ringws",
    "watchdog_ms": 0,
    "lwip_sockets": DEFAULT_LWIP_SOCKETS,
    # Line numbers in the compiled code (mpy-cross -X no-source-lines when false). Off
    # on the boards with an ESP32's 110 KiB heap: the table costs 1.6 KB of it there, and
    # tracebacks still name the file and function. tools/build.py --source-lines to debug.
    "source_lines": True,
    # retry_ms: how often a board in access-point mode tries the station again (0: never).
    "wifi": {"ssid": "", "password": "", "retries": 3, "connect_timeout_ms": 10000,
             "backoff_ms": 1000, "retry_ms": 60000},
    "ap": {"ssid": "ringws-setup", "password": "ringws-setup", "channel": 6},
}


class BoardError(ValueError):
    pass


def names():
    return sorted(f[:-5] for f in os.listdir(BOARDS) if f.endswith(".json"))


def path_of(name):
    return os.path.join(BOARDS, name + ".json")


def load(name, path=None):
    """The validated board dict, defaults filled in, flash_offset as an int."""
    path = path or path_of(name)
    rel = os.path.relpath(path, ROOT)
    if not os.path.exists(path):
        raise BoardError("%s: no such board file (boards: %s)" % (rel, ", ".join(names())))
    try:
        with open(path) as f:
            raw = json.load(f)
    except ValueError as e:
        raise BoardError("%s: not valid JSON: %s" % (rel, e))
    return validate(raw, rel)


def _merge(defaults, given):
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _int(where, field, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int):
        raise BoardError("%s: %s: expected an integer, got %r" % (where, field, value))
    if value < minimum:
        raise BoardError("%s: %s: must be >= %d, got %d" % (where, field, minimum, value))
    return value


def _str(where, field, value):
    if not isinstance(value, str):
        raise BoardError("%s: %s: expected a string, got %r" % (where, field, value))
    return value


def validate(raw, where="<board>"):
    if not isinstance(raw, dict):
        raise BoardError("%s: expected a JSON object" % where)
    for field in ("name", "chip", "mpy_arch", "heap_bytes", "server"):
        if field not in raw:
            raise BoardError("%s: %s: missing" % (where, field))
    board = _merge(DEFAULTS, raw)
    _str(where, "name", board["name"])
    chip = _str(where, "chip", board["chip"])
    if chip not in CHIPS:
        raise BoardError("%s: chip: unknown chip %r (known: %s)"
                         % (where, chip, ", ".join(sorted(CHIPS))))
    spec = CHIPS[chip]
    arch = _str(where, "mpy_arch", board["mpy_arch"])
    if arch not in spec["arch"]:
        raise BoardError("%s: mpy_arch: %r does not run on %s (use %s)"
                         % (where, arch, chip, " or ".join(spec["arch"])))
    heap = _int(where, "heap_bytes", board["heap_bytes"], 16384)

    if spec["flash_offset"] is not None:
        if "flash_offset" not in raw:
            raise BoardError("%s: flash_offset: missing (%s images go at 0x%x)"
                             % (where, chip, spec["flash_offset"]))
        off = board["flash_offset"]
        if isinstance(off, str):
            try:
                off = int(off, 0)
            except ValueError:
                raise BoardError("%s: flash_offset: not a number: %r" % (where, off))
        off = _int(where, "flash_offset", off)
        if off != spec["flash_offset"]:
            raise BoardError("%s: flash_offset: %s images go at 0x%x, not 0x%x"
                             % (where, chip, spec["flash_offset"], off))
        board["flash_offset"] = off
        _int(where, "baud", board["baud"], 9600)

    led = board["led_pin"]
    if led is not None:
        _int(where, "led_pin", led)
    _int(where, "watchdog_ms", board["watchdog_ms"])
    if 0 < board["watchdog_ms"] < 1000:
        raise BoardError("%s: watchdog_ms: %d ms is too short to boot (0 = off, else >= 1000)"
                         % (where, board["watchdog_ms"]))
    _str(where, "hostname", board["hostname"])
    if not isinstance(board["source_lines"], bool):
        raise BoardError("%s: source_lines: expected true or false, got %r"
                         % (where, board["source_lines"]))
    sockets = _int(where, "lwip_sockets", board["lwip_sockets"], 3)

    server = board["server"]
    if not isinstance(server, dict):
        raise BoardError("%s: server: expected an object" % where)
    for key in SERVER_SIZES:
        if key not in server:
            raise BoardError("%s: server.%s: missing" % (where, key))
        _int(where, "server." + key, server[key], 1)
    if "shared_recv" in server:
        _int(where, "server.shared_recv", server["shared_recv"], 0)
    for key in ("tls_port", "tls_max"):
        if key in server:
            _int(where, "server." + key, server[key], 0)
    slots = server["max_connections"]
    if slots + SOCKETS_RESERVED > sockets:
        raise BoardError("%s: server.max_connections: %d slots + listener + 1 HTTP request "
                         "exceed the %d sockets lwIP allows" % (where, slots, sockets))
    need = slot_bytes(server)
    if need > heap - RUNTIME_RESERVE:
        raise BoardError("%s: server: %d slots x %d bytes = %d bytes, but heap_bytes %d "
                         "leaves %d after the runtime's %d" % (where, slots, need // slots,
                                                               need, heap,
                                                               heap - RUNTIME_RESERVE,
                                                               RUNTIME_RESERVE))

    for section, fields in (("wifi", ("ssid", "password")), ("ap", ("ssid", "password"))):
        if not isinstance(board[section], dict):
            raise BoardError("%s: %s: expected an object" % (where, section))
        for f in fields:
            _str(where, "%s.%s" % (section, f), board[section][f])
    pw = board["ap"]["password"]
    if pw and len(pw) < 8:
        raise BoardError("%s: ap.password: WPA2 needs at least 8 characters (or empty for "
                         "an open access point)" % where)
    for f in ("retries", "connect_timeout_ms", "backoff_ms", "retry_ms"):
        _int(where, "wifi." + f, board["wifi"][f])
    return board


def check_tls(board, server, where=None):
    """With TLS on (a certificate deployed): its listener and its tls_max connections need
    sockets too. Raises BoardError naming what to lower."""
    where = where or board.get("name", "<board>")
    sockets = board["lwip_sockets"]
    tls = server.get("tls_max", 1)
    waiting = server.get("tls_waiting", 2)  # (accepted, before their hello: ringws/tls.py)
    need = server["max_connections"] + SOCKETS_RESERVED + 1 + tls + waiting
    if need > sockets and board["chip"] != "host":  # (the unix port has no lwIP)
        room = sockets - SOCKETS_RESERVED - 1 - tls - waiting
        fix = ("lower server.max_connections to %d (--set max_connections=%d)" % (room, room)
               if room >= 2 else "lower server.tls_max or server.tls_waiting, or raise "
               "lwip_sockets for a firmware built with a larger CONFIG_LWIP_MAX_SOCKETS")
        raise BoardError("%s: server.tls_max: %d slots + listener + TLS listener + %d TLS "
                         "connections + %d waiting need %d sockets, lwIP allows %d: %s"
                         % (where, server["max_connections"], tls, waiting, need, sockets,
                            fix))
    if server.get("tls_port") == server.get("port"):
        raise BoardError("%s: server.tls_port: must differ from server.port" % where)


def slot_bytes(server):
    """Bytes the server preallocates: its slots and the shared receive buffer."""
    per = server["recv_buf"] + server["send_ring"] + server["max_message"]
    return server["max_connections"] * per + server.get("shared_recv", 0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        for name in argv:
            print(json.dumps(load(name), indent=1, sort_keys=True))
        return 0
    bad = 0
    for name in names():
        try:
            b = load(name)
        except BoardError as e:
            print("BAD  %s" % e)
            bad += 1
            continue
        off = "-" if b.get("flash_offset") is None else "0x%x" % b["flash_offset"]
        sv = b["server"]
        print("ok   %-13s %-8s %-9s offset %-6s heap %7d  slots %d x %5d + shared %5d = %6d"
              % (name, b["chip"], b["mpy_arch"], off, b["heap_bytes"], sv["max_connections"],
                 sv["recv_buf"] + sv["send_ring"] + sv["max_message"],
                 sv.get("shared_recv", 0), slot_bytes(sv)))
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BoardError as e:
        sys.exit("error: %s" % e)
