"""The application example in README.md, run as it stands: the code block under
"## An application" is written to a file and run under the real MicroPython unix port
with a 110 KiB heap, against the firmware's .mpy build, with a real `websockets` client."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import build  # noqa: E402  (tools/build.py)


def readme_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## An application", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_short():
    assert len(readme_example().strip().splitlines()) <= 16


@pytest.fixture
def example(tmp_path):
    port = free_port()
    lib = tmp_path / "build"
    build.build("host", str(lib))
    code = readme_example()
    assert '"port": 8080' in code
    (tmp_path / "app.py").write_text(code.replace('"port": 8080', '"port": %d' % port))
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % lib)
    log = open(tmp_path / "console.log", "w+")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "micropython"), "-X", "heapsize=110k",
         "app.py"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

    def output():
        log.flush()
        log.seek(0)
        return log.read()

    deadline = time.monotonic() + 15
    while "listening on" not in output():
        assert proc.poll() is None and time.monotonic() < deadline, output()
        time.sleep(0.02)
    yield port, output
    proc.send_signal(signal.SIGINT)
    proc.wait(5)
    log.close()


def test_the_example_counts_every_message_in_order(example):
    from websockets.sync.client import connect

    port, output = example
    with connect("ws://127.0.0.1:%d/count" % port) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "1: 5 bytes"
        ws.send(b"\x00" * 1000)
        assert ws.recv(timeout=5) == "2: 1000 bytes"
        # Many at once, unread meanwhile: each gets exactly one answer, in order.
        for i in range(300):
            ws.send("x" * (i % 50))
        for i in range(300):
            assert ws.recv(timeout=5) == "%d: %d bytes" % (i + 3, i % 50)
    deadline = time.monotonic() + 5
    while "closed with 1000 after 302 messages" not in output():
        assert time.monotonic() < deadline, output()
        time.sleep(0.02)
