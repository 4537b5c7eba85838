"""The application example in README.md, run as it stands: the code block under
"## An application" is written to a file and run under the real MicroPython unix port
with a 110 KiB heap, against the firmware's .mpy build, with a real `websockets` client."""
import os
import re

import pytest

import build  # tools/build.py
from conftest import ROOT, free_port
from fwrun import MicroPython, until


def readme_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("\n## An application", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_is_short():
    assert len(readme_example().strip().splitlines()) <= 16


@pytest.fixture
def example(tmp_path, monkeypatch):
    port = free_port()
    lib = tmp_path / "build"
    build.build("host", str(lib))
    code = readme_example()
    assert '"port": 8080' in code
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "app.py").write_text(code.replace('"port": 8080', '"port": %d' % port))
    monkeypatch.setenv("MICROPYPATH", "%s:.frozen" % lib)  # as the README says
    app = MicroPython(tmp_path / "run", ["app.py"]).start(ports=[port])
    yield port, app.log
    app.stop()


@pytest.mark.slow
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
    assert until(lambda: "closed with 1000 after 302 messages" in output(), 5), output()
