"""The apps in examples/, each built in from its file (tools/build.py --set app=FILE, as
`make sim APP=examples/x.py` does) and run under the MicroPython unix port at 110 KiB
with real clients: the `websockets` package and raw HTTP over 127.0.0.1."""
import base64
import json
import os
import socket
import threading

import pytest
from conftest import ROOT
from fwrun import Firmware, parse_response, read_all, until

pytestmark = pytest.mark.slow  # the firmware under the unix port, one start per app


def example(name):
    return os.path.join(ROOT, "examples", name)


def start(tmp_path, name, settings=None, server=None):
    fw = Firmware(tmp_path / "fw", app=example(name), server=server,
                  config={"app": settings or {}})
    fw.start()
    heap = [ln for ln in fw.log().splitlines() if "heap free" in ln]
    print(name, heap[-1] if heap else "no heap line")   # the README figure
    return fw


class Reader:
    """A client that reads every message on a thread, so it always keeps up."""

    def __init__(self, fw, path):
        self.ws = fw.ws(path).__enter__()
        self.msgs = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for raw in self.ws:
                self.msgs.append(json.loads(raw))
        except Exception:   # closed
            pass

    def close(self):
        self.ws.__exit__(None, None, None)
        self.thread.join(5)


def silent_client(port, path):
    """A WebSocket client that never reads, with a tiny receive buffer. Its small segment
    size keeps the server's send buffer small too (Linux sizes it by segments; on the
    loopback's 64 KiB segments it holds megabytes), so its ring fills within seconds."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    return s


# -- sensor.py ----------------------------------------------------------------------------

def test_sensor_streams_to_every_tab_and_skips_one_that_never_reads(tmp_path):
    fw = start(tmp_path, "sensor.py", {"period_ms": 3},
               {"tick_ms": 3, "stuck_timeout_ms": 2000})
    readers = []
    try:
        status, headers, page = fw.get("/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'"/sensor"' in page
        readers = [Reader(fw, "/sensor"), Reader(fw, "/sensor")]
        assert until(lambda: all(len(r.msgs) >= 3 for r in readers), 5), fw.log()
        first = readers[0].msgs[0]
        assert set(first) == {"n", "ms", "value"} and isinstance(first["value"], float)
        before = fw.stats()
        silent = silent_client(fw.port, "/sensor")
        try:
            # Its ring fills: from then on each sample skips it and counts a drop...
            assert until(lambda: fw.stats()["dropped"] >= before["dropped"] + 20, 20), \
                fw.stats()
            # ...while the tabs that read go on getting every sample,
            seen = [len(r.msgs) for r in readers]
            assert until(lambda: all(len(r.msgs) >= n + 50 for r, n in zip(readers, seen)),
                         5)
            # and the server closes it once its ring has stayed full for stuck_timeout_ms.
            assert until(lambda: fw.stats()["closed"]["too_slow"]
                         == before["closed"]["too_slow"] + 1, 10)
        finally:
            silent.close()
        for r in readers:
            ns = [m["n"] for m in r.msgs]
            assert ns == list(range(ns[0], ns[0] + len(ns))), "a reading tab lost samples"
        assert fw.stats()["connections"] == 2
    finally:
        for r in readers:
            r.close()
        fw.stop()


# -- switch.py ----------------------------------------------------------------------------

TOKEN = "s3cret-Token_42"


def switch_url(token):
    return "/switch?x=1&token=" + token


def test_switch_commands_need_the_token_and_every_connection_sees_the_state(tmp_path):
    from websockets.exceptions import ConnectionClosed

    fw = start(tmp_path, "switch.py", {"token": TOKEN})
    try:
        assert b"/switch" in fw.get("/")[2]
        with fw.ws(switch_url(TOKEN)) as a, fw.ws("/switch") as watcher:
            assert json.loads(a.recv(timeout=5)) == {"on": False}   # the state, at once
            assert json.loads(watcher.recv(timeout=5)) == {"on": False}
            a.send(json.dumps({"on": True}))
            assert json.loads(a.recv(timeout=5)) == {"on": True}
            assert json.loads(watcher.recv(timeout=5)) == {"on": True}
            a.send("switch it")   # not a command: an error message, the connection stays
            assert "error" in json.loads(a.recv(timeout=5))
            a.send(json.dumps({"on": 1}))
            assert "error" in json.loads(a.recv(timeout=5))
            # A watcher without the token may not switch: closed with 1008.
            watcher.send(json.dumps({"on": False}))
            with pytest.raises(ConnectionClosed):
                watcher.recv(timeout=5)
            assert (watcher.close_code, watcher.close_reason) == (1008, "bad token")
            with fw.ws(switch_url("wrong" + TOKEN)) as wrong:
                assert json.loads(wrong.recv(timeout=5)) == {"on": True}
                wrong.send(json.dumps({"on": False}))
                with pytest.raises(ConnectionClosed):
                    wrong.recv(timeout=5)
                assert wrong.close_code == 1008
            with fw.ws(switch_url(TOKEN)) as b:   # the state did not change meanwhile
                assert json.loads(b.recv(timeout=5)) == {"on": True}
                b.send(json.dumps({"on": False}))
                assert json.loads(b.recv(timeout=5)) == {"on": False}
                assert json.loads(a.recv(timeout=5)) == {"on": False}
        assert "Traceback" not in fw.log()
    finally:
        fw.stop()


def test_switch_without_a_token_makes_one_and_prints_it(tmp_path):
    fw = start(tmp_path, "switch.py")
    try:
        with fw.ws("/switch?token=") as nobody:   # an empty token is no token
            assert json.loads(nobody.recv(timeout=5)) == {"on": False}
            nobody.send(json.dumps({"on": True}))
            with pytest.raises(Exception):
                nobody.recv(timeout=5)
            assert nobody.close_code == 1008
        line = [ln for ln in fw.log().splitlines() if "open /?token=" in ln]
        assert line, fw.log()
        token = line[0].split("token=")[1].strip()
        assert len(token) == 16 and "%s" not in token
        with fw.ws(switch_url(token)) as a:
            assert json.loads(a.recv(timeout=5)) == {"on": False}
            a.send(json.dumps({"on": True}))
            assert json.loads(a.recv(timeout=5)) == {"on": True}
    finally:
        fw.stop()


# -- settings.py --------------------------------------------------------------------------

def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_" + name, example(name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_settings_form_parsing_and_escaping():
    """The form's own logic on CPython (the same file runs on the board)."""
    settings = load_example("settings")
    assert settings.parse(memoryview(b"name=K%C3%BCche+%26+%3Cb%3E&period_ms=250")) == \
        {"name": "K\u00fcche & <b>", "period_ms": 250}
    for bad in (b"name=&period_ms=250", b"name=x&period_ms=99", b"name=x&period_ms=x",
                b"name=%E&period_ms=250", b"name=%FF&period_ms=250", b"period_ms=250",
                b"name=" + b"x" * 33 + b"&period_ms=250"):
        with pytest.raises((ValueError, UnicodeError)):
            settings.parse(memoryview(bad))
    assert settings.esc('a"<&') == "a&quot;&lt;&amp;"


def post(port, path, body, content_type="application/x-www-form-urlencoded"):
    """One raw POST with Content-Length, read to EOF: (status, Headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (path, content_type, len(body))).encode()
                  + body)
        return parse_response(read_all(s))
    finally:
        s.close()


def running(fw):
    status, _, body = fw.get("/settings")
    assert status == 200, (status, body, fw.log())
    return json.loads(body)


def test_settings_saved_by_a_post_are_in_effect_after_a_restart(tmp_path):
    fw = start(tmp_path, "settings.py")
    try:
        assert running(fw) == {"name": "ringws", "period_ms": 1000}
        status, _, page = fw.get("/")
        assert status == 200 and b"<form method=post>" in page
        assert b'<input name=name value="ringws"' in page
        status, _, page = post(fw.port, "/", b"name=K%C3%BCche+%3Cb%3E&period_ms=250")
        assert status == 200, (page, fw.log())
        assert "Saved" in page.decode() and 'value="K\u00fcche &lt;b>"' in page.decode()
        assert running(fw) == {"name": "ringws", "period_ms": 1000}   # not before a reset
        status, _, answer = post(fw.port, "/", b"name=x&period_ms=5")
        assert status == 400 and b"period_ms" in answer
        with open(os.path.join(fw.dir, "settings.json")) as f:   # the bad one saved nothing
            assert json.load(f) == {"name": "K\u00fcche <b>", "period_ms": 250}
        fw.stop()
        fw.start()   # the same folder: a board's reset
        assert running(fw) == {"name": "K\u00fcche <b>", "period_ms": 250}
        assert "<title>K\u00fcche &lt;b></title>" in fw.get("/")[2].decode()
    finally:
        fw.stop()
