"""jsonout.Reader (the /stats body): JSON read a chunk at a time, under CPython; and
compat.use_once, which loads it for one request."""
import json
import sys

import pytest

from ringws import compat
from ringws.jsonout import Reader

pytestmark = pytest.mark.timeout(30)

STATS = {"mem_free": 12345, "name": "caf\u00e9 \"quoted\"", "none": None, "ok": True,
         "closed": {"normal": 3, "http": 7}, "board": {"ip": "127.0.0.1", "rssi": -61},
         "list": [1, 2, 3]}


def read_all(reader, size):
    buf = bytearray(size)
    out = b""
    while True:
        n = reader.readinto(buf)
        if not n:
            return out
        assert n <= size
        out += bytes(buf[:n])


@pytest.mark.parametrize("size", [1, 2, 7, 16, 64, 278, 4096])
def test_chunks_of_any_size_make_the_whole_text(size):
    r = Reader(dict(STATS))
    out = read_all(r, size)
    assert len(out) == r.total
    assert json.loads(out) == STATS
    assert r.readinto(bytearray(8)) == 0  # stays at the end


def test_a_live_nested_dict_is_copied_before_a_wait_so_every_pass_agrees():
    closed = {"normal": 1}
    obj = {"closed": closed, "n": 1}
    r = Reader(obj)
    first = bytearray(5)
    r.readinto(first)
    assert r.readinto(None) == 0  # (http.send, before it waits for the socket)
    closed["normal"] = 123456  # a connection closed meanwhile
    closed["memory"] = 1
    out = bytes(first) + read_all(r, 5)
    assert len(out) == r.total and json.loads(out) == {"closed": {"normal": 1}, "n": 1}
    r.close()
    assert obj["closed"] is closed  # the original is back (the server keeps its dict)


def test_without_a_wait_nothing_is_copied():
    closed = {"normal": 1}
    obj = {"closed": closed}
    r = Reader(obj)
    assert json.loads(read_all(r, 4)) == obj and obj["closed"] is closed
    r.close()
    assert obj["closed"] is closed


def test_use_once_does_not_keep_the_module():
    sys.modules.pop("ringws.jsonout", None)
    mod = compat.use_once("jsonout")
    assert mod.Reader({"a": 1}).total == len(b'{"a":1}')
    assert "ringws.jsonout" not in sys.modules
    assert not hasattr(sys.modules["ringws"], "jsonout")


def test_use_once_without_room_raises_memoryerror_on_micropython(tmp_path):
    # A module that cannot load for want of heap must surface as MemoryError (the
    # callers' fallbacks catch that), not as the KeyError MicroPython's delattr raises
    # for the package attribute the failed import never set.
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "starve.py"
    script.write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from ringws import compat\n"
        "hog = []\n"
        "try:\n"
        "    while True:\n"
        "        hog.append(bytearray(64))\n"
        "except MemoryError:\n"
        "    pass\n"
        "del hog[-8:]\n"
        "try:\n"
        "    compat.use_once('jsonout')\n"
        "    print('LOADED')\n"
        "except Exception as e:\n"
        "    print('RAISED', type(e).__name__)\n" % os.path.join(root, "firmware"))
    r = subprocess.run([os.path.join(root, ".venv", "bin", "micropython"), "-X", "heapsize=64k",
                        str(script)], capture_output=True, text=True, timeout=30)
    assert "RAISED MemoryError" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_unload_lets_a_module_go_whether_or_not_it_is_loaded(tmp_path, interpreter):
    # compat.unload: what use_once, launch.drop, pmdgate and compat_inflate drop modules
    # with. Out of sys.modules and off the package; a name not (or no longer) loaded is no
    # error (MicroPython's delattr raises KeyError for a missing attribute).
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "top.py").write_text("X = 1\n")
    script = tmp_path / "unload.py"
    script.write_text(
        "import sys\n"
        "sys.path[:0] = [%r, %r]\n"
        "import ringws, ringws.jsonout, top\n"
        "from ringws import compat\n"
        "for name in ('ringws.jsonout', 'top', 'ringws.jsonout', 'ringws.never', 'never'):\n"
        "    compat.unload(name)\n"
        "print('LEFT', 'ringws.jsonout' in sys.modules, hasattr(ringws, 'jsonout'),\n"
        "      'top' in sys.modules, 'ringws.compat' in sys.modules)\n"
        % (os.path.join(root, "firmware"), str(tmp_path)))
    exe = (os.path.join(root, ".venv", "bin", "micropython") if interpreter == "micropython"
           else sys.executable)
    r = subprocess.run([exe, str(script)], capture_output=True, text=True, timeout=30)
    assert "LEFT False False False True" in r.stdout, r.stdout + r.stderr
