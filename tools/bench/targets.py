"""The targets (ringws in two sizings, three peers) and the processes that run them.

Every target runs under the same .venv/bin/micropython with the same -X heapsize and
exposes the bench control port (servers/ctl.py) next to its WebSocket (or TCP) port.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import peers

sys.path.insert(0, os.path.dirname(peers.HERE))
import fwrun  # noqa: E402  (tools/fwrun.py)
from fwrun import free_port  # noqa: E402

ROOT = peers.ROOT
RUN_ROOT = os.path.join(ROOT, "build", "bench")


class Target:
    name = "?"
    path = "/echo"
    raw = False        # raw TCP: no handshake, no framing
    script = None

    def __init__(self):
        self.run_dir = os.path.join(RUN_ROOT, self.name)
        self.note = ""

    def prepare(self, max_connections=None):
        """Build the run folder. Returns None, or a reason the target cannot run."""
        raise NotImplementedError

    def argv(self, port, ctl_port, max_connections=None):
        """The script's arguments (it runs as `micropython -m <script>`)."""
        return [str(port), str(ctl_port)]


class Raw(Target):
    name = "raw-tcp"
    raw = True
    path = None
    script = "raw_echo.py"

    def prepare(self, max_connections=None):
        if os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir)
        peers.add_bench_modules(self.run_dir, self.script)
        self.note = "asyncio Stream readinto/write, TCP_NODELAY"


class Microdot(Target):
    name = "microdot"
    script = "microdot_echo.py"

    def prepare(self, max_connections=None):
        peers.prepare_peer("microdot", self.run_dir)
        peers.add_bench_modules(self.run_dir, self.script)
        self.note = "microdot 2.7.0, defaults"


class Chumicro(Target):
    name = "chumicro"
    script = "chumicro_echo.py"

    def prepare(self, max_connections=None):
        peers.prepare_peer("chumicro", self.run_dir)
        peers.add_bench_modules(self.run_dir, self.script)
        self.note = "chumicro-websockets 0.27.3, defaults but max_connections"

    def argv(self, port, ctl_port, max_connections=None):
        return [str(port), str(ctl_port), str(max_connections or 16)]


class Ringws(Target):
    name = "ringws"
    script = "ringws_bench_main.py"
    shared_recv = 0  # 0: the host board file's own (the ESP32's sizing, 2.5 KiB)

    def prepare(self, max_connections=None):
        if not os.path.exists(os.path.join(ROOT, "firmware", "main.py")):
            return "firmware/main.py does not exist yet"
        cmd = [sys.executable, os.path.join(ROOT, "tools", "build.py"), "--board", "host",
               "--out", self.run_dir, "--port", "0"]
        if max_connections:
            cmd += ["--set", "max_connections=%d" % max_connections]
        if self.shared_recv:
            cmd += ["--set", "shared_recv=%d" % self.shared_recv]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            return "build failed: " + (p.stdout + p.stderr).strip().splitlines()[-1]
        peers.add_bench_modules(self.run_dir, self.script)
        self.note = "tools/build.py --board host" + (
            " max_connections=%d" % max_connections if max_connections else "") + (
            " shared_recv=%d" % self.shared_recv if self.shared_recv else "")

    def argv(self, port, ctl_port, max_connections=None):
        # The port goes into the build's config.json from here, not from inside the
        # MicroPython process: rewriting it there (json.load + json.dump) left about 2 KB
        # of the 110 KiB heap taken for good, measured before the server started.
        cfg_path = os.path.join(self.run_dir, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["server"]["port"] = port
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        return [str(ctl_port)]


class RingwsShared(Ringws):
    """The same build plus one 4 KiB receive buffer shared by all connections, as the S3
    and C6 board files set: many frames per read, and 1 KiB frames relayed whole."""
    name = "ringws-shared"
    shared_recv = 4096


class RingwsAsync(Ringws):
    """The same build with the async echo (ringws.aio, servers/aecho.py) as its app, on
    /aecho: the cost of a task per connection beside the callback echo. Throughput and
    memory rows only (no capacity search)."""
    name = "ringws-async"
    path = "/aecho"
    capacity = False

    def prepare(self, max_connections=None):
        why = Ringws.prepare(self, max_connections)
        if why:
            return why
        peers.mpy_cross(os.path.join(peers.SERVERS, "aecho.py"),
                        os.path.join(self.run_dir, "aecho.mpy"))
        cfg_path = os.path.join(self.run_dir, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["app"] = {"module": "aecho"}
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self.note += ", app aecho (async echo on /aecho)"


class RingwsDeflate(Ringws):
    """The host build with permessage-deflate on (one inflater, 4 slots: with 5 the bench's
    server script leaves it out of heap): the client sends JSON-like text compressed
    (RSV1, window 9), the echo answers uncompressed."""
    name = "ringws-deflate"
    deflate = True

    def prepare(self, max_connections=None):
        self.shared_recv = 0
        why = Ringws.prepare(self, min(max_connections or 4, 4))
        if why:
            return why
        cfg_path = os.path.join(self.run_dir, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["server"]["inflaters"] = 1
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self.note += " inflaters=1"


ALL = [Ringws, RingwsShared, RingwsAsync, RingwsDeflate, Microdot, Chumicro, Raw]


class Server(fwrun.MicroPython):
    """One running target process (tools/fwrun.py): start, pause (SIGSTOP), resume, stop."""

    def __init__(self, target, heap, max_connections=None, tag="", ctl=True):
        # ctl=False: no control port (port 0 to the script), for the capacity rows: the
        # port's own code and buffers would otherwise take heap from the clients.
        self.target = target
        self.port = free_port()
        self.ctl_port = free_port() if ctl else 0
        log_path = os.path.join(target.run_dir, "server%s-%s.log" % (tag, heap))
        if os.path.exists(log_path):
            os.remove(log_path)
        argv = target.argv(self.port, self.ctl_port, max_connections)
        # -m: the script loads as bytecode (peers.add_bench_modules compiles it), so no
        # target pays for compiling its own entry script in the heap under test.
        fwrun.MicroPython.__init__(self, target.run_dir, ["-m", target.script[:-3]] + argv,
                                   heap, log_path)
        try:
            self.start(ports=[p for p in (self.ctl_port, self.port) if p], timeout=15)
            self.ok = True
        except RuntimeError:
            self.ok = False

    def stop(self, grace=3.0):
        # SIGTERM: the peers have no Ctrl-C handling to wait for.
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
