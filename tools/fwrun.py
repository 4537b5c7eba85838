"""Run the firmware (or any MicroPython program) under the unix port, for tests and tools.

    fw = Firmware(tmp_path / "fw", server={"max_connections": 4}).start()
    fw.stats()                      # /stats as a dict (retried while the server answers 503)
    fw.get("/", {"Accept-Encoding": "gzip"})   # (status, headers, body) of one raw GET
    until(lambda: fw.stats()["connections"] == 0, 5)
    fw.stop()                       # stdin closed (a graceful stop), SIGKILL after `grace` s

Firmware(out_dir=None, heap=HEAP, board="host", server=None, config=None, squeeze=False,
         leave_free=None, entry=None, build=True, app=None)
    Builds firmware/ with tools/build.py into out_dir (a fresh temporary folder if None)
    for `board`, with `server` overriding server settings and `config` merged into the
    other sections of config.json (e.g. {"app": {"telemetry_ms": 200}, "access": {...}}).
    The port is a free one, written into config.json at every start(). entry: a MicroPython
    program copied into the build and run instead of main.py (it hooks launch.after_install
    and runs main.py); squeeze/leave_free run tools/squeeze_main.py (heap ballast).
    app: the app module, or a .py file built in as one (tools/build.py --set app=...).
    .port, .url(path), .ws_url(path="/echo"), .get(path, headers), .ws(path) (a websockets
    sync client), .stats(), .idle(busy), .resources(), .squeeze(n), .alive(), .fds(),
    .log(since_start), .stop(), .kill().
MicroPython(run_dir, argv, heap=HEAP, log_path=None)
    Any program: .start(ports=(), marker=None) waits until each port accepts a connection
    and/or `marker` appears in its output. Bench targets use it directly.
until(condition, timeout=5, step=0.05): condition's last value, truthy unless timed out.
free_port(): a 127.0.0.1 TCP port nothing uses now (below the ephemeral range: no outgoing
connection takes it before the firmware binds it).
The heap defaults to $RINGWS_HEAP or 110k (an ESP32's free heap). The log is out_dir + ".log"
and is kept after stop().
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
HEAP = os.environ.get("RINGWS_HEAP", "110k")
SQUEEZE_MAIN = os.path.join(TOOLS, "squeeze_main.py")


def micropython():
    for exe in (os.path.join(ROOT, ".venv", "bin", "micropython"),
                os.path.join(os.path.dirname(sys.executable), "micropython")):
        if os.path.exists(exe):
            return exe
    return "micropython"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(besides=()):
    """A 127.0.0.1 TCP port that no socket uses now (and not one of `besides`), below the
    kernel's ephemeral range where there is room: a port in that range may be handed to
    any outgoing connection (of the test run, or of other runs on the machine) between
    this choice and the firmware's bind, whose start then fails with EADDRINUSE."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    # (From 11000: browsers refuse a few ports, 10080 the highest of them.)
    for _ in range(50 if low and low > 12000 else 0):
        port = rng.randrange(11000, low)
        if port in besides:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))  # (no SO_REUSEADDR: fails on TIME_WAIT too)
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def until(condition, timeout=5.0, step=0.05):
    """Poll condition() until it returns something truthy or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Headers(dict):
    """Response headers by lower-case name; lookups ignore case."""

    def __getitem__(self, name):
        return dict.__getitem__(self, name.lower())

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

    def __contains__(self, name):
        return dict.__contains__(self, name.lower())


def parse_response(data):
    """(status, Headers, body) of a raw HTTP response; (None, {}, data) if it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1."):
        return None, Headers(), data
    status = int(lines[0].split(" ")[1])
    headers = Headers()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def read_all(sock, timeout=5.0, limit=1 << 20):
    """Everything until EOF (or a reset, or the timeout)."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while len(out) < limit and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def http_get(port, path, headers=None, timeout=5.0, method="GET"):
    """One raw HTTP request on a fresh connection, read to EOF: (status, Headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        s.sendall((req + "\r\n").encode())
        return parse_response(read_all(s, timeout))
    finally:
        s.close()


class MicroPython:
    """One MicroPython unix-port process in run_dir, its output appended to log_path."""

    # How stop() asks it to end: closing its stdin (the firmware's stop request,
    # firmware/simstop.py: taken between two steps of its loop), or SIGINT (raised inside
    # the unix port's signal handler, wherever the program is: for programs of no loop).
    stop_on_stdin = False

    def __init__(self, run_dir, argv, heap=HEAP, log_path=None):
        self.dir = str(run_dir)
        self.argv = list(argv)
        self.heap = heap
        self.log_path = log_path or self.dir + ".log"
        self.proc = None
        self._log_from = 0

    def start(self, ports=(), marker=None, timeout=15.0):
        """Start and wait until every port in `ports` accepts and `marker` is in the output.
        Raises RuntimeError (with the log) if the process exits or the wait times out."""
        with open(self.log_path, "ab") as log:
            self._log_from = log.tell()
            stop = {"stdin": subprocess.PIPE, "env": dict(os.environ, RINGWS_STOP="stdin")}
            self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + self.heap]
                                         + self.argv, cwd=self.dir, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         **(stop if self.stop_on_stdin else {}))
        waiting = list(ports)

        def ready():
            if self.proc.poll() is not None:
                return "exited"
            if marker is not None and marker not in self.log(since_start=True, tail=None):
                return None
            while waiting and port_open(waiting[0]):
                waiting.pop(0)
            return None if waiting else "ready"

        state = until(ready, timeout)
        if state != "ready":
            code = self.proc.returncode
            self.kill()
            raise RuntimeError("%s %s (exit %s):\n%s" % (
                " ".join(self.argv), "exited" if state else "did not start", code, self.log()))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pause(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)

    def fds(self):
        """Open file descriptors of the process (None once it is gone)."""
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except (OSError, AttributeError):
            return None

    def stop(self, grace=5.0):
        """The stop request (stop_on_stdin: the firmware shuts down gracefully, as make
        sim's Ctrl-C does, tools/sim_signals.py), else SIGINT; SIGKILL after grace s."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            if self.stop_on_stdin:
                self.proc.stdin.close()
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        """SIGKILL: gone without a goodbye."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(5)
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self.proc = None

    def log(self, since_start=False, tail=6000):
        """The process's output (the last `tail` characters)."""
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self._log_from)
                text = f.read().decode("utf-8", "replace")
            return text[-tail:] if tail else text
        except OSError:
            return ""

    def tail(self, n=5):
        return " | ".join(self.log().strip().splitlines()[-n:])


def _merge(cfg, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = dict(cfg[key], **value)
        else:
            cfg[key] = value


class Firmware(MicroPython):
    """The firmware built from firmware/ and run as the board runs it (main.py)."""

    stop_on_stdin = True

    def __init__(self, out_dir=None, heap=HEAP, board="host", server=None, config=None,
                 squeeze=False, leave_free=None, entry=None, build=True, certs=None,
                 app=None):
        if out_dir is None:
            out_dir = os.path.join(tempfile.mkdtemp(prefix="ringws-fw-"), "fw")
        if squeeze or leave_free is not None:
            entry = SQUEEZE_MAIN
            config = dict(config or {}, squeeze={"leave_free": leave_free,
                                                 "squeeze": squeeze})
        self.entry = entry
        # -m, not a script path: the unix port keeps a script's real folder in sys.path[0]
        # on the heap, so start-up heap would depend on where the build lies (a board's
        # main.py has no such path).
        module = os.path.basename(entry)[:-3] if entry else "main"
        MicroPython.__init__(self, out_dir, ["-m", module], heap)
        self.port = free_port()
        self.started = False  # once it has started, the port stays
        self.config = None
        # certs: a folder with host.pem and host-key.pem (tools/cert.py): wss and https
        # on self.tls_port as well.
        self.certs = certs
        self.tls_port = free_port([self.port]) if certs else None
        if build:
            self.build(board, server, config, app)
        access = (config or {}).get("access") or {}
        # /stats needs the token when one is configured
        self.stats_path = "/stats" + ("?token=" + access["token"] if access.get("token")
                                      else "")

    def build(self, board="host", server=None, config=None, app=None):
        sys.path.insert(0, TOOLS)
        import build

        overrides = dict(server or {}, port=self.port)
        if self.certs:
            overrides["tls_port"] = self.tls_port
        if app is not None:
            overrides["app"] = app
        self.config = cfg = build.build(board, self.dir, overrides=overrides,
                                        certs=self.certs and str(self.certs))
        _merge(cfg, config or {})
        if self.entry:
            shutil.copyfile(self.entry, os.path.join(self.dir, os.path.basename(self.entry)))
        self._write_config()

    def _write_config(self):
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1, sort_keys=True)

    def start(self, timeout=15.0):
        """Start (on self.port) and wait for the firmware's "listening on" line. At the
        first start a port taken meanwhile by someone else (EADDRINUSE) is exchanged for
        another; after that the port stays (a restarted board keeps its address)."""
        if self.config is None:
            with open(os.path.join(self.dir, "config.json")) as f:
                self.config = json.load(f)
        for attempt in range(3):
            server = self.config["server"]
            if (server.get("port"), server.get("tls_port")) != (self.port, self.tls_port):
                server["port"] = self.port
                if self.tls_port:
                    server["tls_port"] = self.tls_port
                self._write_config()
            try:
                MicroPython.start(self, marker="listening on", timeout=timeout)
                self.started = True
                return self
            except RuntimeError:
                if (self.started or attempt == 2
                        or "EADDRINUSE" not in self.log(since_start=True, tail=None)):
                    raise
            self.port = free_port()
            self.tls_port = free_port([self.port]) if self.tls_port else None

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def ws_url(self, path="/echo"):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def get(self, path, headers=None, timeout=5.0, method="GET"):
        """(status, Headers, body) of one raw request, read to EOF."""
        return http_get(self.port, path, headers, timeout, method)

    def ws(self, path="/echo", timeout=5.0, **kw):
        """A `websockets` sync client on path; a 503 (no free slot yet) is asked again."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        def attempt():
            try:
                return connect(self.ws_url(path), open_timeout=timeout, legacy=True, **kw)
            except InvalidStatus as e:
                if e.response.status_code != 503:
                    raise
                return None

        ws = until(attempt, timeout, 0.1)
        if ws is None:
            raise AssertionError("%s still answers 503 after %s s\n%s" % (path, timeout,
                                                                          self.log()))
        return ws

    def stats(self, timeout=5.0):
        """/stats as a dict. A 503 or a refused connection is asked again until timeout:
        a slot may still be closing, and a busy 110 KiB heap may refuse it for memory."""
        last = [None]

        def ask():
            try:
                last[0] = self.get(self.stats_path)
            except OSError as e:
                last[0] = (None, {}, repr(e).encode())
                return None
            return last[0][0] == 200

        if not until(ask, timeout, 0.1):
            status, _, body = last[0]
            raise AssertionError("/stats answered %r %r\n%s" % (status, body[:200],
                                                                self.log()))
        return json.loads(last[0][2])

    def idle(self, busy=0, timeout=5.0):
        """/stats once no connection holds a slot beyond the /stats request itself and
        `busy` more (the last /stats if that does not happen within timeout)."""
        last = [None]

        def quiet():
            st = last[0] = self.stats()
            return (st["slots_free"] >= st["slots_total"] - 1 - busy
                    and st["connections"] <= busy)

        until(quiet, timeout)
        return last[0]

    def resources(self):
        """What must return to baseline after every scenario."""
        st = self.idle()
        return {"slots_free": st["slots_free"], "connections": st["connections"],
                "http_active": st["http_active"], "mem_alloc": st["mem_alloc"],
                "fds": self.fds()}

    def squeeze(self, leave_free):
        """Take the heap away (ballast until leave_free bytes are free), or give it back
        (None); needs squeeze=True. Waits for the firmware's log line saying it is done."""
        path = os.path.join(self.dir, "squeeze")
        mark = "ringws-test: squeezed" if leave_free is not None else \
            "ringws-test: ballast released"
        seen = self.log(since_start=True, tail=None).count(mark)
        if leave_free is None:
            os.remove(path)
        else:
            with open(path + ".new", "w") as f:
                f.write(str(leave_free))
            os.replace(path + ".new", path)  # the server never reads a half-written file
        if not until(lambda: self.log(since_start=True, tail=None).count(mark) > seen, 5):
            raise RuntimeError("squeeze not applied:\n" + self.log())
