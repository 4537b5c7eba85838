"""MicroPython packaging: package.json for `mpremote mip install` (installed for real onto
the virtual board) and manifest.py for freezing, both covering the same library files."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "firmware", "ringws")
BOARD_FILES = sorted(f for f in os.listdir(LIB) if f.endswith(".py")
                     and not f.endswith("_cpython.py"))


def package_json():
    with open(os.path.join(ROOT, "package.json")) as f:
        return json.load(f)


def test_package_json_lists_every_library_file():
    pkg = package_json()
    assert pkg["version"] and pkg["deps"] == []
    targets = [t for t, _ in pkg["urls"]]
    assert targets == ["ringws/" + f for f in BOARD_FILES]
    for target, url in pkg["urls"]:
        assert os.path.isfile(os.path.join(ROOT, url)), url
        assert url == "firmware/" + target


def test_manifest_freezes_the_same_files():
    seen = {"include": [], "package": [], "module": []}

    def include(path):
        seen["include"].append(path)

    def package(name, files=None, base_path=".", opt=None):
        path = os.path.join(ROOT, base_path, name)
        assert os.path.isdir(path), path
        names = files or sorted(f for f in os.listdir(path) if f.endswith(".py"))
        for f in names:
            assert os.path.isfile(os.path.join(path, f)), f
        seen["package"].append((name, list(names)))

    def module(name, base_path=".", opt=None):
        assert os.path.isfile(os.path.join(ROOT, base_path, name)), name
        seen["module"].append(name)

    with open(os.path.join(ROOT, "manifest.py")) as f:
        exec(f.read(), {"include": include, "package": package, "module": module})
    assert seen["include"] == ["$(PORT_DIR)/boards/manifest.py"]
    frozen = dict(seen["package"])
    assert sorted(frozen["ringws"]) == BOARD_FILES
    assert "board.py" in seen["module"] and "app" in frozen


@pytest.mark.slow
def test_mip_install_onto_the_virtual_board(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url_file = tmp_path / "url"
    flash = tmp_path / "flash"
    sources = {}
    for f in BOARD_FILES:   # snapshot: the library may be edited while this runs
        with open(os.path.join(LIB, f), "rb") as a:
            sources[f] = a.read()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "virtual_board.py"),
                             "--flash", str(flash), "--port", str(port), "--port-file",
                             str(url_file)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not url_file.exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        mpremote = [os.path.join(ROOT, ".venv", "bin", "mpremote"), "connect",
                    url_file.read_text()]
        r = subprocess.run(mpremote + ["mip", "install", "--target", "lib",
                                       os.path.join(ROOT, "package.json")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        for f in BOARD_FILES:
            assert (flash / "lib" / "ringws" / f).read_bytes() == sources[f], f
        r = subprocess.run(mpremote + ["exec", "from ringws.ring import RingBuffer; "
                                       "import ringws.ring as m; print('FROM', m.__file__)"],
                           capture_output=True, text=True, timeout=60)
        assert "lib/ringws/ring.py" in r.stdout, r.stdout + r.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def _traceback_of_write_header(out):
    # A real traceback out of the built .mpy: write_header past the end of its buffer.
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    r = subprocess.run([mp, "-c", "import sys; sys.path.insert(0, '.')\n"
                        "from ringws.frames import write_header\n"
                        "write_header(bytearray(1), 0, 1, True, 5)"],
                       cwd=out, capture_output=True, text=True, timeout=30)
    assert "IndexError" in r.stderr + r.stdout, r.stderr
    return [line for line in (r.stderr + r.stdout).splitlines() if "write_header" in line]


@pytest.mark.slow
def test_esp32_sized_builds_leave_line_numbers_out_and_can_keep_them(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import boards
    import build

    # The boards with an ESP32's 110 KiB heap save the line-number tables (1.6 KB there);
    # the larger ones keep them.
    assert boards.load("host")["source_lines"] is False
    assert boards.load("esp32")["source_lines"] is False
    assert boards.load("esp32s3")["source_lines"] is True
    lean, full = str(tmp_path / "lean"), str(tmp_path / "full")
    build.build("host", lean)
    build.build("host", full, source_lines=True)
    size = lambda d: os.path.getsize(os.path.join(d, "ringws", "server.mpy"))  # noqa: E731
    assert size(lean) < size(full) * 0.95, (size(lean), size(full))
    # Either way the traceback names the file and the function; only --source-lines
    # gives the line.
    lean_tb, full_tb = _traceback_of_write_header(lean), _traceback_of_write_header(full)
    assert lean_tb and full_tb
    assert all('"ringws/frames.mpy", line 1,' in line for line in lean_tb), lean_tb
    assert all('"ringws/frames.mpy", line 1,' not in line for line in full_tb), full_tb
