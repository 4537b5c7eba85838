#!/usr/bin/env python3
"""Compile firmware/ for a board and upload what changed since the last deploy.

    tools/deploy.py --board esp32 --port /dev/ttyUSB0 [--dry-run] [--no-reset]
    make deploy BOARD=esp32 PORT=/dev/ttyUSB0 [DEPLOY_ARGS=--dry-run]
    tools/deploy.py --board esp32 --url "ws://a/ ws://b/" [--canary 1] [--dry-run]
    make deploy BOARD=esp32 URL=ws://ringws.local/ [DEPLOY_ARGS=--secrets F]

Over WiFi (--url, one URL or several separated by spaces): the board must run a build
with ota.token set (secrets.json: {"ota": {"token": ...}}); the same token authorises the
deploy. Each board keeps its own config.json (only the server keys of --set change; an app
file, --set app=examples/x.py, goes with the build), gets only the files it lacks,
switches trees and confirms or rolls back (firmware/ota.py, tools/netdeploy.py). A table
per board follows; the exit status is 1 if any failed.

1. tools/build.py compiles firmware/ to .mpy with mpy-cross -march=<board's mpy_arch>
   (viper code becomes native code for that arch) and writes config.json from the board
   file plus secrets.json (git-ignored; copy secrets.example.json).
2. The board keeps a hash manifest (.ringws-deploy.json): sha256 of every file the last
   deploy wrote. Files whose hash differs (or that are missing on the board) are uploaded,
   files the last deploy wrote that no longer exist are removed; nothing else is touched.
3. The board is reset so main.py starts the new code.

Over USB everything goes through the real mpremote, into the flash root (the tree
boot.py runs when no update over WiFi is active; a USB deploy makes it the active one
again and writes its version to .ringws-version). Paths on the board are relative to its working
directory ("/" on an ESP32, the flash folder on tools/virtual_board.py).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boards  # noqa: E402
import build  # noqa: E402
import netdeploy  # noqa: E402

ROOT = build.ROOT
MANIFEST = ".ringws-deploy.json"
MARK = "RINGWS-MANIFEST "

# Prefix of what runs on the board: boot.py may have entered a tree under .ota/ (an
# update over WiFi); a USB deploy works in the flash root.
TO_ROOT = """
import os
_c = os.getcwd()
if "/.ota/" in _c:
    os.chdir(_c[:_c.find("/.ota/")] or "/")
"""

# Runs on the board: print the manifest, minus entries whose file has gone.
READ_MANIFEST = TO_ROOT + """
import json
try:
    with open(%(m)r) as f:
        m = json.load(f)
except (OSError, ValueError):
    m = {}
ok = {}
for k in m:
    try:
        os.stat(k)
        ok[k] = m[k]
    except OSError:
        pass
print(%(mark)r + json.dumps(ok))
"""

# Runs on the board before uploading: forget the manifest (an interrupted deploy then
# uploads everything next time), make directories, remove files the new build dropped,
# and remove the pointers to trees installed over WiFi: the root tree boots next.
PREPARE = TO_ROOT + """
for p in (%(m)r, ".ota/active", ".ota/active.tmp", ".ota/try", ".ota/trying"):
    try:
        os.remove(p)
    except OSError:
        pass
for d in %(dirs)r:
    try:
        os.mkdir(d)
    except OSError:
        pass
for p in %(remove)r:
    try:
        os.remove(p)
    except OSError:
        pass
"""

WRITE_MANIFEST = """
with open(%(m)r, "w") as f:
    f.write(%(data)r)
with open(".ringws-version", "w") as f:
    f.write(%(version)r)
"""


class DeployError(Exception):
    pass


def mpremote():
    exe = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "mpremote"]


def local_manifest(out):
    files = {}
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, out).replace(os.sep, "/")
            with open(full, "rb") as f:
                files[rel] = hashlib.sha256(f.read()).hexdigest()
    return files


def read_board_manifest(port, timeout=60):
    code = READ_MANIFEST % {"m": MANIFEST, "mark": MARK}
    r = subprocess.run(mpremote() + ["connect", port, "exec", code], capture_output=True,
                       text=True, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise DeployError("could not read the board's manifest over %s (mpremote exit %d): %s"
                      % (port, r.returncode, (r.stderr or r.stdout).strip()[-400:]))


def make_plan(local, remote):
    upload = [p for p in sorted(local) if remote.get(p) != local[p]]
    remove = [p for p in sorted(remote) if p not in local]
    keep = [p for p in sorted(local) if remote.get(p) == local[p]]
    return upload, remove, keep


def parents(paths):
    dirs = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def print_plan(upload, remove, keep, remote, out):
    for p in upload:
        size = os.path.getsize(os.path.join(out, p))
        print("  upload  %-32s %7d bytes  (%s)" % (p, size, "changed" if p in remote else "new"))
    for p in remove:
        print("  remove  %s" % p)
    print("  %d to upload, %d to remove, %d unchanged" % (len(upload), len(remove), len(keep)))


def upload(port, out, upload, remove, local, reset):
    cmd = mpremote() + ["connect", port, "exec",
                        PREPARE % {"m": MANIFEST, "dirs": parents(upload), "remove": remove}]
    for p in upload:
        cmd += ["+", "fs", "cp", os.path.join(out, p), ":" + p]
    data = json.dumps(local, sort_keys=True)
    version = netdeploy.version_of(netdeploy.manifest(out)) + "\n"
    cmd += ["+", "exec", WRITE_MANIFEST % {"m": MANIFEST, "data": data, "version": version}]
    if reset:
        cmd += ["+", "reset"]
    sizes = {os.path.join(out, p): (p, os.path.getsize(os.path.join(out, p))) for p in upload}
    done = 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-20:]
        if line.startswith("cp "):
            src = line[3:].rsplit(" :", 1)[0]
            rel, size = sizes.get(src, (src, 0))
            done += 1
            print("  [%d/%d] %-32s %7d bytes" % (done, len(upload), rel, size), flush=True)
        elif line.strip():
            print("  | " + line, flush=True)
    if proc.wait() != 0:
        raise DeployError("mpremote failed (exit %d): %s" % (proc.returncode, "\n".join(tail)))
    return done


def load_secrets(path, explicit):
    if not os.path.exists(path):
        if explicit:
            raise DeployError("secrets file not found: %s" % path)
        return {}
    try:
        with open(path) as f:
            secrets = json.load(f)
    except ValueError as e:
        raise DeployError("%s: not valid JSON: %s" % (path, e))
    if not isinstance(secrets, dict):
        raise DeployError("%s: expected an object like secrets.example.json" % path)
    return secrets


def parse_sets(items):
    overrides = {}
    for item in items:
        try:
            key, value = build.parse_set(item)
            overrides[key] = value
        except ValueError:
            raise DeployError("--set %s: value must be JSON" % item)
    return overrides


def network(args):
    """make deploy URL=...: the same build, sent over WiFi to one board or many."""
    secrets = load_secrets(args.secrets or os.path.join(ROOT, "secrets.json"),
                           bool(args.secrets))
    token = (secrets.get("ota") or {}).get("token") if isinstance(secrets.get("ota"), dict) else None
    if not token:
        raise DeployError("no ota.token in %s: a deploy over WiFi needs the token the boards "
                          "were built with" % (args.secrets or "secrets.json"))
    overrides = parse_sets(args.set)
    # An app file (APP=examples/x.py) goes into the build, as over USB; the board's
    # config.json, which names the app module, stays as it is.
    app = overrides.pop("app", None)
    top = [k for k in overrides if k in build.TOP_LEVEL]
    if top or (app is not None and not str(app).endswith(".py")):
        raise DeployError("over WiFi --set changes server settings only (not %s): the board "
                          "keeps the rest of its config.json (APP=file.py: that file goes "
                          "with the build)" % ", ".join(top or ["app"]))
    board = boards.load(args.board)
    out = args.out or os.path.join(ROOT, "build", "deploy-" + args.board)
    print("build: %s for %s (mpy-cross -march=%s)" % (os.path.relpath(out, ROOT),
                                                     args.board, board["mpy_arch"]))
    build.build(args.board, out, overrides={"app": app} if app else None, secrets=secrets,
                src=args.source)
    urls = args.url.split()
    return netdeploy.run(urls, token, out, board["mpy_arch"], overrides,
                         dry_run=args.dry_run, canary=max(0, args.canary))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--port", default="", help="serial port or socket:// URL (required)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    ap.add_argument("--no-reset", action="store_true", help="do not reset after uploading")
    ap.add_argument("--secrets", help="WiFi credentials (default: secrets.json if present)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a server setting in config.json, e.g. --set port=8081, "
                         "or the app module: --set app=hello")
    ap.add_argument("--source", help="firmware tree to deploy (default: firmware/)")
    ap.add_argument("--out", help="build folder (default: build/deploy-<board>)")
    ap.add_argument("--certs", help="folder with <board>.pem and <board>-key.pem (make cert): "
                    "turns on wss/https (make deploy passes certs/)")
    ap.add_argument("--url", default="", help="deploy over WiFi: ws://board/ (several: "
                    "separated by spaces); the token is secrets.json's ota.token")
    ap.add_argument("--canary", type=int, default=0, metavar="N",
                    help="over WiFi: update N boards first, the rest once they confirm")
    args = ap.parse_args(argv)
    try:
        if args.url.strip():
            return network(args)
        if not args.port or args.port.isdigit():
            raise DeployError("PORT is required: the board's serial port or a socket:// URL, "
                              "e.g. make deploy BOARD=esp32 PORT=/dev/ttyUSB0")
        secrets = load_secrets(args.secrets or os.path.join(ROOT, "secrets.json"),
                               bool(args.secrets))
        overrides = parse_sets(args.set)
        board = boards.load(args.board)
        out = args.out or os.path.join(ROOT, "build", "deploy-" + args.board)
        print("build: %s for %s (mpy-cross -march=%s)" % (os.path.relpath(out, ROOT),
                                                         args.board, board["mpy_arch"]))
        # <certs>/<board>.pem (make cert) turns on wss/https: tools/build.py add_tls
        build.build(args.board, out, overrides=overrides, secrets=secrets, src=args.source,
                    certs=args.certs)
        local = local_manifest(out)
        try:
            remote = read_board_manifest(args.port)
        except (DeployError, subprocess.TimeoutExpired) as e:
            if not args.dry_run:
                raise
            print("board not reachable (%s); the plan assumes an empty board" % e)
            remote = {}
        todo, remove, keep = make_plan(local, remote)
        print("plan for %s:" % args.port)
        print_plan(todo, remove, keep, remote, out)
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        if not todo and not remove:
            print("board is up to date")
            if args.no_reset:
                return 0
        n = upload(args.port, out, todo, remove, local, reset=not args.no_reset)
        print("deployed: %d uploaded, %d removed, %d unchanged%s"
              % (n, len(remove), len(keep), "" if args.no_reset else "; board reset"))
    except (boards.BoardError, DeployError, subprocess.TimeoutExpired) as e:
        print("deploy: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
