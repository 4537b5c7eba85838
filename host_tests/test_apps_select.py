"""Which application a board runs: config.json's "app" names a module with
install(srv, cfg, board) (tools/build.py --set app=NAME); a missing one, or one without
install(), is reported in the log and in /stats board.reason while the default app serves.
Under the MicroPython unix port at 110 KiB with the real `websockets` client."""
import json
import os
import sys

import pytest
from conftest import ROOT
from fwrun import Firmware, http_get

sys.path.insert(0, os.path.join(ROOT, "tools"))
import build  # noqa: E402

pytestmark = pytest.mark.slow  # the firmware under the unix port, one start per app

HELLO = '''
class Shout:
    def on_message(self, conn, data, text):
        return conn.send(bytes(data).upper(), text)


def install(srv, cfg, board):
    srv.route("/shout", Shout())
    greeting = cfg["app"]["greeting"]
    srv.http("/hello", lambda srv, req: (200, "text/plain", greeting))
'''


def firmware(tmp_path, module, source=None):
    fw = Firmware(tmp_path / "fw", server={"max_connections": 4},
                  config={"app": {"module": module, "greeting": "hi there"}})
    if source is not None:
        with open(os.path.join(fw.dir, module + ".py"), "w") as f:
            f.write(source)
    return fw.start()


def test_set_app_names_the_module_and_keeps_the_app_settings(tmp_path):
    board = {"chip": "host", "server": {"port": 1}, "app": {"telemetry_ms": 200}}
    key, value = build.parse_set("app=hello")
    cfg = build.make_config(board, {key: value, "port": 2})
    assert cfg["app"] == {"module": "hello", "telemetry_ms": 200}
    assert cfg["server"] == {"port": 2} and "module" not in cfg["server"]
    assert build.parse_set('app="hello"') == ("app", "hello")
    assert build.make_config({"app": "mine"}, {})["app"] == {"module": "mine"}
    try:
        build.parse_set("max_connections=two")
        raise AssertionError("a server setting must still be JSON")
    except ValueError:
        pass
    build.main(["--board", "host", "--out", str(tmp_path / "b"), "--set", "app=hello"])
    with open(tmp_path / "b" / "config.json") as f:
        assert json.load(f)["app"]["module"] == "hello"


def test_the_named_app_serves_its_routes(tmp_path):
    fw = firmware(tmp_path, "hello", HELLO)
    try:
        status, _, body = http_get(fw.port, "/hello")
        assert (status, body) == (200, b"hi there")
        with fw.ws("/shout") as ws:
            ws.send("quiet words")
            assert ws.recv(timeout=5) == "QUIET WORDS"
        assert http_get(fw.port, "/echo")[0] == 404   # the default app is not installed
        assert fw.stats()["board"]["reason"] is None
    finally:
        fw.stop()


def check_fallback(fw, says):
    try:
        reason = fw.stats()["board"]["reason"]
        assert "app 'mine'" in reason and says in reason and "default app" in reason
        assert "ringws: app 'mine'" in fw.log()
        with fw.ws("/echo") as ws:   # the board stays useful and reachable
            ws.send(b"still here")
            assert ws.recv(timeout=5) == b"still here"
    finally:
        fw.stop()


def test_a_missing_app_is_reported_and_the_default_app_serves(tmp_path):
    check_fallback(firmware(tmp_path, "mine"), "no module named 'mine'")


def test_an_app_without_install_is_reported(tmp_path):
    check_fallback(firmware(tmp_path, "mine", "X = 1\n"), "has no install(srv, cfg, board)")


def test_an_app_that_fails_to_import_is_reported(tmp_path):
    check_fallback(firmware(tmp_path, "mine", "import nothing_by_this_name\n"),
                   "nothing_by_this_name")
