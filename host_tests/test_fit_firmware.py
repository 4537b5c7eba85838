"""The firmware fits the board: it compiles with mpy-cross for the ESP32 archs, and
pyright against micropython-esp32-stubs finds no API the ESP32 port lacks."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fit_check  # noqa: E402

BIN = os.path.join(ROOT, ".venv", "bin")


@pytest.fixture(scope="module")
def stubs():
    return fit_check.ensure_stubs()


@pytest.mark.parametrize("arch", fit_check.ARCHS)
def test_every_firmware_file_compiles(arch):
    files = list(fit_check.firmware_sources())
    assert "board.py" in files and "main.py" in files
    assert fit_check.compile_all(arch) == {}


def test_mpy_cross_rejects_what_micropython_cannot_parse(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    r = subprocess.run([os.path.join(BIN, "mpy-cross"), "-march=xtensawin", str(src)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "SyntaxError" in (r.stderr + r.stdout)


@pytest.mark.slow
def test_no_api_missing_on_the_esp32_port(stubs):
    gate, advice = fit_check.pyright()
    assert gate == [], "\n".join(gate)


@pytest.mark.slow
def test_pyright_gate_catches_a_missing_esp32_api(stubs, tmp_path):
    # The same settings as pyrightconfig.json on a small canary: ESP32-only APIs pass
    # (CPython's time has no ticks_ms), a misspelt or absent one is an error.
    (tmp_path / "canary.py").write_text(
        "import time, machine, network\n"
        "t = time.ticks_diff(time.ticks_ms(), 0)\n"
        "w = network.WLAN(network.STA_IF)\n"
        "c = machine.reset_cause() == machine.WDT_RESET\n"
        "machine.WDT(timeout=5000).feed()\n"
        "x = machine.reset_casue()\n"
        "y = network.WLAN(network.STA_IF).associate()\n")
    with open(os.path.join(ROOT, "pyrightconfig.json")) as f:
        lines = [ln for ln in f if not ln.lstrip().startswith("//")]
    cfg = json.loads("".join(lines))
    cfg.update(include=["."], exclude=[], extraPaths=[], typeshedPath=stubs, stubPath=stubs)
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(cfg))
    r = subprocess.run([os.path.join(BIN, "pyright"), "--outputjson", "-p", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    found = {(d["range"]["start"]["line"] + 1, d.get("rule"))
             for d in json.loads(r.stdout)["generalDiagnostics"]}
    assert found == {(6, "reportAttributeAccessIssue"), (7, "reportAttributeAccessIssue")}
