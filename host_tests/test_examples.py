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
from fwrun import Firmware, until

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
