#!/usr/bin/env python3
"""Run the firmware under the MicroPython unix port so that Ctrl-C and SIGTERM stop it
gracefully, every client getting a 1001 close.

    tools/sim_signals.py .venv/bin/micropython -X heapsize=110k main.py

The unix port raises SIGINT's KeyboardInterrupt inside its signal handler, wherever the
interpreter is: inside a garbage collection it leaves the heap locked, between a frame's
header and its payload the stream cut. So the interpreter never gets the signal here: SIGINT
and SIGTERM are blocked for it (a blocked signal stays pending, even a SIGTERM it ignores),
its stdin is a pipe, and RINGWS_STOP=stdin makes the firmware watch that pipe between two
steps of its loop (firmware/simstop.py). A small watcher process holds the pipe's other end
and closes it once either signal is pending for the interpreter: the firmware then shuts
down as srv.shutdown() does. The interpreter replaces this process (exec): its process id
is the one the caller started, whichever way the signal comes (to that id, to its process
group, or forwarded by make).
"""
import os
import signal
import sys
import time

STOP_BITS = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
POLL_S = 0.05


def pending(pid):
    """The signals pending for the process (thread- and process-directed)."""
    mask = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    return mask


def watch(pid, stop_fd):
    """In the forked watcher: until the interpreter exits, close its stdin's other end once
    a SIGINT or SIGTERM is pending for it. The watcher ignores the signals itself (a Ctrl-C
    or a SIGTERM to the process group reaches it too) and ends with the interpreter."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never keep the caller's pipes open
        os.dup2(null, fd)
    try:
        while os.getppid() == pid:
            if stop_fd is not None and pending(pid) & STOP_BITS:
                os.close(stop_fd)  # the firmware sees the end of its stdin: it shuts down
                stop_fd = None
            time.sleep(POLL_S)
    except OSError:
        pass
    os._exit(0)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # both survive exec
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    pid = os.getpid()
    read_end, stop_fd = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        watch(pid, stop_fd)
    os.close(stop_fd)
    os.dup2(read_end, 0)
    os.close(read_end)
    os.environ["RINGWS_STOP"] = "stdin"
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
