"""tools/fwrun.py, the one runner of the firmware in tests and tools: what it does when the
program fails to start, ignores Ctrl-C or its stop request, or never gets ready."""
import time

import pytest

from fwrun import MicroPython, free_port, until


def program(tmp_path, source):
    (tmp_path / "prog.py").write_text(source)
    return MicroPython(tmp_path, ["prog.py"], log_path=str(tmp_path / "prog.log"))


def test_a_program_that_exits_is_reported_with_its_output(tmp_path):
    p = program(tmp_path, "print('config.json unusable')\nraise SystemExit(3)\n")
    with pytest.raises(RuntimeError) as e:
        p.start(marker="listening on", timeout=10)
    assert "exited" in str(e.value) and "config.json unusable" in str(e.value)
    assert not p.alive()


def test_a_program_that_never_gets_ready_is_killed(tmp_path):
    p = program(tmp_path, "import time\nprint('booting')\ntime.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        p.start(ports=[free_port()], timeout=1)
    assert time.monotonic() - t0 < 5
    assert "did not start" in str(e.value) and "booting" in str(e.value)
    assert not p.alive()


def test_stop_is_ctrl_c_first_then_forced(tmp_path):
    # Waits for the marker, catches Ctrl-C and says so; a second program ignores it.
    p = program(tmp_path, "import time\nprint('ready')\ntry:\n    time.sleep(60)\n"
                          "except KeyboardInterrupt:\n    print('got ctrl-c')\n")
    p.start(marker="ready", timeout=10)
    p.stop(grace=5)
    assert "got ctrl-c" in p.log(since_start=True)
    q = program(tmp_path, "import time\nprint('ready')\nwhile True:\n    try:\n"
                          "        time.sleep(60)\n    except KeyboardInterrupt:\n"
                          "        print('ignored')\n")
    q.start(marker="ready", timeout=10)
    t0 = time.monotonic()
    q.stop(grace=0.5)
    assert not q.alive() and time.monotonic() - t0 < 3
    assert "ignored" in q.log(since_start=True)


def test_the_firmwares_stop_closes_stdin_first_then_forces(tmp_path):
    # The firmware takes the end of its stdin as its stop request (firmware/simstop.py): a
    # program run that way sees it; a second one ignores it and is killed.
    p = program(tmp_path, "import os, sys\nprint('ready', os.getenv('RINGWS_STOP'))\n"
                          "sys.stdin.read()\nprint('stdin ended')\n")
    p.stop_on_stdin = True
    p.start(marker="ready", timeout=10)
    p.stop(grace=5)
    assert "ready stdin\nstdin ended" in p.log(since_start=True)
    q = program(tmp_path, "import time\nprint('ready')\ntime.sleep(60)\nprint('woke')\n")
    q.stop_on_stdin = True
    q.start(marker="ready", timeout=10)
    t0 = time.monotonic()
    q.stop(grace=0.5)
    assert not q.alive() and time.monotonic() - t0 < 3
    assert "woke" not in q.log(since_start=True)


def test_until_returns_the_condition_value_or_gives_up():
    t0 = time.monotonic()
    assert until(lambda: time.monotonic() - t0 > 0.1 and "done", 2) == "done"
    t1 = time.monotonic()
    assert until(lambda: 0, 0.2) == 0
    assert 0.2 <= time.monotonic() - t1 < 1


@pytest.mark.slow
def test_a_port_taken_before_the_first_start_is_exchanged(tmp_path):
    # An outgoing connection that got the chosen port as its own (what the kernel may do
    # for any connection while the firmware builds): the bind fails, another port is used.
    import socket

    from fwrun import Firmware

    fw = Firmware(tmp_path / "fw")
    taken = fw.port
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    c = socket.socket()
    c.bind(("127.0.0.1", taken))
    c.connect(lst.getsockname())
    try:
        fw.start()
        assert fw.port != taken and fw.stats()["slots_total"] >= 1
        assert "EADDRINUSE" in fw.log(tail=None)
        port = fw.port
        fw.kill()
        fw.start()  # a restart keeps the port it has
        assert fw.port == port and fw.stats()["slots_total"] >= 1
    finally:
        fw.stop()
        c.close()
        lst.close()
