#!/usr/bin/env python3
"""Run the firmware under the MicroPython unix port so that SIGTERM stops it gracefully.

    tools/sim_signals.py .venv/bin/micropython -X heapsize=110k main.py

main.py answers Ctrl-C (SIGINT, raised as KeyboardInterrupt) with srv.shutdown(): 1001 to
every client, a wait of at most shutdown_timeout_ms, then the rest closed by force. The
unix port has no way to handle SIGTERM (no `signal` or `ffi` module; only SIGINT gets a
handler), so SIGTERM would end it on the spot. Here SIGTERM is blocked for the interpreter,
so that it stays pending, and a small watcher process sends the interpreter a SIGINT once
one is pending. The interpreter's SIGINT handler unblocks every signal; SIGTERM is also
ignored, so the pending one is then dropped instead of ending the process (a blocked
signal is kept pending even when ignored). The interpreter replaces this process (exec):
its process id is the one the caller started, whichever way the signal comes (to that id,
to its process group, or forwarded by make).
"""
import os
import signal
import sys
import time

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
POLL_S = 0.05


def pending(pid):
    """The signals pending for the process (thread- and process-directed)."""
    mask = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    return mask


def watch(pid):
    """In the forked watcher: until the interpreter exits, turn its first pending SIGTERM
    into a SIGINT. The watcher ignores the signals itself (a Ctrl-C or a SIGTERM to the
    process group reaches it too) and ends with the interpreter."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never keep the caller's pipes open
        os.dup2(null, fd)
    try:
        while os.getppid() == pid:
            if pending(pid) & SIGTERM_BIT:
                os.kill(pid, signal.SIGINT)
                break
            time.sleep(POLL_S)
    except OSError:
        pass
    os._exit(0)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # both survive exec
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.getpid()
    if os.fork() == 0:
        watch(pid)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
