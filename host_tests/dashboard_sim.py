"""The firmware under the real MicroPython unix port, for the dashboard tests.

Built with tools/build.py into a temp dir, on a free port, with an ESP32-sized heap. The
process can be killed and started again on the same port (the reconnect test).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
# The host board's sizing with fewer slots (the tests need four connections at once, and
# a closed one may hold its slot a moment) and room for a 200-character chat line; the
# heap stays the ESP32's.
SERVER = {"max_connections": 6, "max_message": 256}
HEAP = os.environ.get("RINGWS_TEST_HEAP", "110k")  # the ESP32 budget; override to investigate


def micropython():
    exe = os.path.join(VENV_BIN, "micropython")
    return exe if os.path.exists(exe) else "micropython"


class Firmware:
    def __init__(self, out_dir, telemetry_ms=200, server=SERVER):
        """server: overrides of the board's server settings (None: the board's own)."""
        self.dir = str(out_dir)
        self.port = free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir + ".log")
        cmd = [sys.executable, os.path.join(ROOT, "tools", "build.py"), "--board", "host",
               "--out", self.dir, "--port", str(self.port)]
        for key, value in (server or {}).items():
            cmd += ["--set", "%s=%s" % (key, json.dumps(value))]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        cfg_path = os.path.join(self.dir, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg.setdefault("app", {})["telemetry_ms"] = telemetry_ms
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self.telemetry_ms = telemetry_ms

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def start(self, timeout=15):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + HEAP, "main.py"],
                                     cwd=self.dir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("firmware exited (%s):\n%s" % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("firmware did not listen on %d:\n%s" % (self.port, self.log()))

    def kill(self):
        # SIGKILL: the reconnect test wants the server gone without a goodbye.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def get(self, path, headers=None):
        """(status, headers, body); a 503 (no free slot yet) is retried, as Retry-After asks."""
        req = urllib.request.Request(self.url + path, headers=headers or {})
        for attempt in range(20):
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.headers, r.read()  # headers: case-insensitive
            except urllib.error.HTTPError as e:
                if e.code != 503 or attempt == 19:
                    raise AssertionError("GET %s: %s %r\n%s" % (path, e.code, e.read(),
                                                               self.log()))
            time.sleep(0.1)

    def stats(self):
        return json.loads(self.get("/stats")[2])

    def ws(self, attempts=20):
        """A websockets client on /ws; a 503 (no free slot yet) is retried."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        for attempt in range(attempts):
            try:
                return connect(self.ws_url)
            except InvalidStatus as e:
                if e.response.status_code != 503 or attempt == attempts - 1:
                    raise
            time.sleep(0.1)
