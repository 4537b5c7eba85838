"""How a user runs an example: one command. `make sim APP=examples/sensor.py` and
`make deploy ... APP=examples/switch.py` pass --set app=FILE to tools/build.py, which
compiles that file into the build as a top-level module and names it in config.json."""
import json
import os
import subprocess
import time

import pytest

import build  # tools/build.py
from conftest import ROOT
from test_deploy_vboard import VBoard

EXAMPLES = sorted(n for n in os.listdir(os.path.join(ROOT, "examples")) if n.endswith(".py"))


def test_every_example_is_a_short_app_module():
    assert EXAMPLES == ["sensor.py", "settings.py", "switch.py"]
    for name in EXAMPLES:
        with open(os.path.join(ROOT, "examples", name)) as f:
            text = f.read()
        assert len(text.splitlines()) < 80, name
        assert "\ndef install(srv, cfg, board):\n" in text, name
        assert "make sim APP=examples/%s" % name in text, name   # says how to run it


def config_of(out):
    with open(os.path.join(out, "config.json")) as f:
        return json.load(f)


def test_an_app_file_is_compiled_into_the_build_and_named_in_config(tmp_path, monkeypatch):
    out = str(tmp_path / "b")
    monkeypatch.chdir(tmp_path)   # a path relative to the repo works from anywhere
    build.main(["--board", "host", "--out", out, "--set", "app=examples/sensor.py"])
    assert os.path.exists(os.path.join(out, "sensor.mpy"))
    assert config_of(out)["app"] == {"module": "sensor"}
    # the board file's app settings stay; a path relative to the current folder works too
    mine = tmp_path / "mine.py"
    mine.write_text("def install(srv, cfg, board):\n    pass\n")
    cfg = build.make_config({"app": {"module": "x", "period_ms": 5}}, {"app": "mine.py"})
    build.add_app_file(cfg, out, "x64")
    assert cfg["app"] == {"module": "mine", "period_ms": 5}
    assert open(os.path.join(out, "mine.mpy"), "rb").read(2) == b"M\x06"
    build.build("host", str(tmp_path / "s"), overrides={"app": "mine.py"}, source=True)
    assert (tmp_path / "s" / "mine.py").read_text() == mine.read_text()


def test_a_missing_app_file_or_one_named_like_a_firmware_module_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="app nothing/here.py: no such file"):
        build.main(["--board", "host", "--out", str(tmp_path / "b"), "--set",
                    "app=nothing/here.py"])
    clash = tmp_path / "board.py"
    clash.write_text("def install(srv, cfg, board):\n    pass\n")
    with pytest.raises(SystemExit, match="a module called board already"):
        build.main(["--board", "host", "--out", str(tmp_path / "b"), "--set",
                    "app=%s" % clash])


def test_make_sim_and_deploy_pass_app_to_the_build():
    for target, extra in (("sim", []), ("deploy", ["BOARD=host", "PORT=socket://x:1"])):
        r = subprocess.run(["make", "-n", "--no-print-directory", target,
                            "APP=examples/sensor.py"] + extra, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "--set app=examples/sensor.py" in r.stdout, r.stdout


@pytest.mark.slow
def test_make_deploy_app_puts_an_example_on_the_virtual_board(tmp_path):
    """The switch onto a virtual board at 110 KiB with `make deploy APP=examples/switch.py`,
    its token from a secrets file ({"app": {"token": ...}}), as its header says."""
    from websockets.sync.client import connect

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"app": {"token": "deploy-token"}}))
    board = VBoard(tmp_path)
    try:
        args = ["--set", "port=%d" % board.ws_port, "--out", str(tmp_path / "build"),
                "--secrets", str(secrets)]
        r = subprocess.run(["make", "-s", "--no-print-directory", "deploy", "BOARD=host", "CERTS=",
                            "PORT=" + board.url, "APP=examples/switch.py",
                            "DEPLOY_ARGS=" + " ".join(args)],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr + board.board_log()
        assert (board.flash / "switch.mpy").exists()
        url = "ws://127.0.0.1:%d/switch?token=deploy-token" % board.ws_port
        deadline = time.time() + 30
        while True:
            try:
                ws = connect(url, open_timeout=5)
                break
            except OSError:
                assert time.time() < deadline, board.board_log()
                time.sleep(0.2)
        with ws:
            assert json.loads(ws.recv(timeout=5)) == {"on": False}
            ws.send('{"on": true}')
            assert json.loads(ws.recv(timeout=5)) == {"on": True}
        log = board.board_log()
        print([ln for ln in log.splitlines() if "heap free" in ln][-1:])
    finally:
        board.stop()


@pytest.mark.slow
def test_an_app_file_goes_with_an_update_over_wifi(tmp_path):
    """A board running an example, updated over WiFi with the same APP=file: the file
    goes with the build (the board keeps its config.json, which names the module)."""
    from test_ota_vboard import VBoard as OtaBoard
    from websockets.sync.client import connect

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"ota": {"token": "t0ken", "confirm_ms": 8000},
                                   "app": {"period_ms": 50}}))
    app = tmp_path / "sensor.py"
    app.write_text(open(os.path.join(ROOT, "examples", "sensor.py")).read())
    board = OtaBoard(tmp_path / "b", secrets)

    def deploy(where, *args):
        r = subprocess.run(["make", "-s", "--no-print-directory", "deploy", "BOARD=host", "CERTS=",
                            where, "APP=" + str(app), "DEPLOY_ARGS=" + " ".join(args)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr + board.board_log()

    def sample():
        with connect(board.ws_url + "sensor", open_timeout=10) as ws:
            return json.loads(ws.recv(timeout=10))

    try:
        (tmp_path / "b").mkdir(exist_ok=True)
        deploy("PORT=" + board.url, "--set", "port=%d" % board.ws_port, "--secrets",
               str(secrets), "--out", str(tmp_path / "usb"))
        before = board.stats()["version"]
        assert "v" not in sample()
        app.write_text(app.read_text().replace("'{\"n\": %d,", "'{\"v\": 2, \"n\": %d,"))
        deploy("URL=" + board.ws_url, "--secrets", str(secrets), "--out",
               str(tmp_path / "net"))
        st = board.stats()
        assert st["version"] != before and st["update"]["result"] == "ok", st
        assert st["board"]["reason"] is None, st["board"]
        assert sample()["v"] == 2
    finally:
        board.stop()
