"""tools/shape_check.py: each check fails on a synthetic tree built to break it, and the real
firmware/ breaks nothing beyond the known violations listed here."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import shape_check  # noqa: E402

# Violations in firmware/ today, by key (kind, file, name). Whoever fixes one removes its
# entry: the test fails on an entry that no longer occurs, so the list only shrinks.
KNOWN = set()


def write(root, rel, text):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


def keys(root):
    return {v.key for v in shape_check.check(str(root))}


def nested(depth):
    """A function whose innermost block statement opens level `depth`."""
    lines = ["def f(x):"]
    for i in range(depth):
        lines.append("    " * (i + 1) + "if x > %d:" % i)
    lines.append("    " * (depth + 1) + "x -= 1")
    lines.append("    return x")
    return "\n".join(lines) + "\n"


def test_a_clean_tree_passes(tmp_path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "from pkg import b\n\n" + nested(5))
    write(tmp_path, "pkg/b.py", "def g():\n" + "    x = 1\n" * 58 + "    return x\n")
    write(tmp_path, "main.py", "import pkg.a\n")
    assert keys(tmp_path) == set()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "shape_check.py"),
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_long_function_fails(tmp_path):
    body = "    x = 1\n" * 59 + "    return x\n"  # 61 lines with the def
    write(tmp_path, "m.py", "class C:\n    def long(self):\n" + body.replace("    ", "        "))
    found = shape_check.check(str(tmp_path))
    assert [v.key for v in found] == [("function-length", "m.py", "C.long")]
    assert found[0].value == 61 and found[0].line == 2


def test_too_deep_nesting_fails(tmp_path):
    write(tmp_path, "ok.py", nested(5))
    write(tmp_path, "deep.py", nested(6))
    found = shape_check.check(str(tmp_path))
    assert [(v.key, v.value) for v in found] == [(("nesting", "deep.py", "f"), 6)]


def test_nesting_counts_blocks_not_elif_chains(tmp_path):
    chain = "def f(x):\n    if x == 0:\n        return 0\n" + "".join(
        "    elif x == %d:\n        return %d\n" % (i, i) for i in range(1, 9))
    write(tmp_path, "chain.py", chain)
    # else: + if, try/except, with and a nested def each open a level: 6 in all.
    write(tmp_path, "mixed.py", """\
        def f(x):
            if x:
                pass
            else:
                if x:
                    try:
                        pass
                    except ValueError:
                        with x:
                            def g():
                                for y in x:
                                    pass
    """)
    assert keys(tmp_path) == {("nesting", "mixed.py", "f")}
    assert shape_check.block_depth(__import__("ast").parse(chain).body[0].body) == 1


def test_a_long_module_fails(tmp_path):
    write(tmp_path, "short.py", "x = 1\n" * 600)
    write(tmp_path, "long.py", "x = 1\n" * 601)
    assert keys(tmp_path) == {("module-length", "long.py", "")}


def test_import_circles_fail_and_are_counted(tmp_path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "from pkg.b import x\n")
    write(tmp_path, "pkg/b.py", "x = 1\n\ndef later():\n    from . import a\n")  # in a function
    write(tmp_path, "c.py", "import d\n")
    write(tmp_path, "d.py", "from pkg import a\nimport c\n")
    write(tmp_path, "e.py", "import os\nimport c\n")  # imports a circle, is not in one
    assert keys(tmp_path) == {("circle", "pkg/a.py", "pkg.a -> pkg.b -> pkg.a"),
                              ("circle", "c.py", "c -> d -> c")}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "shape_check.py"),
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "c.py:1: import circle c -> d -> c (c.py:1, d.py:2)" in r.stdout
    assert "2 import circle(s)" in r.stdout


def test_the_firmware_breaks_only_the_known_rules():
    found = {v.key: v for v in shape_check.check(os.path.join(ROOT, "firmware"))}
    new = sorted(str(v) for k, v in found.items() if k not in KNOWN)
    fixed = sorted(KNOWN - set(found))
    assert not new, "new shape violations:\n" + "\n".join(new)
    assert not fixed, "fixed, so remove from KNOWN in this test: %s" % fixed
